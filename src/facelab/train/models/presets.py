"""Building a network from its options (the preset table lives in catalog.py)."""

from __future__ import annotations

from torch import nn

from facelab.train.models.blocks import conv_aware_init_
from facelab.train.models.catalog import LIGHTWEIGHT, PRESETS, preset
from facelab.train.models.options import ModelOptions
from facelab.train.models.sae import DF, LIAE

__all__ = ["LIGHTWEIGHT", "PRESETS", "build_model", "preset"]


def build_model(opts: ModelOptions) -> nn.Module:
    """Build the DF or LIAE network for these options (on the CPU; move it with `.to`)."""
    opts.validate()
    model: nn.Module = DF(opts) if opts.arch_base == "df" else LIAE(opts)
    if opts.conv_aware_init:
        conv_aware_init_(model)
    return model
