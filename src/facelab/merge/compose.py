"""Putting one predicted face back into its frame: masks, colour, blending.

Everything happens inside the face's region of interest (the bounding box of the warped
crop, plus a margin), so the cost does not grow with the frame and every pixel outside the
final mask is copied from the frame unchanged. The order follows DeepFaceLab's merger:
enhance → degrade → colour transfer / histogram match in crop space; warp to the frame;
mask (parts multiplied, then eroded and blurred relative to the face size); seamless clone;
composite through the soft mask; colour degrade of the face region.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from facelab.merge.color import transfer
from facelab.merge.degrade import bicubic_degrade, color_degrade
from facelab.merge.histmatch import hist_match
from facelab.merge.options import MergeOptions

Mesher = Callable[[np.ndarray], np.ndarray | None]  # face crop u8 → N×2 crop points
Enhance = Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # face, (w, h) → larger face


@dataclass
class Placed:
    """One face to merge: where its crop sits in the frame and what the model made of it."""

    frame_to_crop: np.ndarray  # 2×3, frame px → crop px (for the dst crop)
    landmarks: np.ndarray  # 68×2 dst landmarks in frame px (the dst hull mask)
    predicted: np.ndarray  # R×R×3 float32 BGR [0, 1]
    learned_mask: np.ndarray | None  # R×R float32 [0, 1]
    dst_crop: np.ndarray  # R×R×3 float32 BGR [0, 1], the face the model saw


def scaled(frame_to_crop: np.ndarray, res: int, face_scale: int) -> np.ndarray:
    """The crop transform for a face drawn `face_scale` % larger (smaller if negative)."""
    s = 1.0 + face_scale / 100.0
    c = (res - 1) / 2.0
    return np.vstack([frame_to_crop[0], frame_to_crop[1]]) / s + np.array(
        [[0, 0, c - c / s], [0, 0, c - c / s]])


def roi_of(frame_to_crop: np.ndarray, res: int, shape: tuple[int, ...],
           margin: float = 0.1) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the frame region the crop covers, grown by `margin`, clipped."""
    m = np.vstack([frame_to_crop, [0, 0, 1]])
    inv = np.linalg.inv(m)[:2]
    corners = np.array([[0, 0], [res, 0], [0, res], [res, res]], np.float64)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    pad = margin * max(x1 - x0, y1 - y0)
    h, w = shape[:2]
    return (max(0, int(x0 - pad)), max(0, int(y0 - pad)),
            min(w, int(np.ceil(x1 + pad))), min(h, int(np.ceil(y1 + pad))))


