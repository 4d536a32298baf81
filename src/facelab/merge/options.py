"""Merge options: DeepFaceLab's merger settings as one plain dataclass, validated.

Defaults follow the seed (seamless blending, learned mask, masked histogram matching)
plus what the anchors lack: temporal smoothing on by default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from facelab.errors import FacelabError
from facelab.merge.smooth import DEFAULT_SMOOTH, MAX_SMOOTH

MODES = ("overlay", "hist-match", "hist-match-bw", "seamless", "seamless-hist-match", "raw")
MASK_PARTS = ("learned", "dst", "prd")
MASK_MODES = ("learned", "dst", "prd", "learned*dst", "prd*dst", "learned*prd*dst")
COLORS = ("none", "rct", "lct", "mkl", "idt", "sot")


@dataclass(frozen=True)
class MergeOptions:
    """How each predicted face is put back into its frame."""

    mode: str = "seamless"
    mask: str = "learned*dst"  # learned alone lets the model's blur in; dst clips it
    masked_hist_match: bool = True
    hist_threshold: int = 255
    erode: int = 0  # −200…200, relative to the face size; negative grows the mask
    blur: int = 0  # −200…200 relative feathering of the mask edge (negative: none)
    face_scale: int = 0  # −50…50 %
    color: str = "rct"
    degrade: int = 0  # 0…100 bicubic degradation of the predicted face
    color_degrade: int = 0  # 0…100 colour reduction of the result
    super_resolution: str = "none"  # an enhancer name from merge/enhance.py
    smooth: int = DEFAULT_SMOOTH  # 0 = off; temporal smoothing of the face's placement
    export_alpha: bool = False

    def validate(self) -> MergeOptions:
        """Raise FacelabError naming the first bad option; return self."""
        if self.mode not in MODES:
            raise FacelabError(f"Merge mode must be one of {', '.join(MODES)}, not {self.mode!r}.")
        if self.mask not in MASK_MODES:
            raise FacelabError(f"Mask mode must be one of {', '.join(MASK_MODES)}, "
                               f"not {self.mask!r}.")
        if self.color not in COLORS:
            raise FacelabError(f"Colour transfer must be one of {', '.join(COLORS)}, "
                               f"not {self.color!r}.")
        from facelab.merge.enhance import ENHANCERS

        if self.super_resolution not in ENHANCERS:
            raise FacelabError(f"--super-resolution must be one of {', '.join(ENHANCERS)}, "
                               f"not {self.super_resolution!r}.")
        for name, lo, hi in (("hist_threshold", 0, 255), ("erode", -200, 200),
                             ("blur", -200, 200), ("face_scale", -50, 50), ("degrade", 0, 100),
                             ("color_degrade", 0, 100), ("smooth", 0, MAX_SMOOTH)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                flag = "--" + name.replace("_", "-")
                raise FacelabError(f"{flag} must be a whole number from {lo} to {hi}, not {v!r}.")
        return self

    @property
    def mask_parts(self) -> tuple[str, ...]:
        return tuple(self.mask.split("*"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
