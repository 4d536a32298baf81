"""Sharpness: detail in the face region of the result against the dst face's own.

Detail is the variance of the Laplacian of the grey image inside the face (the hull of dst's
landmarks, shrunk so that the face's outline, where a blend seam may sit, is left out), after
a Gaussian blur of 0.04 eye distances (≈ 1.5 px on GRID): without it, pixel noise counts as
detail, and a 2-iteration model's noise texture, Poisson-blended into dst, scored 2.7× as
sharp as dst (0.69 with it; dst JPEG-compressed at q80: 1.00, dst with the face blurred:
0.01). The ratio result/dst is 1.0 for a face as sharp as the original; a blurry swap (an
average face, an undertrained model) scores low.
"""

from __future__ import annotations

import cv2
import numpy as np

SHRINK = 0.15  # of the eye distance·3 (≈ face width): the margin left out inside the outline
SIGMA = 0.04  # pre-blur, in eye distances


def face_mask(points68: np.ndarray, shape: tuple[int, ...], shrink: float = SHRINK
              ) -> np.ndarray:
    """uint8 mask (255 inside) of the face: the hull of jaw and brows, eroded."""
    h, w = shape[:2]
    mask = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(np.round(points68[:27]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    k = round(shrink * 3 * eye_distance(points68))
    if k > 0:
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
    return mask


def eye_distance(points68: np.ndarray) -> float:
    return float(np.linalg.norm(points68[42:48].mean(0) - points68[36:42].mean(0)))


def detail(frame_bgr: np.ndarray, mask: np.ndarray, eye: float) -> float:
    """Variance of the Laplacian inside `mask` (grey levels²) after the SIGMA·`eye` blur."""
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), max(0.5, SIGMA * eye))
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    inside = lap[mask > 0]
    return float(inside.var()) if inside.size > 16 else float("nan")


def mean_color(frame_bgr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean B, G, R inside `mask` (NaN when empty)."""
    if not (mask > 0).any():
        return np.full(3, np.nan)
    return np.asarray(cv2.mean(frame_bgr, mask=mask)[:3], np.float64)
