"""Deliberate degradation: make the sharp, clean predicted face (or the merged frame) look
like the dst footage it goes into, which is often softer and compressed. Both operations
take float32 H×W×3 in [0, 1], return a new float32 array in [0, 1] and are the identity at
power 0.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def _check_power(power: int) -> None:
    if not 0 <= power <= 100:
        raise ValueError(f"power must be within 0…100, not {power}")


def bicubic_degrade(face: np.ndarray, power: int) -> np.ndarray:
    """Downscale by 1 - power/101 and back up, both bicubic (DeepFaceLab's factor): detail finer
    than the reduced grid is lost, the blur of a lower-resolution dst. Power 100 keeps about
    1 % of the side (at least one pixel)."""
    _check_power(power)
    face = face.astype(np.float32, copy=False)
    if power == 0:
        return face.copy()
    h, w = face.shape[:2]
    scale = 1.0 - power / 101.0
    small = cv2.resize(face, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_CUBIC)
    back = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(back, 0.0, 1.0)  # bicubic overshoots at edges


def reduce_colors(image: np.ndarray, colors: int = 256) -> np.ndarray:
    """The image in an adaptive palette of `colors` colours, undithered: Pillow's fast octree
    (~2 ms at 256², ~30 ms for a 1080p frame, against ~0.15 s and ~0.9 s for median cut, with
    a similar error)."""
    u8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    pal = Image.fromarray(u8).quantize(colors, method=Image.Quantize.FASTOCTREE,
                                       dither=Image.Dither.NONE)
    return np.asarray(pal.convert("RGB"), dtype=np.float32) / 255.0


def color_degrade(image: np.ndarray, power: int) -> np.ndarray:
    """Blend the image toward its 256-colour version by power/100 (DeepFaceLab's colour degrade
    power): the banding of heavily compressed or palettised footage."""
    _check_power(power)
    image = image.astype(np.float32, copy=False)
    if power == 0:
        return image.copy()
    alpha = power / 100.0
    return np.clip(image * (1.0 - alpha) + reduce_colors(image) * alpha, 0.0, 1.0)
