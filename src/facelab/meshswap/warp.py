"""Piecewise-affine warps of face images from one mesh to another, and candidate blending.

The output plane is cut into triangles once per target (`plan_warp`: a Delaunay
triangulation of the target's 2-D mesh points plus a frame of border points, so every
output pixel has a triangle, and a raster of which triangle owns each pixel). Warping an
image (`warp`) is then one affine per triangle, solved for all at once, gathered into a
per-pixel sampling map and one `cv2.remap`: a few milliseconds for a 256-px face on one
core, the same cost however many triangles, and candidates warped onto one target share
the plan. Triangulating the *target* means the output never has holes or overlaps, even
where the source mesh folds (a shut eyelid), which there only repeats source pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BORDER_STEPS = 4  # border points per side of the frame
SUBPIXEL_BITS = 4  # triangle raster precision: 1/16 px


@dataclass(frozen=True)
class WarpPlan:
    """A target's triangulation and its raster, for warping any number of images onto it."""

    size: tuple[int, int]  # output height, width
    points: np.ndarray  # P×2 target points: the mesh's, then the border's
    triangles: np.ndarray  # T×3 indices into points
    owner: np.ndarray  # H×W int32: the triangle each output pixel lies in, −1 none

    @property
    def mesh_points(self) -> int:
        return len(self.points) - 4 * BORDER_STEPS


def border_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame of points around the image and every mesh point (a margin of 2 px), which
    the warp keeps in place: the face moves, and the movement fades out toward the edges."""
    h, w = size
    lo = np.minimum(points.min(0), 0) - 2
    hi = np.maximum(points.max(0), (w - 1, h - 1)) + 2
    t = np.linspace(0, 1, BORDER_STEPS, endpoint=False)
    x0, y0, x1, y1 = lo[0], lo[1], hi[0], hi[1]
    top = np.c_[x0 + t * (x1 - x0), np.full_like(t, y0)]
    right = np.c_[np.full_like(t, x1), y0 + t * (y1 - y0)]
    bottom = np.c_[x1 - t * (x1 - x0), np.full_like(t, y1)]
    left = np.c_[np.full_like(t, x0), y1 - t * (y1 - y0)]
    return np.concatenate([top, right, bottom, left])


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (T×3 indices) of 2-D points, by OpenCV's Subdiv2D; points that
    coincide share their first index."""
    p = np.ascontiguousarray(points, np.float32)
    lo, hi = np.floor(p.min(0)) - 1, np.ceil(p.max(0)) + 1
    sub = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]) + 1,
                        int(hi[1] - lo[1]) + 1))
    sub.insert(p.tolist())
    corners = np.ascontiguousarray(sub.getTriangleList(), np.float32).reshape(-1, 2)
    # Back from coordinates to indices: each (x, y) float32 pair read as one 64-bit key.
    keys = p.view(np.uint64).ravel()
    order = np.argsort(keys, kind="stable")  # stable: a repeated point maps to its first
    sorted_keys = keys[order]
    want = corners.view(np.uint64).ravel()
    at = np.minimum(np.searchsorted(sorted_keys, want), len(keys) - 1)
    found = sorted_keys[at] == want  # the outer virtual vertices are no point of ours
    tris = np.where(found, order[at], -1).reshape(-1, 3)
    return tris[(tris >= 0).all(1)]


