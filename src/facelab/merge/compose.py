"""Putting one predicted face back into its frame: masks, colour, blending.

Everything happens inside the bounding box of the face's mask (within the region of
interest: the warped crop's box plus a margin), so the cost does not grow with the frame
and every pixel outside the final mask is copied from the frame unchanged. The seamless
clone is compose's own Poisson solve (`_poisson_clone`: OpenCV's result, faster). The order
follows DeepFaceLab's merger:
enhance → degrade → colour transfer / histogram match in crop space; warp to the frame;
mask (parts multiplied: learned, the hulls, the segmenter's masks; then eroded and blurred
relative to the face size); seamless clone; composite through the soft mask; colour degrade
of the face region.
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
from facelab.segment.infer import rescaled

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
    #: the segmenter's masks (S×S float32 [0, 1], S its side) of the dst face (crop of
    #: `frame_to_crop` rescaled to S, `segment/infer.py`) and of the predicted face; set
    #: by the worker where the mask mode has seg-dst / seg-prd
    seg_dst: np.ndarray | None = None
    seg_prd: np.ndarray | None = None


def scaled(frame_to_crop: np.ndarray, res: int, face_scale: int) -> np.ndarray:
    """The crop transform for a face drawn `face_scale` % larger (smaller if negative)."""
    s = 1.0 + face_scale / 100.0
    c = (res - 1) / 2.0
    return np.vstack([frame_to_crop[0], frame_to_crop[1]]) / s + np.array(
        [[0, 0, c - c / s], [0, 0, c - c / s]])


def roi_of(frame_to_crop: np.ndarray, res: int, shape: tuple[int, ...],
           margin: float = 0.1) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the frame region the crop covers, grown by `margin`, clipped."""
    inv = cv2.invertAffineTransform(np.asarray(frame_to_crop, np.float64))
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


def _kernels(side: float, erode: int, blur: int) -> tuple[int, int]:
    """DeepFaceLab's erode and blur kernel sizes for a mask whose smaller side is `side`."""
    k_erode = int(side * (0.126 - side * 0.00004551365) * 0.01 * abs(erode)) if erode else 0
    k_blur = int(side * 0.10 * 0.01 * blur) if blur > 0 else 0
    return max(k_erode, 0), max(k_blur, 0)


def erode_blur(mask: np.ndarray, erode: int, blur: int) -> np.ndarray:
    """DeepFaceLab's relative erode and blur: sizes scale with the mask's smaller side, so a
    setting means the same on a small and a large face (its formulas)."""
    if not erode and blur <= 0:
        return mask
    ys, xs = np.nonzero(mask > 1 / 255)
    if not len(xs):
        return mask
    side = float(min(xs.max() - xs.min(), ys.max() - ys.min()) + 1)
    k_erode, k_blur = _kernels(side, erode, blur)
    out = mask
    if k_erode:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_erode, k_erode))
        out = (cv2.erode if erode > 0 else cv2.dilate)(out, kernel, iterations=1)
    if k_blur:
        # erode first by half the blur so the feather stays inside the face (as DFL does)
        inner = cv2.erode(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_blur, k_blur)))
        out = cv2.blur(inner, (2 * k_blur + 1, 2 * k_blur + 1))
    return np.clip(out, 0, 1)


def _seamless_mask(mask: np.ndarray) -> np.ndarray | None:
    """Binary clone mask: the mask above its lowest non-empty tenth (DFL)."""
    for i in range(1, 10):
        hard = mask > i / 10.0
        if hard.any():
            return hard.astype(np.uint8) * 255
    return None


