"""Fidelity to dst: face-region PSNR and SSIM of the result against dst's own frame.

When src and dst are the same person (GRID speaker A clip 1 → clip 2), the ideal swap is
dst itself, so these are ground truth: a warp of src's pixels that gets the face right
scores ≈ 33 dB / SSIM 0.94, a 6-minute autoencoder ≈ 21.6 dB / 0.71. With another person as
src they measure how much the face changed, not its quality.

The region is dst's face hull (jaw and brows, `sharpness.face_mask` without its erosion, so
a blend seam on the outline counts). PSNR is over the hull's pixels, all three channels,
capped like the background's (`background.PSNR_CAP` = identical); SSIM is Wang et al.'s,
an 11×11 Gaussian window of σ 1.5 on luma, its map averaged over the hull. Both are
computed on the hull's bounding box, padded by the window's half-width.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelab.eval import background, sharpness

WINDOW = 11
SIGMA = 1.5
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two grey images (0–255) of one size, float64."""
    if a.shape != b.shape:
        raise ValueError("images differ in size")
    x, y = a.astype(np.float64), b.astype(np.float64)

    def blur(v: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(v, (WINDOW, WINDOW), SIGMA)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))


def luma(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM of the luma of `a` and `b` (BGR or grey), over `mask` (> 0) if given;
    NaN for an empty mask."""
    m = ssim_map(luma(a), luma(b))
    if mask is None:
        return float(m.mean())
    inside = m[mask > 0]
    return float(inside.mean()) if inside.size else float("nan")


def face_fidelity(dst: np.ndarray, result: np.ndarray, points68: np.ndarray
                  ) -> tuple[float, float]:
    """(PSNR dB, SSIM) of `result` against `dst` inside dst's face hull (NaN, NaN when the
    hull is empty)."""
    mask = sharpness.face_mask(points68, dst.shape, shrink=0.0)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return float("nan"), float("nan")
    pad = WINDOW // 2
    h, w = mask.shape
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    d, r, m = dst[y0:y1, x0:x1], result[y0:y1, x0:x1], mask[y0:y1, x0:x1] > 0
    sse, n = background.squared_error(d, r, m)
    db = background.psnr(sse, n)
    return (float("nan") if db is None else db), ssim(d, r, m)
