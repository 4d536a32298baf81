"""Random augmentation geometry for training samples (DeepFaceLab's samplelib, our code).

Everything is drawn once per sample into an `Augment` and then applied by `render`, so the
target, the warped input and the mask share one jitter, and a test can render a chosen
`Augment` (flip on or off) to check what each part does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ROTATION_DEG = 10.0  # DFL: rotation ±10°
SCALE = 0.15  # DFL: scale ±15 %
SHIFT = 0.05  # DFL: translation ±5 % of the side
FLIP_P = 0.4  # DFL's flip probability
WARP_CELLS = (2, 4, 8)  # the grid cell is res / one of these, chosen per sample
WARP_AMOUNT = 0.24  # inner grid points move by N(0, 1) · cell · this


@dataclass(frozen=True)
class Augment:
    """One sample's random draw: the shared affine jitter, the flip and the warp grid."""

    angle_deg: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)  # fractions of the side
    flip: bool = False
    grid: np.ndarray | None = None  # n×n×2 coarse displacements, in fractions of the side


def draw_augment(rng: np.random.Generator, *, warp: bool, flip: bool,
                 scale_shift: float = 0.0) -> Augment:
    """Draw a sample's augmentation; `scale_shift` (e.g. -0.3…0.3) moves the scale range."""
    angle = float(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    scale = float(1.0 + scale_shift + rng.uniform(-SCALE, SCALE))
    shift = (float(rng.uniform(-SHIFT, SHIFT)), float(rng.uniform(-SHIFT, SHIFT)))
    flipped = bool(flip and rng.random() < FLIP_P)
    grid = None
    if warp:
        cells = int(rng.choice(WARP_CELLS))
        n = cells + 1  # grid points, border ones included
        grid = np.zeros((n, n, 2), np.float32)
        grid[1:-1, 1:-1] = rng.standard_normal((n - 2, n - 2, 2)) * (WARP_AMOUNT / cells)
    return Augment(angle, max(scale, 0.05), shift, flipped, grid)


def jitter_matrix(aug: Augment, res: int) -> np.ndarray:
    """2×3 affine on `res`² crop pixels: rotate and scale about the centre, shift, mirror."""
    c = (res - 1) / 2.0
    mat = cv2.getRotationMatrix2D((c, c), aug.angle_deg, aug.scale).astype(np.float64)
    mat[:, 2] += np.array(aug.shift) * res
    if aug.flip:  # x → (res-1) - x, so a flipped crop is exactly the mirrored pixels
        mat[0] = -mat[0]
        mat[0, 2] += res - 1
    return mat


def dense_warp(grid: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop-pixel sampling maps (x, y), identity plus the grid's displacements made smooth.

    The coarse grid is upsampled bicubically; its border points stay fixed, so the warp
    bends the face inside the crop without pulling the crop's edges in.
    """
    disp = cv2.resize(grid, (res, res), interpolation=cv2.INTER_CUBIC) * res
    ys, xs = np.mgrid[0:res, 0:res].astype(np.float32)
    return xs + disp[..., 0], ys + disp[..., 1]


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2×3 affine applying `inner` then `outer`."""
    a = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return a[:2]


EYES_MOUTH = ((36, 42), (42, 48), (48, 60))  # 68-point ranges: each eye, the outer lips


def eyes_mouth_mask(points: np.ndarray, res: int) -> np.ndarray:
    """The eyes and mouth as a soft uint8 res×res mask: each part's hull grown by res/32 and
    blurred, the region DeepFaceLab's eyes-and-mouth priority weights."""
    mask = np.zeros((res, res), np.uint8)
    for a, b in EYES_MOUTH:
        hull = cv2.convexHull(np.round(points[a:b] * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=4)
    grow = max(1, res // 32)
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    return cv2.GaussianBlur(mask, (2 * grow + 1,) * 2, 0)


def render(face: np.ndarray, face_to_crop: np.ndarray, landmarks: np.ndarray, res: int,
           aug: Augment, mask_blur: bool = False, eyes_mouth: bool = False,
           occlusion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target, input, mask) as HxW(x3) uint8 from a stored face image (uint8: a quarter
    of float32's bytes to pass between processes).

    Each is sampled straight from `face` in one interpolation (no resampling twice), the
    input through the warp grid; the mask is the hull of the jittered landmarks, with the
    eyes-and-mouth mask as a second channel (H×W×2) when `eyes_mouth`. `occlusion` (the
    face's segmenter mask, uint8 at `face`'s size, 0 where a hand or hair covers the face)
    is cut along with the target and multiplies both channels, and comes as one more
    channel (the pixels to keep) for the losses over the whole crop: the losses then leave
    the occluded pixels out (masked training). Without it nothing changes.
    """
    mat = compose(jitter_matrix(aug, res), face_to_crop)
    target = cv2.warpAffine(face, mat, (res, res), flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE)
    if aug.grid is None:
        warped = target
    else:
        mx, my = dense_warp(aug.grid, res)
        inv = cv2.invertAffineTransform(mat)  # crop pixel → stored-face pixel
        sx = (inv[0, 0] * mx + inv[0, 1] * my + inv[0, 2]).astype(np.float32)
        sy = (inv[1, 0] * mx + inv[1, 1] * my + inv[1, 2]).astype(np.float32)
        warped = cv2.remap(face, sx, sy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    pts = np.asarray(landmarks, np.float64) @ mat[:, :2].T + mat[:, 2]
    mask = np.zeros((res, res), np.uint8)
    hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))  # 4 fractional bits
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=4)
    if mask_blur:  # DFL blurs the target mask with radius res/32
        k = max(1, res // 32) * 2 + 1
        mask = cv2.GaussianBlur(mask, (k, k), 0)
    if eyes_mouth:
        mask = np.dstack([mask, eyes_mouth_mask(pts, res)])
    if occlusion is not None:
        occ = cv2.warpAffine(occlusion, mat, (res, res), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE).astype(np.uint16)
        cut = occ[..., None] if mask.ndim == 3 else occ
        mask = ((mask.astype(np.uint16) * cut + 127) // 255).astype(np.uint8)
        mask = np.dstack([mask, occ.astype(np.uint8)])
    return target, warped, mask


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, worker, …): reproducible and non-overlapping."""
    return np.random.default_rng([seed & 0xFFFFFFFF, *stream])