def _seamless(face: np.ndarray, base: np.ndarray, mask: np.ndarray,
              edges: tuple[bool, bool, bool, bool] = (True, True, True, True)) -> np.ndarray:
    """`face` Poisson-cloned into `base` (same-size uint8 images) where mask is set: what
    cv2.seamlessClone(NORMAL_CLONE) at the clone region's centre makes (`_poisson_clone`).
    `edges` (left, top, right, bottom): which sides of the box are the ROI's, where the clone
    region must not touch the border."""
    hard = _seamless_mask(mask)
    if hard is None:
        return face
    left, top, right, bottom = edges
    if top:
        hard[0, :] = 0
    if bottom:
        hard[-1, :] = 0
    if left:
        hard[:, 0] = 0
    if right:
        hard[:, -1] = 0
    x, y, w, h = cv2.boundingRect(hard)
    if w < 3 or h < 3:
        return face
    return _poisson_clone(face, base, hard, (x, y, w, h))


def _dst(src: np.ndarray) -> np.ndarray:
    """-2 × the type-I discrete sine transform along the last axis of a 3-D float32 array
    (any strides): one real DFT of each row's odd extension, whose imaginary parts OpenCV
    packs at even indices (a view into its output)."""
    c, a, n = src.shape
    ext = np.empty((c, a, 2 * n + 2), np.float32)
    ext[..., 0] = 0
    ext[..., n + 1] = 0
    ext[..., 1:n + 1] = src
    np.negative(src[..., ::-1], out=ext[..., n + 2:])
    spectrum = cv2.dft(ext.reshape(c * a, 2 * n + 2), flags=cv2.DFT_ROWS)
    return spectrum.reshape(c, a, 2 * n + 2)[..., 2:2 * n + 1:2]


def _poisson_clone(face: np.ndarray, base: np.ndarray, hard: np.ndarray,
                   rect: tuple[int, int, int, int]) -> np.ndarray:
    """OpenCV's seamlessClone (NORMAL_CLONE, centred on `rect`, hard's bounding box) in about
    40 % of its time: the same guidance field (base's gradients, face's inside the clone mask
    eroded 3×), the same Dirichlet border (the rect's outer ring from `base`), the same
    sine-transform solution truncated to uint8, but the three channels in each transform,
    real DFTs and no per-channel copies. Within 1 grey level of OpenCV's float32 solve, on
    ~1 % of the pixels; the sizes OpenCV's DFT finds slow (large prime factors) stay slow."""
    x, y, w, h = rect
    d = np.stack(cv2.split(base[y:y + h, x:x + w])).astype(np.float32)  # 3 × h × w
    s = np.stack(cv2.split(face[y:y + h, x:x + w])).astype(np.float32)
    s *= hard[y:y + h, x:x + w] > 0  # the source outside the clone mask is 0, as in OpenCV
    inner = cv2.erode(hard, np.ones((3, 3), np.uint8), iterations=3,
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)[y:y + h, x:x + w]
    inner = (inner > 0).astype(np.float32)
    # the guidance field (forward differences: base's, face's inside `inner`) and its
    # divergence (backward differences) on the interior, along x, then along y
    grad = d[:, 1:-1, 1:] - d[:, 1:-1, :-1]
    field = s[:, 1:-1, 1:] - s[:, 1:-1, :-1]
    field -= grad
    field *= inner[1:-1, :-1]
    field += grad
    rhs = field[..., 1:] - field[..., :-1]
    grad = d[:, 1:, 1:-1] - d[:, :-1, 1:-1]
    field = s[:, 1:, 1:-1] - s[:, :-1, 1:-1]
    field -= grad
    field *= inner[:-1, 1:-1]
    field += grad
    rhs += field[:, 1:] - field[:, :-1]
    rhs[:, 0, :] -= d[:, 0, 1:-1]  # the fixed border ring, moved to the right-hand side
    rhs[:, -1, :] -= d[:, -1, 1:-1]
    rhs[:, :, 0] -= d[:, 1:-1, 0]
    rhs[:, :, -1] -= d[:, 1:-1, -1]
    ny, nx = h - 2, w - 2
    spectrum = _dst(_dst(rhs).transpose(0, 2, 1)) * _inverse_laplacian(nx, ny)  # 3 × nx × ny
    u = _dst(_dst(spectrum).transpose(0, 2, 1))  # 3 × ny × nx
    np.clip(u, 0, 255, out=u)
    out = base.copy()
    out[y + 1:y + h - 1, x + 1:x + w - 1] = cv2.merge([c.astype(np.uint8) for c in u])
    return out


