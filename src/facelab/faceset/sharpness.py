"""Sharpness: `blur` (focus) and `motion-blur` (streaks in one direction)."""

from __future__ import annotations

import cv2
import numpy as np

from facelab.faceset.features import FaceData, FaceRecord, column, feature
from facelab.faceset.methods import Selection, SortOptions, by_score, method

ANGLES = np.deg2rad([0, 45, 90, 135])


@feature("blur")
def sharpness(face: FaceData) -> float:
    """Variance of the Laplacian inside the face hull: fine detail survives only in focus."""
    lap = cv2.Laplacian(face.gray, cv2.CV_32F)
    return float(lap[face.mask].var())


@feature("motion")
def directional_sharpness(face: FaceData) -> float:
    """Gradient energy in the weakest of four directions: motion blur wipes out one
    direction's gradients and leaves the others, so the minimum drops where the mean would
    hardly move."""
    g = face.gray.astype(np.float32)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    gx, gy = gx[face.mask], gy[face.mask]
    return float(min(np.mean((gx * np.cos(a) + gy * np.sin(a)) ** 2) for a in ANGLES))


@method("blur", ("blur",))
def by_blur(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Sharpest first, blurry faces at the end."""
    return by_score(column(recs, "blur"), descending=True)


@method("motion-blur", ("motion",))
def by_motion_blur(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Sharp in every direction first, motion-blurred faces at the end."""
    return by_score(column(recs, "motion"), descending=True)
