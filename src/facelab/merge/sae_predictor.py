"""The SAE family's predictor: a trained DF/LIAE model, loaded for the swap only.

Loading goes through the checkpoint's verified, pickle-free reader (weights only; the
optimizer state is not read). The model id written into every merged frame's provenance
mark is the name, the iteration and the start of the weights' sha256 from the manifest, so
a result can be traced to the exact save that made it.
"""

from __future__ import annotations

import numpy as np
import torch

from facelab.device import autocast, resolve_device
from facelab.faces.facetype import FaceType
from facelab.merge.predictor import ModelInfo, Warn
from facelab.train import checkpoint
from facelab.train.models import build_model
from facelab.train.saved import SavedModel, fixed_of


def info(saved: SavedModel) -> ModelInfo:
    mo = saved.options()
    return ModelInfo(saved.name, saved.family, saved.iteration, saved.model_id,
                     mo.resolution, FaceType.parse(mo.face_type))


def load(saved: SavedModel, device: str, precision: str, warn: Warn) -> SAEPredictor:
    return SAEPredictor(saved, device, precision, warn)


class SAEPredictor:
    """Runs a model's swap (dst → src) on batches of face crops (a `Predictor`)."""

    def __init__(self, saved: SavedModel, device: str = "auto", precision: str = "fp32",
                 warn: Warn = lambda _: None) -> None:
        self.info = info(saved)
        mo = saved.options()
        self.device = resolve_device(device)
        self.precision = precision
        model = build_model(mo)
        checkpoint.load(saved.folder, saved.name, model, None, expected_arch=mo.arch,
                        fixed_options=fixed_of(mo), warn=warn, restore_rng=False)
        self.model = model.to(self.device).eval()

    @property
    def resolution(self) -> int:
        return self.info.resolution

    @torch.no_grad()
    def predict(self, faces: np.ndarray, meshes: np.ndarray | None = None,
                poses: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """N×R×R×3 float32 BGR [0, 1] dst crops → (N×R×R×3 swapped faces, N×R×R learned
        masks or None when the model learns no mask). An autoencoder sees only pixels:
        `meshes` and `poses` are ignored."""
        x = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2))).float()
        with autocast(self.device, self.precision):
            image, mask = self.model.swap(x.to(self.device))  # type: ignore[operator]
        out = image.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        m = None if mask is None else mask.float().clamp(0, 1)[:, 0].cpu().numpy()
        return out, m
