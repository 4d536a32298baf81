"""The merge stage: predicted faces blended back into dst frames, marked synthetic."""
