"""Pose error: yaw, pitch and roll of the result face against the dst face in the same frame,
from the extraction stage's pose estimate (degrees)."""

from __future__ import annotations

import numpy as np

from facelab.faces.record import Landmarks


def pose_of(faces: list[Landmarks | None]) -> np.ndarray:
    """N×3 (yaw, pitch, roll) degrees; NaN rows where no face was found."""
    return np.array([(f.yaw, f.pitch, f.roll) if f is not None else (np.nan,) * 3
                     for f in faces], np.float64).reshape(-1, 3)


def pose_differences(dst: list[Landmarks | None], result: list[Landmarks | None]
                     ) -> np.ndarray:
    """N×3 signed differences result − dst in degrees (wrapped to ±180); NaN where either
    face is missing."""
    diff = pose_of(result) - pose_of(dst)
    return (diff + 180.0) % 360.0 - 180.0


def offset_and_following(diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split signed differences (N×3) into a constant offset per axis (their median) and
    what is left, |diff − offset| (N×3). Why: landmark-based pose depends on the face's
    proportions, so another person's face on dst's head reads a few degrees off even when
    it turns exactly with dst (a pasted src face, no model, read 8° of pitch on GRID C → D);
    the remainder measures whether the face follows dst's head motion."""
    ok = ~np.isnan(diff).any(axis=1)
    if not ok.any():
        return np.full(3, np.nan), np.full_like(diff, np.nan)
    offset = np.median(diff[ok], axis=0)
    return offset, np.abs(diff - offset)
