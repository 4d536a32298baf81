"""Model options: what a model is built from (fixed at creation) and what a run may change."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from facelab.errors import FacelabError
from facelab.faces.facetype import FaceType
from facelab.options import option, spec, specs
from facelab.options import validate as check_options

# FaceType's order, narrowest first; SAE models stop short of `head`
FACE_TYPES = tuple(t.value for t in FaceType if t is not FaceType.HEAD)
ARCH_BASES = ("df", "liae")
ARCH_VARIANTS = "ud"  # u: pixel-norm code; d: double-resolution output

# DeepFaceLab's SAE prompt ranges (section 5); `validate(dfl_ranges=True)` applies them.
# The fixed 1.0 presets lie outside them (H64's encoder is 128 per channel), so the declared
# ranges only hold what the network itself needs.
DFL_RANGES: dict[str, tuple[int, int]] = {
    "ae_dims": (128, 1024),
    "e_dims": (21, 85),
    "d_dims": (11, 85),
}


def _presets() -> tuple[str, ...]:
    from facelab.train.models.catalog import PRESETS  # catalog builds its presets from us

    return tuple(PRESETS)


@dataclass
class ModelOptions:
    """Every option of an SAE-family model; defaults are SAEHD's. Fields marked `fixed` shape
    the network (or act only at creation); the rest may change on any run. The field order
    is the order `train --interactive` asks them (DeepFaceLab's, roughly)."""

    preset: str = option(
        "sae", label="Model", fixed=True, choices=_presets,
        help="The model: sae lets you choose every creation option; the others are "
        "DeepFaceLab's fixed models (h64/h128 half faces, df and liaef128 full faces at 128, "
        "quick96 a fast full-face model at 96; a new model's default).")
    resolution: int = option(
        128, label="Resolution", fixed=True, range=(64, 256), step=16,
        help="Size in pixels of the faces the model learns (a multiple of 32 for -d "
        "architectures). Higher is sharper but slower and needs more memory.")
    face_type: str = option(
        "full", label="Face type", fixed=True, choices=FACE_TYPES,
        help="How much of the head the model learns: half covers eyes to mouth; whole-face "
        "includes the forehead.")
    arch: str = option(
        "liae-ud", label="Architecture", fixed=True,
        help=f"Network: {' or '.join(ARCH_BASES)}, optionally -u (better likeness), -d "
        "(double output resolution for the same cost) or -ud. df keeps the src face shape; "
        "liae adapts better to dst's lighting and shape.")
    ae_dims: int = option(
        256, label="AutoEncoder dimensions", fixed=True, range=(8, 2048),
        help="Width of the autoencoder bottleneck (the face code). More captures more "
        "detail but costs memory.")
    e_dims: int = option(
        64, label="Encoder dimensions per channel", fixed=True, range=(2, 256),
        help="Encoder width per channel. More recognises finer features; costs memory.")
    d_dims: int = option(
        64, label="Decoder dimensions per channel", fixed=True, range=(2, 256),
        help="Decoder width per channel. More draws finer detail; costs memory.")
    d_mask_dims: int = option(
        22, label="Mask decoder dimensions per channel", fixed=True, range=(2, 256),
        help="Mask decoder width per channel (learned masks only).")
    learn_mask: bool = option(
        True, label="Learn mask", fixed=True,
        help="Also learn the face mask, so merging can use it.")
    multiscale_decoder: bool = option(
        False, label="Multiscale decoder", fixed=True,
        help="Supervise the decoder at several scales: can sharpen faster, costs some speed.")
    conv_aware_init: bool = option(
        False, label="Use CA weights", fixed=True,
        help="Start the convolutions from conv-aware weights instead of random ones: may "
        "learn faster at first.")
    lightweight: bool = option(
        False, label="Lightweight model", fixed=True,
        help="H64/H128 only: the lightweight form (halved widths) for cards with 4 GB or "
        "less.")
    # Changeable between runs (read by the trainer, not by the network):
    preview_history: bool = option(
        False, label="Write preview history",
        help="Also keep every preview as a numbered PNG in model/NAME_history/, to watch "
        "progress over time.")
    target_iteration: int = option(
        0, label="Target iteration", range=(0, None),
        help="Stop training at this iteration (0: until Ctrl-C).")
    random_flip: bool = option(
        True, label="Flip faces randomly",
        help="Flip faces horizontally at random: more angles to learn from, but the result "
        "can look less like src if src's face is asymmetric.")
    batch_size: int = option(
        8, label="Batch size", range=(1, None),
        help="Faces per side per iteration. Larger generalises better but needs more "
        "memory; lower it on out-of-memory errors.")
    sort_by_yaw: bool = option(
        False, label="Feed faces sorted by yaw",
        help="Feed src faces so their head-turn (yaw) spread follows dst's: helps when src "
        "has few faces at dst's angles.")
    src_scale_mod: int = option(
        0, label="Src face scale modifier %", range=(-30, 30), flag="--src-scale",
        help="Scale src faces by this many percent before training, to fit a src face that "
        "is wider or narrower than dst's.")
    pixel_loss: bool = option(
        False, label="Use pixel loss",
        help="Add a per-pixel loss to the structural one: can sharpen detail, but it is "
        "unstable early; suggested after ~20k iterations.")
    eyes_mouth_priority: bool = option(
        False, label="Eyes and mouth priority",
        help="Weigh the eyes and mouth much more in the loss (300·L1 inside them): sharper "
        "eyes and teeth, at some cost to the rest of the face.")
    remove_gray_border: bool = option(
        False, label="Remove gray border",
        help="Also train the crop outside the face (weakly), so the border of the predicted "
        "face is not gray.")
    face_style_power: float = option(
        0.0, label="Face style power", range=(0, 100),
        help="Pull the swapped face's colours toward dst; start at 0, try ~10 after 10–20k "
        "iterations. Too high can make it look like dst.")
    bg_style_power: float = option(
        0.0, label="Background style power", range=(0, 100),
        help="Pull the background around the face toward dst; makes the face fit dst's "
        "surroundings but can make it look like dst.")
    optimizer_mode: int = option(
        1, label="Optimizer mode", range=(1, 3),
        help="1 plain; 2 keeps optimizer state in host memory; 3 also recomputes "
        "activations: slower, least GPU memory.")

    @property
    def arch_base(self) -> str:
        """`df` or `liae`."""
        return self.arch.split("-", 1)[0]

    @property
    def arch_variants(self) -> str:
        """The variant letters after the dash, e.g. `ud`."""
        return self.arch.split("-", 1)[1] if "-" in self.arch else ""

    def validate(self, dfl_ranges: bool = False) -> ModelOptions:
        """Raise FacelabError naming the first bad option; return self.

        Every declared range and choice, then what ties options together."""
        check_options(self)
        variants = self.arch_variants
        if (
            self.arch_base not in ARCH_BASES
            or any(v not in ARCH_VARIANTS for v in variants)
            or len(set(variants)) != len(variants)
            or ("-" in self.arch and not variants)
        ):
            raise FacelabError(
                f"--arch must be df or liae, optionally with -u, -d or -ud, not {self.arch!r}."
            )
        if "d" in variants and self.resolution % 32:
            raise FacelabError(f"The -d architecture needs a resolution that is a multiple of "
                               f"32, not {self.resolution}.")
        if dfl_ranges:
            for name, (lo, hi) in DFL_RANGES.items():
                v = getattr(self, name)
                if not lo <= v <= hi:
                    raise FacelabError(f"{spec(ModelOptions, name).flag} must be from {lo} to "
                                       f"{hi} in DeepFaceLab's SAE, not {v!r}.")
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
FIXED_OPTIONS: frozenset[str] = frozenset(s.name for s in specs(ModelOptions) if s.fixed)
CHANGEABLE_OPTIONS: frozenset[str] = frozenset(
    f.name for f in fields(ModelOptions) if f.name not in FIXED_OPTIONS
)
