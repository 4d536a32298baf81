"""Running a stage's work items beyond this machine: Ray (extraction, merging).

Nothing here is imported unless the user asks for a cluster (`--cluster`): a single
machine stays the default, with nothing to set up."""
