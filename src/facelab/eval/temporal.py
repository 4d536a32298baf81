"""Temporal stability: jitter of the face's landmarks and flicker of its colour, each as a
ratio to dst's own (1.0 = the swap adds nothing; a real head moves, so dst is not 0).

Jitter is the high-frequency part of the motion: the second difference over time of each of
the 68 points, p[t+1] − 2·p[t] + p[t−1] (steady motion cancels, a shake does not), its mean
length in eye distances. Flicker is the frame-to-frame change of the face region's mean
colour (grey levels, 0–255).
"""

from __future__ import annotations

import numpy as np

from facelab.eval.expression import eye_distance
from facelab.faces.record import Landmarks

FLICKER_FLOOR = 0.25  # grey levels added to both sides of the flicker ratio: a still, evenly
# lit dst flickers by compression noise only, and a ratio of two noises means nothing


def landmark_jitter(faces: list[Landmarks | None]) -> np.ndarray:
    """Per frame (NaN unless the face is found in it and in both neighbours)."""
    out = np.full(len(faces), np.nan)
    for t in range(1, len(faces) - 1):
        a, b, c = faces[t - 1], faces[t], faces[t + 1]
        if a is None or b is None or c is None:
            continue
        acc = c.points68 - 2 * b.points68 + a.points68
        out[t] = np.linalg.norm(acc, axis=1).mean() / max(eye_distance(b.points68), 1e-6)
    return out


def flicker(colors: np.ndarray) -> np.ndarray:
    """Per frame |mean colour[t] − mean colour[t−1]|, averaged over channels (NaN first)."""
    out = np.full(len(colors), np.nan)
    if len(colors) > 1:
        out[1:] = np.abs(np.diff(colors, axis=0)).mean(axis=1)
    return out


def ratio(result: np.ndarray, dst: np.ndarray, floor: float = 0.0) -> float | None:
    """mean(result) / mean(dst) over the frames where both are known."""
    ok = np.isfinite(result) & np.isfinite(dst)
    if not ok.any():
        return None
    den = float(dst[ok].mean()) + floor
    return float((result[ok].mean() + floor) / den) if den > 0 else None