def to_roi(frame_to_crop: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The same transform taking ROI pixels (origin x0, y0) instead of frame pixels."""
    out = frame_to_crop.astype(np.float64).copy()
    out[:, 2] += out[:, :2] @ np.array([x0, y0], np.float64)
    return out


def warp_to_frame(image: np.ndarray, frame_to_crop: np.ndarray, size: tuple[int, int],
                  cubic: bool = True) -> np.ndarray:
    """Crop-space image → frame (ROI) space; outside the crop: 0."""
    flags = (cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(image, frame_to_crop, size, flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def hull_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Filled convex hull of points as a float32 mask of `size` (w, h)."""
    mask = np.zeros((size[1], size[0]), np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(points) * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255


def erode_blur(mask: np.ndarray, erode: int, blur: int) -> np.ndarray:
    """DeepFaceLab's relative erode and blur: sizes scale with the mask's smaller side, so a
    setting means the same on a small and a large face (its formulas)."""
    ys, xs = np.nonzero(mask > 1 / 255)
    if not len(xs):
        return mask
    side = float(min(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
    out = mask
    if erode:
        k = int(side * (0.126 - side * 0.00004551365) * 0.01 * abs(erode))
        if k > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
            out = (cv2.erode if erode > 0 else cv2.dilate)(out, kernel, iterations=1)
    if blur > 0:
        k = int(side * 0.10 * 0.01 * blur)
        if k > 0:
            # erode first by half the blur so the feather stays inside the face (as DFL does)
            inner = cv2.erode(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            out = cv2.blur(inner, (2 * k + 1, 2 * k + 1))
    return np.clip(out, 0, 1)


def _seamless_mask(mask: np.ndarray) -> np.ndarray | None:
    """Binary clone mask: the mask above its lowest non-empty tenth (DFL)."""
    for i in range(1, 10):
        hard = mask > i / 10.0
        if hard.any():
            return hard.astype(np.uint8) * 255
    return None


def _seamless(face: np.ndarray, base: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """cv2.seamlessClone of `face` into `base` (same-size uint8 images) where mask is set."""
    hard = _seamless_mask(mask)
    if hard is None:
        return face
    hard[0, :] = hard[-1, :] = 0  # the clone region must not touch the border
    hard[:, 0] = hard[:, -1] = 0
    x, y, w, h = cv2.boundingRect(hard)
    if w < 3 or h < 3:
        return face
    return cv2.seamlessClone(face, base, hard, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)


def upscaled(frame_to_crop: np.ndarray, up: int) -> np.ndarray:
    """The transform into a crop `up` times larger (pixel centres kept)."""
    if up == 1:
        return frame_to_crop
    out = frame_to_crop.astype(np.float64) * up
    out[:, 2] += (up - 1) / 2.0
    return out


def face_in_crop(opts: MergeOptions, p: Placed, enhance: Enhance | None,
                 up: int = 1) -> np.ndarray:
    """The predicted face after enhancement, degradation and colour matching, in a crop
    `up` times the model's size (the enhancer's detail only survives at a larger size)."""
    res = p.predicted.shape[0]
    size = (res * up, res * up)
    face = p.predicted if enhance is None else enhance(p.predicted, size)
    if opts.degrade:
        face = bicubic_degrade(face, opts.degrade)
    ref = p.dst_crop if up == 1 else cv2.resize(p.dst_crop, size, interpolation=cv2.INTER_CUBIC)
    hull = hull_mask(_crop_points(p) * up + (up - 1) / 2.0, size)
    learned = p.learned_mask
    if learned is not None and up != 1:
        learned = cv2.resize(learned, size, interpolation=cv2.INTER_LINEAR)
    ref_mask = hull if learned is None else learned * hull
    if opts.mode in ("hist-match", "hist-match-bw", "seamless-hist-match"):
        face = hist_match(face, ref, ref_mask, opts.hist_threshold,
                          bw=opts.mode == "hist-match-bw", masked=opts.masked_hist_match)
    if opts.color != "none" and opts.mode != "hist-match-bw":
        face = transfer(opts.color, face, ref, ref_mask)
    return np.clip(face, 0, 1).astype(np.float32)


def _crop_points(p: Placed) -> np.ndarray:
    m = p.frame_to_crop
    return np.asarray(p.landmarks, np.float64) @ m[:, :2].T + m[:, 2]


def merge_face(frame: np.ndarray, p: Placed, opts: MergeOptions,
               mesher: Mesher | None = None, enhance: Enhance | None = None,
               ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Merge one face into `frame` (uint8 BGR, not modified).

    Returns (merged ROI uint8, its mask float32 [0, 1], the ROI box x0, y0, x1, y1). The
    caller writes the ROI back; outside the mask the ROI's pixels are the frame's, exactly.
    """
    res = p.predicted.shape[0]
    out_mat = scaled(p.frame_to_crop, res, opts.face_scale)
    x0, y0, x1, y1 = roi_of(out_mat, res, frame.shape)
    x0, y0, x1, y1 = _union((x0, y0, x1, y1), roi_of(p.frame_to_crop, res, frame.shape))
    size = (x1 - x0, y1 - y0)
    base = frame[y0:y1, x0:x1]
    face_mat = to_roi(out_mat, x0, y0)
    up = 1 if enhance is None else 2  # an enhanced face is composed at twice the size
    face = face_in_crop(opts, p, enhance, up)
    face_mat_up = upscaled(face_mat, up)

    mask = np.ones(size[::-1], np.float32)
    parts = opts.mask_parts
    if "learned" in parts:
        learned = p.learned_mask if p.learned_mask is not None else hull_mask(
            _crop_points(p), (res, res))
        mask *= np.clip(warp_to_frame(learned, face_mat, size, cubic=False), 0, 1)
    if "prd" in parts:
        pts = mesher((face * 255).round().astype(np.uint8)) if mesher is not None else None
        prd = hull_mask(pts, (res * up, res * up)) if pts is not None else hull_mask(
            _crop_points(p) * up + (up - 1) / 2.0, (res * up, res * up))
        mask *= warp_to_frame(prd, face_mat_up, size, cubic=False)
    if "dst" in parts:
        mask *= hull_mask(np.asarray(p.landmarks) - [x0, y0], size)
    # nothing beyond the warped crop's own area, whatever the parts say
    mask *= warp_to_frame(np.ones((res, res), np.float32), face_mat, size, cubic=False) > 0.999
    mask[mask < 1 / 255] = 0
    mask = erode_blur(mask, opts.erode, opts.blur)

    face_frame = np.clip(warp_to_frame(face, face_mat_up, size), 0, 1)
    if opts.mode == "raw":
        raw = (face_frame * mask[..., None] * 255).round().astype(np.uint8)
        return raw, mask, (x0, y0, x1, y1)
    base_f = base.astype(np.float32) / 255
    m3 = mask[..., None]
    result = face_frame
    if opts.mode in ("seamless", "seamless-hist-match"):
        pasted = (base_f * (1 - m3) + face_frame * m3) * 255
        cloned = _seamless(pasted.round().astype(np.uint8), base, mask)
        result = cloned.astype(np.float32) / 255
    if opts.color_degrade:
        result = color_degrade(result, opts.color_degrade)
    merged = base_f * (1 - m3) + result * m3
    out = (merged * 255).round().astype(np.uint8)
    out[mask == 0] = base[mask == 0]  # exactly the frame's pixels outside the mask
    return out, mask, (x0, y0, x1, y1)


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])
