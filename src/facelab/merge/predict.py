"""A trained model, loaded for prediction only: dst face crops in, src-identity faces out.

Loading goes through the checkpoint's verified, pickle-free reader (weights only; the
optimizer state is not read). The model id written into every merged frame's provenance
mark is the name, the iteration and the start of the weights' sha256 from the manifest, so
a result can be traced to the exact save that made it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelab.errors import FacelabError
from facelab.faces.facetype import FaceType
from facelab.train import checkpoint
from facelab.train.device import autocast, resolve_device
from facelab.train.models import ModelOptions, build_model
from facelab.train.trainer import fixed_of, peek


@dataclass(frozen=True)
class ModelInfo:
    name: str
    options: ModelOptions
    iteration: int
    model_id: str

    @property
    def face_type(self) -> FaceType:
        return FaceType.parse(self.options.face_type)


def model_info(folder: Path, name: str) -> ModelInfo:
    """What the merger needs to know about a saved model, without loading tensors."""
    checkpoint.check_name(name)
    doc = peek(folder, name)
    if doc is None:
        known = checkpoint.list_models(folder)
        choices = f"; models here: {', '.join(known)}" if known else ""
        raise FacelabError(f"There is no trained model named {name!r} in {folder}{choices}.")
    try:
        state = doc["state"]
        mo = ModelOptions(**state["options"]).validate()
    except (KeyError, TypeError) as exc:
        raise FacelabError(f"Model {name!r} in {folder} has unreadable options ({exc}).") from None
    digest = "unknown"
    try:
        manifest = json.loads((folder / f"{name}_manifest.json").read_bytes())
        digest = manifest["files"][f"{name}_weights.safetensors"]["sha256"][:12]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    it = int(state.get("iteration", 0))
    return ModelInfo(name, mo, it, f"{name}@{it}:{digest}")


class Predictor:
    """Runs a model's swap (dst → src) on batches of face crops."""

    def __init__(self, folder: Path, name: str, device: str = "auto",
                 warn: checkpoint.Warn = lambda _: None, precision: str = "fp32") -> None:
        """`precision`: fp32, bf16 or fp16 (autocast); resolve "auto" once beforehand with
        `train.device.choose_precision` (the merge does, for all its workers)."""
        self.info = model_info(folder, name)
        mo = self.info.options
        self.device = resolve_device(device)
        self.precision = precision
        model = build_model(mo)
        checkpoint.load(folder, name, model, None, expected_arch=mo.arch,
                        fixed_options=fixed_of(mo), warn=warn, restore_rng=False)
        self.model = model.to(self.device).eval()
        self.resolution = mo.resolution
        self.learns_mask = mo.learn_mask

    @torch.no_grad()
    def predict(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """N×R×R×3 float32 BGR [0, 1] dst crops → (N×R×R×3 swapped faces, N×R×R learned
        masks or None when the model learns no mask)."""
        x = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2))).float()
        with autocast(self.device, self.precision):
            image, mask = self.model.swap(x.to(self.device))  # type: ignore[operator]
        out = image.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        m = None if mask is None else mask.float().clamp(0, 1)[:, 0].cpu().numpy()
        return out, m