def _inverse_laplacian(nx: int, ny: int) -> np.ndarray:
    """nx × ny factors taking the sine spectrum of a Laplacian to the sine spectrum (×4⁴
    for the four unscaled transforms) of its solution."""
    ex = 2 * np.cos(np.pi * np.arange(1, nx + 1) / (nx + 1)) - 2
    ey = 2 * np.cos(np.pi * np.arange(1, ny + 1) / (ny + 1)) - 2
    return (1.0 / ((ex[:, None] + ey[None, :]) * 4 * (nx + 1) * (ny + 1))).astype(np.float32)


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

    Returns (merged pixels uint8, their mask float32 [0, 1], the box x0, y0, x1, y1 they
    cover: the mask's bounding box, empty when the mask is). The caller writes them back;
    outside the mask they are the frame's pixels, exactly. The work is confined to that box
    (a third to half of the crop's area); what it makes is what the whole region made up to
    rounding (warps from another origin round their 1/32-pixel steps differently: ≥ 50 dB,
    99 % of the pixels within one grey level, tests/test_merge.py).
    """
    res = p.predicted.shape[0]
    out_mat = scaled(p.frame_to_crop, res, opts.face_scale)
    roi = _union(roi_of(out_mat, res, frame.shape), roi_of(p.frame_to_crop, res, frame.shape))
    up = 1 if enhance is None else 2  # an enhanced face is composed at twice the size
    face = face_in_crop(opts, p, enhance, up)
    mask, box = frame_mask(p, opts, face, out_mat, roi, mesher)
    x0, y0, x1, y1 = box
    size = (x1 - x0, y1 - y0)
    if not mask.size:
        return np.zeros((0, 0, 3), np.uint8), mask, box
    base = frame[y0:y1, x0:x1]
    face_frame = warp_to_frame(face, upscaled(to_roi(out_mat, x0, y0), up), size)
    np.clip(face_frame, 0, 1, out=face_frame)
    m3 = mask[..., None]
    if opts.mode == "raw":
        raw = face_frame * m3
        raw *= 255
        return raw.round().astype(np.uint8), mask, box
    base_f = base.astype(np.float32) / 255
    keep = 1 - m3  # base's weight
    result = face_frame
    if opts.mode in ("seamless", "seamless-hist-match"):
        pasted = (base_f * keep + face_frame * m3) * 255
        edges = (x0 == roi[0], y0 == roi[1], x1 == roi[2], y1 == roi[3])
        cloned = _seamless(pasted.round().astype(np.uint8), base, mask, edges)
        result = cloned.astype(np.float32) / 255
    if opts.color_degrade:  # its palette comes from the box: the face, little else
        result = color_degrade(result, opts.color_degrade)
    merged = base_f * keep
    merged += result * m3
    merged *= 255
    out = merged.round().astype(np.uint8)
    out = cv2.copyTo(base, (mask == 0).view(np.uint8), out)  # exactly the frame's there
    return out, mask, box


def frame_mask(p: Placed, opts: MergeOptions, face: np.ndarray, out_mat: np.ndarray,
               roi: tuple[int, int, int, int], mesher: Mesher | None
               ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The face's soft mask in the frame and its box (the bounding box of its nonzero
    pixels, within `roi`): the chosen parts multiplied, limited to the warped crop, then
    eroded and blurred. Computed only where it can be nonzero: the warped crop's box, cut
    to the dst hull's box when that is a part, grown by what erode and blur reach."""
    res = p.predicted.shape[0]
    up = face.shape[0] // res
    parts = opts.mask_parts
    box = _clip(roi_of(out_mat, res, (roi[3], roi[2]), margin=0), roi)
    if "dst" in parts:
        lo = np.floor(np.min(p.landmarks, axis=0)).astype(int) - 2  # + antialiasing
        hi = np.ceil(np.max(p.landmarks, axis=0)).astype(int) + 3
        box = _clip((int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])), box)
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), (x0, y0, x0, y0)
    size = (x1 - x0, y1 - y0)
    face_mat = to_roi(out_mat, x0, y0)
    # the warped crop's own area, and the learned mask through the same warp in one call
    ones = np.ones((res, res), np.float32)
    if "learned" in parts:
        learned = p.learned_mask if p.learned_mask is not None else hull_mask(
            _crop_points(p), (res, res))
        both = warp_to_frame(cv2.merge([learned.astype(np.float32), ones]), face_mat, size,
                             cubic=False)
        mask = np.clip(both[..., 0], 0, 1)
        area = both[..., 1]
    else:
        mask = np.ones(size[::-1], np.float32)
        area = warp_to_frame(ones, face_mat, size, cubic=False)
    if "prd" in parts:
        pts = mesher((face * 255).round().astype(np.uint8)) if mesher is not None else None
        prd = hull_mask(pts, (res * up, res * up)) if pts is not None else hull_mask(
            _crop_points(p) * up + (up - 1) / 2.0, (res * up, res * up))
        mask *= warp_to_frame(prd, upscaled(face_mat, up), size, cubic=False)
    if "dst" in parts:
        mask *= hull_mask(np.asarray(p.landmarks) - [x0, y0], size)
    for part, seg, mat in (("seg-dst", p.seg_dst, to_roi(p.frame_to_crop, x0, y0)),
                           ("seg-prd", p.seg_prd, face_mat)):
        if part in parts:  # each on its own face: dst's crop, the predicted face's place
            if seg is None:
                raise ValueError(f"the {part} mask was not computed for this face")
            mask *= warp_to_frame(seg, rescaled(mat, res, seg.shape[0]), size, cubic=False)
    # nothing beyond the warped crop's own area, whatever the parts say
    mask *= area > 0.999
    mask[mask < 1 / 255] = 0
    return _soften(mask, box, roi, opts.erode, opts.blur)


