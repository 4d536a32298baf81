"""Untouched background: the pixels a merge has no business changing must be dst's own.

The region a merge may touch is the aligned square of a whole-face crop around dst's face,
enlarged by MARGIN (merge smooths landmarks, so its square moves a little); everything
outside it is background. PSNR over the background (pooled over frames) is capped at
PSNR_CAP dB, which means identical; a lossy result video scores its encoder's quality there
(≈ 35–45 dB), a lossless one (merged PNG frames) the cap.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelab.faces.facetype import FaceType, face_transform, invert

MARGIN = 1.15
PSNR_CAP = 100.0


def background_mask(points68: np.ndarray | None, shape: tuple[int, ...], yaw: float = 0.0
                    ) -> np.ndarray:
    """bool H×W, True where a merge must leave dst's pixels (all of it without a face)."""
    h, w = shape[:2]
    keep = np.ones((h, w), bool)
    if points68 is None:
        return keep
    size = 100
    to_frame = invert(face_transform(points68, FaceType.WHOLE_FACE, size, yaw_deg=yaw))
    c = size / 2
    square = np.array([[c + (x - c) * MARGIN, c + (y - c) * MARGIN]
                       for x, y in ((0, 0), (size, 0), (size, size), (0, size))])
    corners = square @ to_frame[:, :2].T + to_frame[:, 2]
    region = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(region, np.round(corners).astype(np.int32), 1)
    return keep & (region == 0)


def squared_error(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> tuple[float, int]:
    """(sum of squared differences, number of values) over the `keep` pixels."""
    if a.shape != b.shape:
        raise ValueError("frames differ in size")
    d = a[keep].astype(np.float64) - b[keep].astype(np.float64)
    return float((d * d).sum()), int(d.size)


def psnr(sse: float, n: int) -> float | None:
    if n == 0:
        return None
    mse = sse / n
    return PSNR_CAP if mse <= 255.0**2 * 10 ** (-PSNR_CAP / 10) else float(
        10 * np.log10(255.0**2 / mse))
