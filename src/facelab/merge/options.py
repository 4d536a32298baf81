"""Merge options: DeepFaceLab's merger settings as one plain dataclass, validated.

Defaults follow DeepFaceLab's (seamless blending, learned mask, masked histogram matching)
plus what the anchors lack: temporal smoothing on by default. Each option is declared once
(`facelab.options.option`): the `merge` and `swap` flags are generated from these fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from facelab.merge.smooth import DEFAULT_SMOOTH, MAX_SMOOTH
from facelab.options import option
from facelab.options import validate as check_options

MODES = ("auto", "overlay", "hist-match", "hist-match-bw", "seamless", "seamless-hist-match",
         "raw")
#: DeepFaceLab's FAN / XSeg list in facelab's names: `seg-*` is the face segmenter
#: (`facelab.segment`) on the predicted (prd) or the dst face
MASK_MODES = ("learned", "dst", "prd", "learned*dst", "prd*dst", "learned*prd*dst",
              "seg-prd", "seg-dst", "seg-prd*seg-dst", "learned*seg-prd", "learned*seg-dst",
              "learned*seg-prd*seg-dst", "seg-dst*dst", "learned*seg-dst*dst")
SEG_PARTS = ("seg-prd", "seg-dst")
COLORS = ("none", "rct", "lct", "mkl", "idt", "sot")


def _enhancers() -> tuple[str, ...]:
    from facelab.merge.enhance import ENHANCERS  # OpenCV: only when a merge is set up

    return tuple(ENHANCERS)


@dataclass(frozen=True)
class MergeOptions:
    """How each predicted face is put back into its frame; checked on construction."""

    mode: str = option(
        "auto", choices=MODES,
        help="How the face is blended: auto (the model's choice: seamless for autoencoders, "
        "overlay for meshswap, which brings dst's lighting itself), overlay (paste through "
        "the mask), hist-match and "
        "hist-match-bw (match dst's histograms first), seamless (Poisson blending), "
        "seamless-hist-match, raw (the face and its mask only, RGBA, for compositing in an "
        "editor).")
    mask: str = option(  # learned alone lets the model's blur in; dst clips it
        "learned*dst", choices=MASK_MODES,
        help="Which mask cuts the face out: learned (the model's), dst (hull of dst's "
        "landmarks), prd (hull of a face mesh fitted to the predicted face), seg-dst (the "
        "face segmenter on the dst face: a hand, hair or glasses frame in front of dst's "
        "face stays in front; smoothed over neighbouring frames unless --smooth 0), seg-prd "
        "(the segmenter on the predicted face: cuts what the model drew badly), or a "
        "product of them (never more than any of its parts): seg-prd*seg-dst, "
        "learned*seg-prd, learned*seg-dst, learned*seg-prd*seg-dst, seg-dst*dst, "
        "learned*seg-dst*dst. The segmenter is the side's own (`facelab mask train`) or the "
        "shipped generic one.")
    masked_hist_match: bool = option(
        True, help="Histogram matching uses only the pixels inside the mask.")
    hist_threshold: int = option(
        255, range=(0, 255),
        help="Histogram match threshold: lower suppresses artefacts from extreme tones.")
    erode: int = option(
        0, range=(-200, 200),
        help="Shrink (positive) or grow (negative) the mask, relative to the face size.")
    blur: int = option(
        0, range=(-200, 200),
        help="Feather the mask edge, relative to the face size (negative: none).")
    face_scale: int = option(
        0, range=(-50, 50),
        help="Draw the face this many percent larger (or smaller if negative).")
    color: str = option(
        "rct", choices=COLORS,
        help="Colour transfer of the predicted face toward the dst face, inside the mask: rct "
        "(Reinhard), lct, mkl, idt, sot or none.")
    degrade: int = option(
        0, range=(0, 100),
        help="Bicubic degradation of the predicted face (to match a soft dst).")
    color_degrade: int = option(0, range=(0, 100), help="Reduce the colours of the merged face.")
    super_resolution: str = option(
        "none", choices=_enhancers,
        help="Restore the face's detail with an enhancer before blending (see "
        "docs/ENHANCE.md for the choices and their cost); none is off.")
    smooth: int = option(
        DEFAULT_SMOOTH, range=(0, MAX_SMOOTH),
        help="Temporal smoothing of the face's placement (0: off), so the face does not "
        "jitter where the detector did.")
    export_alpha: bool = option(
        False, help="Also write data_dst/merged_mask/ and RGBA frames (alpha = the face), for "
        "`video assemble --format mov-alpha|webm-alpha`.")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> MergeOptions:
        """Raise FacelabError naming the first bad option; return self."""
        check_options(self)
        return self

    @property
    def mask_parts(self) -> tuple[str, ...]:
        return tuple(self.mask.split("*"))

    @property
    def seg_parts(self) -> tuple[str, ...]:
        """The segmenter parts of the mask (seg-prd, seg-dst), in the mask's order."""
        return tuple(p for p in self.mask_parts if p in SEG_PARTS)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
