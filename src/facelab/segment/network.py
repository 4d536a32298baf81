"""The face segmenter: a small U-Net from an aligned face crop to a face-mask logit.

Occluders (hands, hair, glasses frames, microphones...) are outside the mask. The network
works at half its input resolution after a strided stem and upsamples its one-channel logit
bilinearly back (masks are smooth; the full-resolution decoder level would cost half the
time). Weights are safetensors, everything else a JSON card beside them (architecture, data,
recipe, measured quality): loading runs no pickled code and checks every tensor's shape.

    net = SegNet(resolution=160)
    save_segmenter(net, Path("segmenter"), card)   # segmenter.safetensors + segmenter.json
    net, card = load_segmenter(Path("segmenter"))
    masks = predict_masks(net, faces_uint8)        # N×H×W float32 in [0, 1]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from facelab.errors import FacelabError
from facelab.fsutil import atomic_path, write_json

FORMAT = "facelab-segmenter-1"
WIDTHS = (16, 32, 64, 96, 128)  # channels per level; level 0 is at half the input side
RESOLUTIONS = (96, 128, 160, 192, 224, 256)  # multiples of 32: five halvings stay whole
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    """U-Net: N×3×R×R BGR in [0, 1] → N×1×R×R logits (sigmoid > 0.5: face, not occluded)."""

    def __init__(self, resolution: int = 160, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}")
        self.resolution, self.widths = int(resolution), tuple(int(w) for w in widths)
        w = self.widths
        self.down = nn.ModuleList(
            nn.Sequential(_conv(3 if i == 0 else w[i - 1], w[i], 2), _conv(w[i], w[i]))
            for i in range(len(w)))
        self.up = nn.ModuleList(_conv(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1))
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        skips = []
        x = x - 0.5
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)


def architecture(net: SegNet) -> dict[str, Any]:
    return {"resolution": net.resolution, "widths": list(net.widths)}


def save_segmenter(net: SegNet, path: Path | str, card: dict[str, Any],
                   dtype: str = "float32") -> tuple[Path, Path]:
    """Write `path`.safetensors (weights in `dtype`; BatchNorm's counters stay int64) and
    `path`.json (the card with the architecture added); both atomically. Returns both."""
    path = Path(path)
    weights, card_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}")
    tensors = {k: (v.detach().to(DTYPES[dtype]) if v.is_floating_point() else v.detach())
               .contiguous().cpu() for k, v in net.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    write_json(card_path, {**card, "format": FORMAT, "dtype": dtype,
                                  "architecture": architecture(net)})
    return weights, card_path


def _refuse(path: Path, why: str) -> FacelabError:
    return FacelabError(f"The segmenter {path.name} cannot be loaded ({why}).")


def load_segmenter(path: Path | str) -> tuple[SegNet, dict[str, Any]]:
    """The network (fp32, eval mode) and its card from `path`.safetensors / `path`.json,
    both untrusted: the card's architecture is checked, the weights must match it exactly."""
    path = Path(path)
    weights, card_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _refuse(card_path, f"its card is unreadable: {e.__class__.__name__}") from None
    arch = card.get("architecture") if isinstance(card, dict) else None
    if not isinstance(arch, dict) or card.get("format") != FORMAT \
            or arch.get("resolution") not in RESOLUTIONS \
            or not isinstance(arch.get("widths"), list) \
            or not 1 <= len(arch["widths"]) <= 8 \
            or not all(type(w) is int and 1 <= w <= 1024 for w in arch["widths"]):
        raise _refuse(card_path, f"its card is not a {FORMAT} card")
    net = SegNet(arch["resolution"], tuple(arch["widths"]))
    try:
        tensors = load_file(str(weights))
    except (OSError, SafetensorError) as e:
        raise _refuse(weights, f"{e.__class__.__name__}: {e}") from None
    expected = net.state_dict()
    if set(tensors) != set(expected) or any(
            tensors[k].shape != v.shape for k, v in expected.items()):
        raise _refuse(weights, "its tensors do not match the card's architecture")
    net.load_state_dict({k: tensors[k].to(v.dtype) for k, v in expected.items()})
    return net.eval(), card


def to_input(faces: np.ndarray | Sequence[np.ndarray], resolution: int) -> torch.Tensor:
    """N uint8 BGR faces (H×W×3, sizes may differ) → N×3×R×R float32 in [0, 1]
    (area-resized when larger)."""
    out = []
    for f in faces:
        if f.shape[:2] != (resolution, resolution):
            inter = cv2.INTER_AREA if f.shape[0] > resolution else cv2.INTER_LINEAR
            f = cv2.resize(f, (resolution, resolution), interpolation=inter)
        out.append(f)
    x = torch.from_numpy(np.ascontiguousarray(np.stack(out)))
    return x.permute(0, 3, 1, 2).float().div_(255)


@torch.inference_mode()
def predict_masks(net: SegNet, faces: np.ndarray) -> np.ndarray:
    """Face masks (N×H×W float32 in [0, 1], the faces' own size) of N aligned BGR faces."""
    faces = np.asarray(faces)
    if faces.ndim == 3:
        faces = faces[None]
    net.eval()
    prob = torch.sigmoid(net(to_input(faces, net.resolution)))[:, 0].numpy()
    h, w = faces.shape[1:3]
    if (h, w) == prob.shape[1:]:
        return prob
    return np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in prob])
