"""The SAE model family. Options and presets load without PyTorch (for the CLI's help);
the networks (`build_model`, `DF`, `LIAE`, `set_recompute`) import it on first use."""

from typing import Any

from facelab.train.models.catalog import DEFAULT_PRESET, LIGHTWEIGHT, PRESETS, preset
from facelab.train.models.options import FIXED_OPTIONS, ModelOptions

_LAZY = {"DF": "sae", "LIAE": "sae", "set_recompute": "sae", "build_model": "presets"}

__all__ = [
    "DEFAULT_PRESET", "DF", "FIXED_OPTIONS", "LIAE", "LIGHTWEIGHT", "PRESETS", "ModelOptions",
    "build_model", "preset", "set_recompute",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
