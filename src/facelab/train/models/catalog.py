"""Fixed model presets (H64, H128, DF, LIAEF128, Quick96) and the SAE default.

DeepFaceLab's fixed models are not separate networks here: each is the SAE family with
its settings pinned (REFERENCE.md's 1.0 and Quick96 sizes), so one tested network serves
them all. Where DeepFaceLab gives no number (mask decoder width), we picked a small one.
Plain data, no torch: the CLI reads it for its help without loading PyTorch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from facelab.errors import FacelabError
from facelab.train.models.options import ModelOptions

DEFAULT_PRESET = "quick96"  # a new model without --preset: DFL's cheapest full-face model

PRESETS: dict[str, ModelOptions] = {
    # 1.0 models: encoders 128-256-512-1024 (e_dims 128); decoders 512-256-128 (d_dims 64).
    "h64": ModelOptions(
        preset="h64",
        resolution=64,
        face_type="half",
        arch="df",
        ae_dims=1024,
        e_dims=128,
        d_dims=64,
        d_mask_dims=16,
    ),  # Dense 1024 → 4×4×1024
    "h128": ModelOptions(
        preset="h128",
        resolution=128,
        face_type="half",
        arch="df",
        ae_dims=512,
        e_dims=128,
        d_dims=64,
        d_mask_dims=16,
    ),  # Dense 512 → 8×8×512
    "df": ModelOptions(
        preset="df",
        resolution=128,
        face_type="full",
        arch="df",
        ae_dims=512,
        e_dims=128,
        d_dims=64,
        d_mask_dims=16,
    ),  # as H128 on full faces
    "liaef128": ModelOptions(
        preset="liaef128",
        resolution=128,
        face_type="full",
        arch="liae",
        ae_dims=256,
        e_dims=128,
        d_dims=64,
        d_mask_dims=16,
    ),  # Dense 256, inter_AB / inter_B
    "quick96": ModelOptions(
        preset="quick96",
        resolution=96,
        face_type="full",
        arch="df-ud",
        ae_dims=128,
        e_dims=64,
        d_dims=64,
        d_mask_dims=16,
    ),
    "sae": ModelOptions(),  # SAEHD defaults; every fixed option is the user's choice
}
LIGHTWEIGHT = frozenset({"h64", "h128"})


def preset(name: str, lightweight: bool = False, **overrides: Any) -> ModelOptions:
    """The options of a named preset (a copy), optionally lightweight or with overrides.

    `lightweight` (H64/H128 only, for ≤ 4 GB cards) halves ae, encoder and decoder dims.
    `overrides` may set any option; tests use them to shrink dims.
    """
    key = name.lower()
    if key not in PRESETS:
        raise FacelabError(f"Unknown model {name!r}; choose one of {', '.join(PRESETS)}.")
    opts = replace(PRESETS[key])
    if lightweight:
        if key not in LIGHTWEIGHT:
            raise FacelabError(f"Only {' and '.join(sorted(LIGHTWEIGHT))} have a lightweight form.")
        opts = replace(
            opts, ae_dims=opts.ae_dims // 2, e_dims=opts.e_dims // 2, d_dims=opts.d_dims // 2,
            lightweight=True,
        )
    return replace(opts, **overrides).validate()
