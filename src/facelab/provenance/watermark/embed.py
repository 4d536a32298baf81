"""Embedding: the keyed pattern added to luma, as strong as the picture's texture hides.

The same delta goes into B, G and R, so only luma changes (Y's weights sum to 1) and hue is
untouched. Its amplitude follows local fine-detail activity, eroded by about a cell so that
it does not spill from an edge into the flat area beside it (GRID's blue wall next to a
head); the frame's RMS change is then capped for PSNR ≥ 40 dB.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from facelab.provenance.mark import Mark
from facelab.provenance.watermark import code, pattern

FLAT = 0.6  # local detail (grey levels RMS at the cell scale) at or below which nothing is added
TEXTURED = 1.5  # … and from which the full amplitude is
FLOOR_AMP = 1.25  # grey levels on flat areas: ±1 after rounding, 0.5 % contrast on GRID's wall
MAX_AMP = 3.5  # grey levels on textured areas
MAX_RMS = 2.4  # grey levels over the frame: PSNR ≥ 40.5 dB before rounding


@lru_cache(maxsize=4)
def _patterns(height: int, width: int, key: bytes, payload: int) -> tuple[np.ndarray, ...]:
    """A and B rendered for this frame size (each made once)."""
    return tuple(pattern.render(pattern.tile_values(pattern.layout(key, which), payload),
                                height, width) for which in range(pattern.PATTERNS))


def strength(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel amplitude in grey levels and texture (0 flat … 1 textured), float32, the
    frame's size. Computed on a copy averaged down to about 4 pixels per cell: the maps are
    smooth, and this keeps 1080p cheap."""
    h, w = gray.shape
    f = max(1, round(pattern.cell_size(h) / 4))
    small = cv2.resize(gray, (w // f, h // f), interpolation=cv2.INTER_AREA).astype(np.float32)
    c = pattern.cell_size(h) / f  # a cell, in pixels of `small`
    k = max(3, int(c) | 1)
    band = small - cv2.GaussianBlur(small, (0, 0), c)  # detail at the pattern's own scale
    act = np.sqrt(np.maximum(cv2.blur(band * band, (k, k)), 0))  # blur may round below 0
    act = cv2.erode(act, np.ones((k, k), np.uint8))
    ramp = np.clip((act - FLAT) / (TEXTURED - FLAT), 0, 1)
    tex = cv2.blur(ramp * ramp * (3 - 2 * ramp), (k, k))
    amp = FLOOR_AMP + (MAX_AMP - FLOOR_AMP) * tex
    return (cv2.resize(amp, (w, h), interpolation=cv2.INTER_LINEAR),
            cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR))


def embed(frame_bgr: np.ndarray, payload: bytes | int,
          key: bytes | str = pattern.DEFAULT_KEY, sign: float = 1.0) -> np.ndarray:
    """`frame_bgr` (H×W×3 or ×4 uint8; alpha kept) with the watermark carrying `payload`,
    B's part times `sign` (in [−1, 1]: `pattern.frame_sign` of the frame's index in a
    video)."""
    if frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 or frame_bgr.shape[2] not in (3, 4):
        raise ValueError(f"expected an H×W×3/4 uint8 frame, not {frame_bgr.shape} "
                         f"{frame_bgr.dtype}")
    h, w = frame_bgr.shape[:2]
    gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGRA2GRAY if frame_bgr.shape[2] == 4
                        else cv2.COLOR_BGR2GRAY)
    delta, tex = strength(gray)
    a, b = _patterns(h, w, pattern.key_bytes(key), code.as_payload(payload))
    # delta *= wa·A + (sign·wb)·B, wb = B's weight where the picture is textured (module
    # docstring), wa = √(1 − wb²): the same operations in place, no frame-sized temporaries
    wb = tex
    wb *= pattern.B_WEIGHT
    wa = wb * wb
    np.subtract(1, wa, out=wa)
    np.sqrt(wa, out=wa)
    wa *= a
    wb *= float(sign)
    wb *= b
    wa += wb
    delta *= wa
    rms = float(np.sqrt(np.mean(delta * delta)))
    if rms > MAX_RMS:
        delta *= MAX_RMS / rms
    # Saturating uint8 adds of the rounded positive and negative parts: 10× numpy's int16 path.
    up = cv2.convertScaleAbs(np.maximum(delta, 0))
    down = cv2.convertScaleAbs(np.minimum(delta, 0))
    planes = [up] * 3 + ([np.zeros_like(up)] if frame_bgr.shape[2] == 4 else [])
    downs = [down] * 3 + ([np.zeros_like(down)] if frame_bgr.shape[2] == 4 else [])
    return cv2.subtract(cv2.add(frame_bgr, cv2.merge(planes)), cv2.merge(downs))


def mark_frame(frame_bgr: np.ndarray, mark: Mark, index: int | None = None) -> np.ndarray:
    """A merged frame with facelab's watermark for `mark.model_id` (call before encoding).
    `index`: the frame's number in its video (its file name stem), which sets the sign of
    the pattern's B part so that a clip's frames can be summed with static content
    cancelling; None for a still (sign +1)."""
    return embed(frame_bgr, code.model_payload(mark.model_id), sign=pattern.frame_sign(index))
