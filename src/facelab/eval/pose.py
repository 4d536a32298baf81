"""Pose error: yaw, pitch and roll of the result face against the dst face in the same frame,
from the extraction stage's pose estimate (degrees)."""

from __future__ import annotations

import numpy as np

from facelab.faces.record import Landmarks


def pose_of(faces: list[Landmarks | None]) -> np.ndarray:
    """N×3 (yaw, pitch, roll) degrees; NaN rows where no face was found."""
    return np.array([(f.yaw, f.pitch, f.roll) if f is not None else (np.nan,) * 3
                     for f in faces], np.float64).reshape(-1, 3)


def pose_errors(dst: list[Landmarks | None], result: list[Landmarks | None]) -> np.ndarray:
    """N×3 absolute differences in degrees (angles wrapped to ±180); NaN where either face
    is missing."""
    diff = pose_of(result) - pose_of(dst)
    return np.abs((diff + 180.0) % 360.0 - 180.0)