def rasterise(points: np.ndarray, triangles: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H×W int32: which triangle owns each pixel centre (−1 none), all triangles at once.
    Each triangle's rows are cut into spans (pixel x with left ≤ x < right), each row's
    span starts are marked and carried rightwards, so float slivers between neighbours go
    to the left one: no pixel inside the triangulation is left without a triangle."""
    h, w = size
    v = points[triangles]  # T×3×2
    v = np.take_along_axis(v, np.argsort(v[..., 1], axis=1, kind="stable")[..., None], 1)
    y0, y1, y2 = np.ceil(v[:, 0, 1]), np.ceil(v[:, 1, 1]), np.ceil(v[:, 2, 1])
    first, last = np.clip(y0, 0, h), np.clip(y2, 0, h)  # rows first ≤ y < last
    rows = (last - first).astype(np.int64)
    tri = np.repeat(np.arange(len(v)), rows)
    y = first[tri] + (np.arange(rows.sum()) - np.repeat(np.cumsum(rows) - rows, rows))

    def edge_x(a: int, b: int) -> np.ndarray:  # x where edge a→b (a above b) crosses row y
        pa, pb = v[tri, a], v[tri, b]
        dy = pb[:, 1] - pa[:, 1]
        t = np.divide(y - pa[:, 1], dy, out=np.zeros_like(dy), where=dy != 0)
        return pa[:, 0] + t * (pb[:, 0] - pa[:, 0])

    long_x = edge_x(0, 2)
    short_x = np.where(y < y1[tri], edge_x(0, 1), edge_x(1, 2))
    left = np.clip(np.ceil(np.minimum(long_x, short_x)), 0, w)
    right = np.clip(np.ceil(np.maximum(long_x, short_x)), 0, w)
    keep = left < right
    starts = np.full((h, w + 1), -1, np.int32)
    starts[y[keep].astype(np.int64), left[keep].astype(np.int64)] = tri[keep]
    col = np.where(starts[:, :w] >= 0, np.arange(w), 0)
    np.maximum.accumulate(col, axis=1, out=col)
    return np.take_along_axis(starts, col, 1)


def plan_warp(target: np.ndarray, size: int | tuple[int, int]) -> WarpPlan:
    """The plan for warping onto target mesh points (N×2 or N×3, x and y used) in an
    output of `size` (side, or height and width)."""
    h, w = (size, size) if isinstance(size, int) else size
    mesh = np.asarray(target, np.float64)[:, :2]
    pts = np.concatenate([mesh, border_points(mesh, (h, w))])
    tris = triangulate(pts)
    return WarpPlan((h, w), pts, tris, rasterise(pts, tris, (h, w)))


def _affines(plan: WarpPlan, source: np.ndarray) -> np.ndarray:
    """(T+1)×6: each triangle's affine from output (target) to source coordinates, row-major
    2×3, then the identity (for pixels no triangle owns)."""
    t, s = plan.points[plan.triangles], source[plan.triangles]  # T×3×2
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    f1, f2 = s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    flat = np.abs(det) < 1e-9  # no area: owns no pixel
    inv = 1.0 / np.where(flat, 1.0, det)
    # L = [f1 f2] · [e1 e2]⁻¹ (columns), the linear part; then the shift puts t0 on s0.
    i00, i01, i10, i11 = e2[:, 1] * inv, -e2[:, 0] * inv, -e1[:, 1] * inv, e1[:, 0] * inv
    a = f1[:, 0] * i00 + f2[:, 0] * i10
    b = f1[:, 0] * i01 + f2[:, 0] * i11
    c = f1[:, 1] * i00 + f2[:, 1] * i10
    d = f1[:, 1] * i01 + f2[:, 1] * i11
    a, b, c, d = (np.where(flat, ident, x) for x, ident in ((a, 1), (b, 0), (c, 0), (d, 1)))
    tx = s[:, 0, 0] - a * t[:, 0, 0] - b * t[:, 0, 1]
    ty = s[:, 0, 1] - c * t[:, 0, 0] - d * t[:, 0, 1]
    out = np.stack([a, b, tx, c, d, ty], 1)
    return np.concatenate([out, [[1, 0, 0, 0, 1, 0]]])


def sampling_map(plan: WarpPlan, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel, where to read the source image (float32 maps for cv2.remap)."""
    if len(source) != plan.mesh_points:
        raise ValueError(f"source has {len(source)} points, the plan's target "
                         f"{plan.mesh_points}")
    src = np.concatenate([np.asarray(source, np.float64)[:, :2],
                          plan.points[plan.mesh_points:]])
    h, w = plan.size
    m = _affines(plan, src).astype(np.float32)[plan.owner]  # H×W×6; −1 takes the identity
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)[:, None]
    map_x = m[..., 0] * xs + m[..., 1] * ys + m[..., 2]
    map_y = m[..., 3] * xs + m[..., 4] * ys + m[..., 5]
    return map_x, map_y


def warp(image: np.ndarray, source: np.ndarray, plan: WarpPlan) -> np.ndarray:
    """image, whose mesh is `source` (N×2 or N×3), moved so that its mesh lies on the plan's
    target; same dtype and channels, the plan's size."""
    map_x, map_y = sampling_map(plan, source)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def face_mask(points: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """uint8 mask (255 inside) of the convex hull of mesh points: the face region."""
    h, w = (size, size) if isinstance(size, int) else size
    mask = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(points)[:, :2] * (1 << SUBPIXEL_BITS))
                          .astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return mask


def blend(images: list[np.ndarray] | np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean of images warped onto one target (weights normalised here), in the
    images' dtype: several src faces together hide one's blur or odd lighting."""
    stack = np.asarray(images)
    w = np.asarray(weights, np.float64).reshape(-1)
    if len(w) != len(stack) or not len(w) or w.min() < 0 or w.sum() <= 0:
        raise ValueError("blend needs one non-negative weight per image, not all zero")
    out = np.tensordot((w / w.sum()).astype(np.float32), stack.astype(np.float32), axes=1)
    if np.issubdtype(stack.dtype, np.integer):
        info = np.iinfo(stack.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(stack.dtype)
    return out.astype(stack.dtype)


def warp_candidates(images: list[np.ndarray], sources: list[np.ndarray], target: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
    """Each candidate src face warped from its mesh onto the target mesh, blended by weight;
    the output has the first image's size (all aligned crops of one size)."""
    plan = plan_warp(target, images[0].shape[:2])
    return blend([warp(im, src, plan) for im, src in zip(images, sources, strict=True)],
                 weights)
