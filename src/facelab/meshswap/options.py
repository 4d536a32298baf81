"""`MeshSwapOptions`: the meshswap family's options, declared once (see facelab/options.py).

Here without PyTorch, so `facelab train --help` can list them quickly. The names that
SAE's `ModelOptions` also has (resolution, face_type, batch_size, target_iteration) mean the
same there and here, so one `--resolution` flag serves both families.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from facelab.errors import FacelabError
from facelab.faces.facemeta import FACE_TYPES
from facelab.options import option, specs
from facelab.options import validate as check_options

FAMILY = "meshswap"
ARCH = "meshswap"  # the save's arch, checked on load


@dataclass
class MeshSwapOptions:
    """A meshswap model: src's own faces retrieved, warped and (optionally) refined."""

    preset: str = option("meshswap", cli=False, choices=("meshswap",), fixed=True,
                         help="The family's one preset.")
    resolution: int = option(
        128, label="Resolution", fixed=True, range=(64, 512), step=16,
        help="Side in pixels of the faces the model stores, warps and refines.")
    face_type: str = option(
        "full", label="Face type", fixed=True, choices=FACE_TYPES,
        help="How much of the head is swapped.")
    candidates: int = option(
        4, label="Candidates", range=(1, 16),
        help="src faces blended for each dst face (more: steadier, a little softer).")
    shade: bool = option(
        True, label="Shade",
        help="Without a refiner: give the warped face dst's lighting (its low frequencies "
        "exchanged for a blur of dst's face, as the refiner's starting point does), so the "
        "merge can paste it without seamless blending (--mode auto takes overlay).")
    refiner: bool = option(
        False, label="Refiner", fixed=True,
        help="Train a small network on src's faces that repairs the warp's seams, mouth, eyes "
        "and shading (off: the warped src faces alone, ready at once; on GRID 8 minutes of it "
        "bought +0.2 dB, docs/MESHSWAP.md).")
    refiner_dims: int = option(
        16, label="Refiner dimensions", fixed=True, range=(8, 128),
        help="Channels of the refiner's first layer (doubling with each level).")
    batch_size: int = option(8, label="Batch size", range=(1, 256),
                             help="Faces per refiner step.")
    target_iteration: int = option(0, label="Target iteration", range=(0, None),
                                   help="Stop at this iteration (0: run until stopped).")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> MeshSwapOptions:
        check_options(self)
        if self.resolution % 16:
            raise FacelabError(f"--resolution must be a multiple of 16, not {self.resolution}.")
        return self

    def override(self, **changes: Any) -> MeshSwapOptions:
        """A copy with changeable options changed; a fixed one changed is one error line."""
        fixed = [k for k, v in changes.items() if k in FIXED_OPTIONS and getattr(self, k) != v]
        if fixed:
            raise FacelabError(f"{', '.join(fixed)} cannot change once a meshswap model "
                               "exists; train a new model under another name.")
        return MeshSwapOptions(**{**asdict(self), **changes})


FIXED_OPTIONS: tuple[str, ...] = tuple(s.name for s in specs(MeshSwapOptions) if s.fixed)
OPTION_NAMES: tuple[str, ...] = tuple(s.name for s in specs(MeshSwapOptions))


def fixed_of(opts: MeshSwapOptions) -> dict[str, Any]:
    """The options that shape the saved tensors, as stored beside them."""
    return {k: v for k, v in asdict(opts).items() if k in FIXED_OPTIONS}