def _soften(mask: np.ndarray, box: tuple[int, int, int, int], roi: tuple[int, int, int, int],
            erode: int, blur: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """`erode_blur` of `mask` (covering `box`) as on the whole ROI: first grown with zeros
    by more than the kernels reach, so no border is ever seen; cut to the result's nonzero
    box."""
    nz = _nonzero_box(mask)
    if nz is None:
        return np.zeros((0, 0), np.float32), (box[0], box[1], box[0], box[1])
    x0, y0 = box[:2]
    if erode or blur > 0:
        side = float(min(nz[2] - nz[0], nz[3] - nz[1]))
        k_erode, k_blur = _kernels(side, erode, blur)
        pad = k_erode + k_blur + 3
        grown = _clip((x0 + nz[0] - pad, y0 + nz[1] - pad, x0 + nz[2] + pad, y0 + nz[3] + pad),
                      roi)
        room = np.zeros((grown[3] - grown[1], grown[2] - grown[0]), np.float32)
        top, left = y0 + nz[1] - grown[1], x0 + nz[0] - grown[0]
        room[top:top + nz[3] - nz[1], left:left + nz[2] - nz[0]] = mask[nz[1]:nz[3],
                                                                        nz[0]:nz[2]]
        mask, (x0, y0) = erode_blur(room, erode, blur), grown[:2]
        nz = _nonzero_box(mask)
        if nz is None:
            return np.zeros((0, 0), np.float32), (x0, y0, x0, y0)
    return (mask[nz[1]:nz[3], nz[0]:nz[2]],
            (x0 + nz[0], y0 + nz[1], x0 + nz[2], y0 + nz[3]))


def _nonzero_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 (exclusive) of mask's nonzero pixels, None when there are none."""
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(cols):
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _clip(box: tuple[int, int, int, int], limit: tuple[int, int, int, int]
          ) -> tuple[int, int, int, int]:
    """`box` inside `limit` (possibly empty: x1 <= x0 or y1 <= y0)."""
    return (max(box[0], limit[0]), max(box[1], limit[1]),
            min(box[2], limit[2]), min(box[3], limit[3]))


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])
