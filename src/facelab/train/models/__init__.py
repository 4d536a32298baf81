"""SAE-family face-swap autoencoders (DF and LIAE), their options and the fixed presets."""

from facelab.train.models.options import FIXED_OPTIONS, ModelOptions
from facelab.train.models.presets import PRESETS, build_model, preset
from facelab.train.models.sae import DF, LIAE, set_recompute

__all__ = [
    "DF", "FIXED_OPTIONS", "LIAE", "PRESETS", "ModelOptions", "build_model", "preset",
    "set_recompute",
]
