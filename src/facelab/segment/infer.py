"""The segmenter at work on a merge: faces cut from frames at the network's resolution, one
batched pass, and the masks of one face smoothed over neighbouring frames.

A crop's transform is the model's (`frame_to_crop`, R px) rescaled to the network's side S
(pixel centres kept), so the mask lies on the same aligned face whatever R is and warps
back into the frame through that one transform. Masks are averaged in aligned-face
coordinates: the crop follows the (smoothed) face, so a face pixel keeps its place from
frame to frame and only the occluder's edge moves; a centred triangular window of
`2 * WINDOW + 1` frames over the faces of the same track stops the edge flickering where
the network hesitates, and, being centred and finite, a frame's mask depends only on its
neighbours' pixels: segments merged apart give the same frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # torch loads with the network, not with the merge's compose
    from facelab.segment.network import SegNet

#: Frames on each side of a face whose masks its own is averaged with (0: no smoothing).
WINDOW = 2
#: The network's probability below which a pixel is not face at all, and above which it is
#: wholly face, with a linear ramp between (see `decided`).
RAMP = (0.4, 0.6)


def rescaled(frame_to_crop: np.ndarray, res: int, size: int) -> np.ndarray:
    """The transform into a `size`² crop of the same aligned face as a `res`² one."""
    k = size / res
    out = np.asarray(frame_to_crop, np.float64) * k
    out[:, 2] += (k - 1) / 2.0
    return out


def cut(frame: np.ndarray, frame_to_crop: np.ndarray, res: int, size: int) -> np.ndarray:
    """The aligned face (uint8 BGR, `size`²) that `frame_to_crop` (into `res`²) places."""
    return cv2.warpAffine(frame, rescaled(frame_to_crop, res, size), (size, size),
                          flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def masks(net: SegNet, faces: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """N×S×S float32 face masks in [0, 1] at the network's side S, one batch (uint8 BGR
    faces of any size, resized to S)."""
    import torch

    from facelab.segment.network import to_input

    if len(faces) == 0:
        return np.zeros((0, net.resolution, net.resolution), np.float32)
    net.eval()
    device = next(net.parameters()).device
    x = to_input([np.asarray(f) for f in faces], net.resolution).to(device)
    with torch.inference_mode():
        return torch.sigmoid(net(x))[:, 0].float().cpu().numpy()


def as_uint8(face: np.ndarray) -> np.ndarray:
    """A float [0, 1] face as the network's uint8 input."""
    return (np.clip(face, 0, 1) * 255).round().astype(np.uint8)


def decided(mask: np.ndarray, ramp: tuple[float, float] = RAMP) -> np.ndarray:
    """The network's decision as a merge mask: 0 at or below ramp[0], 1 at or above
    ramp[1], linear between. The raw probability is soft over an occluder (between 0.02
    and 0.5 on 38 % of the hand pixels of the Pexels fixtures, frames 50–239): blended
    through it, the new face shows through the hand. Cut near 0.5, the hand pixels the
    network calls not-face stay dst's exactly (78 % of them inside the crop, against 12 %
    raw) and the face stays whole (95 % of its labelled pixels at 1, against 75 % raw);
    DeepFaceLab also cuts XSeg's output (below 0.1: 0)."""
    lo, hi = ramp
    return np.clip((mask - lo) / (hi - lo), 0, 1).astype(np.float32)


def window_weights(window: int = WINDOW) -> np.ndarray:
    """Triangular weights over offsets -window … window (1, 2, …, window + 1, …, 1)."""
    return (window + 1 - np.abs(np.arange(-window, window + 1))).astype(np.float64)


def smoothed(raw: Mapping[tuple[int, int], np.ndarray], position: int, track: int,
             window: int = WINDOW) -> np.ndarray:
    """Face `track`'s mask at clip position `position`, averaged with the masks of the same
    track within `window` frames (`raw` by (position, track); a missing neighbour drops
    out and the weights of the others are renormalised)."""
    weights = window_weights(window)
    acc: np.ndarray | None = None
    total = 0.0
    for off, w in zip(range(-window, window + 1), weights, strict=True):
        m = raw.get((position + off, track))
        if m is None:
            continue
        acc = m.astype(np.float64) * w if acc is None else acc + m * w
        total += w
    if acc is None:
        raise KeyError(f"no mask of track {track} at position {position}")
    return (acc / total).astype(np.float32)
