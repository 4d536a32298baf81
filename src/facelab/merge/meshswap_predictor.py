"""The meshswap family's predictor: src's own faces retrieved, warped onto each dst face's
mesh and refined, loaded for the swap only.

Unlike an autoencoder the model works from geometry, so its `ModelInfo.needs_mesh` asks the
merger for each dst face's FaceMesh mesh (in the crop's pixels) and pose. The save holds the
src index (crops, meshes, descriptors, neutrals) and the refiner as one state dict, read
through the checkpoint's verified, pickle-free loader like SAE's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from facelab.device import autocast, resolve_device
from facelab.errors import FacelabError
from facelab.faces.facetype import FaceType
from facelab.merge.predictor import ModelInfo, Warn
from facelab.meshswap.model import MeshSwapModel, model_counts
from facelab.meshswap.options import ARCH, MeshSwapOptions, fixed_of
from facelab.train import checkpoint
from facelab.train.saved import SavedModel


def options(saved: SavedModel) -> MeshSwapOptions:
    """The save's options, validated; FacelabError when they do not parse."""
    try:
        return MeshSwapOptions(**saved.state["options"]).validate()
    except (KeyError, TypeError) as exc:
        raise FacelabError(
            f"Model {saved.name!r} in {saved.folder} has unreadable options ({exc}).") from None


def info(saved: SavedModel) -> ModelInfo:
    opts = options(saved)
    return ModelInfo(saved.name, saved.family, saved.iteration, saved.model_id,
                     opts.resolution, FaceType.parse(opts.face_type), needs_mesh=True,
                     blend="overlay" if opts.shade or opts.refiner else "seamless")


def load(saved: SavedModel, device: str, precision: str, warn: Warn) -> MeshSwapPredictor:
    return MeshSwapPredictor(saved, device, precision, warn)


class MeshSwapPredictor:
    """Runs a meshswap model's swap on batches of dst crops with their meshes and poses
    (a `Predictor`)."""

    def __init__(self, saved: SavedModel, device: str = "auto", precision: str = "fp32",
                 warn: Warn = lambda _: None) -> None:
        self.info = info(saved)
        opts = options(saved)
        self.device: Any = resolve_device(device)
        self.precision = precision
        model = MeshSwapModel(opts, *model_counts(saved.doc.get("fixed_options") or {}))
        checkpoint.load(saved.folder, saved.name, model, None, expected_arch=ARCH,
                        fixed_options=fixed_of(opts), warn=warn, restore_rng=False)
        self.model = model.to(self.device).eval()

    @property
    def resolution(self) -> int:
        return self.info.resolution

    @torch.no_grad()
    def predict(self, faces: np.ndarray, meshes: np.ndarray | None = None,
                poses: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """N×R×R×3 float32 BGR [0, 1] dst crops, their N×P×3 crop-pixel meshes and N×2
        (yaw, pitch) → (N×R×R×3 swapped faces, N×R×R masks)."""
        if meshes is None or poses is None:
            raise ValueError("a meshswap model needs each dst face's mesh and pose")
        poses = np.asarray(poses, np.float32)
        with autocast(self.device, self.precision):
            image, mask = self.model.swap(faces, meshes, poses[:, 0], poses[:, 1])
        image = np.clip(np.asarray(image, np.float32), 0, 1)
        return image, None if mask is None else np.clip(np.asarray(mask, np.float32), 0, 1)
