"""What merge needs from a trained model, whatever its family: the predictor interface.

The merger knows a model only through `ModelInfo` (read from the save's JSON, no tensors:
the driver checks the face type and writes the model id before any worker loads weights)
and `Predictor` (dst crops in, swapped faces and masks out). Each model family implements
both in its own module, named in `FAMILIES` by the family its saves record (saves from
before families existed are SAE's); the module is imported only when a save of that
family is loaded, so one family's dependencies never load for another's.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facelab.errors import FacelabError
from facelab.faces.facetype import FaceType
from facelab.train.saved import SavedModel, require_saved

Warn = Callable[[str], None]  # told when a damaged save falls back to its backup

#: family name (as saved) → the module that implements it: `info(saved) -> ModelInfo` and
#: `load(saved, device, precision, warn) -> Predictor`.
FAMILIES: dict[str, str] = {
    "sae": "facelab.merge.sae_predictor",
    "meshswap": "facelab.merge.meshswap_predictor",
}


@dataclass(frozen=True)
class ModelInfo:
    """A saved model as merge sees it before loading it."""

    name: str
    family: str
    iteration: int
    model_id: str  # written into every merged frame's provenance mark
    resolution: int  # of the square crops `predict` takes and returns
    face_type: FaceType  # how the crops are cut from the frame
    #: `predict` needs each dst face's FaceMesh mesh and pose (the merger then builds them;
    #: for a family without it, no per-face work is added)
    needs_mesh: bool = False
    #: the blend mode `--mode auto` takes for this family's faces
    blend: str = "seamless"


class Predictor(Protocol):
    """A model loaded for the swap only."""

    info: ModelInfo
    device: Any  # torch.device it runs on
    precision: str  # fp32, bf16 or fp16, resolved (never "auto")

    @property
    def resolution(self) -> int: ...

    def predict(self, faces: np.ndarray, meshes: np.ndarray | None = None,
                poses: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """N×R×R×3 float32 BGR [0, 1] aligned dst crops → (N×R×R×3 swapped faces, N×R×R
        masks in [0, 1], or None when the model has no mask of its own).

        `meshes` (N×P×3: each dst face's FaceMesh mesh in its crop's pixels, depth scaled
        like x and y) and `poses` (N×2: yaw, pitch in degrees) are given when
        `info.needs_mesh`; other families ignore them."""
        ...


def _family(saved: SavedModel) -> Any:
    module = FAMILIES.get(saved.family)
    if module is None:
        raise FacelabError(
            f"Model {saved.name!r} in {saved.folder} is of the {saved.family!r} family, which "
            f"this facelab cannot merge with (known: {', '.join(FAMILIES)}).")
    return importlib.import_module(module)


def model_info(folder: Path, name: str) -> ModelInfo:
    """What merge needs to know about a saved model, without loading tensors."""
    saved = require_saved(folder, name)
    return _family(saved).info(saved)


def load_predictor(folder: Path, name: str, device: str = "auto", precision: str = "fp32",
                   warn: Warn = lambda _: None) -> Predictor:
    """Load model `name` of `folder` for prediction, by its family. `device` as
    `facelab.device.resolve_device` takes it; `precision` resolved beforehand with
    `facelab.device.choose_precision` (the merge does, once for all its workers)."""
    saved = require_saved(folder, name)
    return _family(saved).load(saved, device, precision, warn)
