"""Model options: what a model is built from (fixed at creation) and what a run may change."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from facelab.errors import FacelabError

FACE_TYPES = ("half", "mid-full", "full", "whole-face")
ARCH_BASES = ("df", "liae")
ARCH_VARIANTS = "ud"  # u: pixel-norm code; d: double-resolution output

# The SAE prompt ranges of the seed (section 5); `validate(seed_ranges=True)` applies them.
# The fixed 1.0 presets lie outside them (H64's encoder is 128 per channel), so the plain
# `validate()` only checks what the network itself needs.
SEED_RANGES: dict[str, tuple[int, int]] = {
    "ae_dims": (128, 1024),
    "e_dims": (21, 85),
    "d_dims": (11, 85),
}
_DIM_RANGES: dict[str, tuple[int, int]] = {
    "ae_dims": (8, 2048),
    "e_dims": (2, 256),
    "d_dims": (2, 256),
    "d_mask_dims": (2, 256),
}


@dataclass
class ModelOptions:
    """Every option of an SAE-family model; defaults are SAEHD's."""

    preset: str = "sae"
    resolution: int = 128
    face_type: str = "full"
    arch: str = "liae-ud"
    ae_dims: int = 256
    e_dims: int = 64
    d_dims: int = 64
    d_mask_dims: int = 22
    learn_mask: bool = True
    multiscale_decoder: bool = False
    conv_aware_init: bool = False
    lightweight: bool = False  # H64/H128's small-card form (halved dims); recorded for `info`
    # Changeable between runs (read by the trainer, not by the network):
    remove_gray_border: bool = False  # also train the crop outside the face, weakly
    batch_size: int = 8
    random_flip: bool = True
    src_scale_mod: int = 0
    pixel_loss: bool = False
    face_style_power: float = 0.0
    bg_style_power: float = 0.0
    target_iteration: int = 0  # 0 = unlimited
    sort_by_yaw: bool = False  # feed src so its yaw histogram follows dst's
    eyes_mouth_priority: bool = False  # 300·L1 inside the eyes and mouth
    optimizer_mode: int = 1  # 1 plain; 2 optimizer state in host memory; 3 also recompute
    preview_history: bool = False  # one PNG per preview in model/NAME_history/

    @property
    def arch_base(self) -> str:
        """`df` or `liae`."""
        return self.arch.split("-", 1)[0]

    @property
    def arch_variants(self) -> str:
        """The variant letters after the dash, e.g. `ud`."""
        return self.arch.split("-", 1)[1] if "-" in self.arch else ""

    def validate(self, seed_ranges: bool = False) -> ModelOptions:
        """Raise FacelabError naming the first out-of-range option; return self."""
        r = self.resolution
        if not isinstance(r, int) or not 64 <= r <= 256 or r % 16:
            raise FacelabError(f"Resolution must be 64–256 in steps of 16, not {r!r}.")
        if self.face_type not in FACE_TYPES:
            raise FacelabError(
                f"Face type must be one of {', '.join(FACE_TYPES)}, not {self.face_type!r}."
            )
        variants = self.arch_variants
        if (
            self.arch_base not in ARCH_BASES
            or any(v not in ARCH_VARIANTS for v in variants)
            or len(set(variants)) != len(variants)
            or ("-" in self.arch and not variants)
        ):
            raise FacelabError(
                f"Architecture must be df or liae, optionally with -u, -d or -ud, "
                f"not {self.arch!r}."
            )
        if "d" in variants and r % 32:
            raise FacelabError(
                f"The -d architecture needs a resolution that is a multiple of 32, not {r}."
            )
        ranges = dict(_DIM_RANGES)
        if seed_ranges:
            ranges.update(SEED_RANGES)
        for name, (lo, hi) in ranges.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise FacelabError(f"{name} must be a whole number from {lo} to {hi}, not {v!r}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise FacelabError(f"Batch size must be at least 1, not {self.batch_size!r}.")
        if not -30 <= self.src_scale_mod <= 30:
            raise FacelabError(f"Src face scale must be −30…30 %, not {self.src_scale_mod!r}.")
        for name in ("face_style_power", "bg_style_power"):
            if not 0 <= getattr(self, name) <= 100:
                raise FacelabError(f"{name} must be 0–100, not {getattr(self, name)!r}.")
        if self.optimizer_mode not in (1, 2, 3):
            raise FacelabError(f"Optimizer mode must be 1, 2 or 3, not {self.optimizer_mode!r}.")
        if self.target_iteration < 0:
            raise FacelabError("Target iteration must be 0 (unlimited) or more.")
        return self

    def override(self, **changes: Any) -> ModelOptions:
        """A copy with changeable options replaced; fixed ones raise FacelabError."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise FacelabError(f"Unknown model option(s): {', '.join(sorted(unknown))}.")
        fixed = sorted(
            k for k, v in changes.items() if k in FIXED_OPTIONS and v != getattr(self, k)
        )
        if fixed:
            raise FacelabError(
                f"{', '.join(fixed)} cannot change after the model is created; "
                f"start a new model instead."
            )
        return replace(self, **changes).validate()

    def to_json(self) -> str:
        """Stable, human-readable JSON (sorted keys) for the model folder."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelOptions:
        """Parse and validate; missing keys take defaults, unknown keys are an error."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FacelabError(f"Model options are not valid JSON: {e}.") from None
        if not isinstance(data, dict):
            raise FacelabError("Model options must be a JSON object.")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise FacelabError(f"Unknown model option(s): {', '.join(sorted(unknown))}.")
        return cls(**data).validate()


# Options that shape the network (or only act at creation): changing them needs a new model.
FIXED_OPTIONS: frozenset[str] = frozenset(
    {
        "preset",
        "resolution",
        "face_type",
        "arch",
        "ae_dims",
        "e_dims",
        "d_dims",
        "d_mask_dims",
        "learn_mask",
        "multiscale_decoder",
        "conv_aware_init",
        "lightweight",
    }
)
CHANGEABLE_OPTIONS: frozenset[str] = frozenset(
    f.name for f in fields(ModelOptions) if f.name not in FIXED_OPTIONS
)
