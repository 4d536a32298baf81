"""The face-region label of an aligned face, from its own metadata.

The label is what the segmenter learns before occluders are subtracted: the face up to the
hairline. With a FaceMesh mesh (what extraction stores by default) it is the convex hull of
the mesh's 468 face vertices (the iris points lie inside): the outer oval reaches the
hairline at the top and follows the jaw, and on a turned head the hull also takes the nose's
silhouette, which an ordered oval polygon would cut. Without a mesh (dlib landmarks,
imported DeepFaceLab faces) the 68-point hull is extended over the forehead: the eyebrow
points are moved away from the chin by `FOREHEAD` of the chin-to-brow height, a factor
measured against the mesh hull on 333 GRID, Pexels and still faces (tools/train_segmenter.py
--calibrate: mean IoU 0.948 at 0.17, 0.821 for the plain 68-point hull).

`hull68_mask` is the plain 68-point hull, merge's `dst` mask: the baseline the segmenter
is compared against.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelab.faces.facemeta import FaceMeta

MESH_FACE_VERTICES = 468  # FaceMesh's face; 468–477 are the irises (refinement)
BROWS = slice(17, 27)
CHIN = 8
FOREHEAD = 0.17  # brow points move this fraction of the chin-to-brow height upward (measured)
SUBPIXEL = 4  # bits of fixed point for OpenCV's anti-aliased fills


def fill_hull(points: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased filled convex hull of `points` (N×2, pixels) as a float32 size² mask."""
    mask = np.zeros((size, size), np.uint8)
    pts = np.round(np.asarray(points, np.float64)[:, :2] * (1 << SUBPIXEL)).astype(np.int32)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts), 255, lineType=cv2.LINE_AA, shift=SUBPIXEL)
    return mask.astype(np.float32) / 255


def mesh_label(mesh: np.ndarray, size: int) -> np.ndarray:
    """The face to the hairline: the hull of the mesh's face vertices (pixels, size²)."""
    return fill_hull(np.asarray(mesh)[:MESH_FACE_VERTICES, :2], size)


def forehead_points(landmarks: np.ndarray, factor: float = FOREHEAD) -> np.ndarray:
    """The eyebrow points moved up the face (away from the chin) by `factor` of the
    chin-to-brow height: a stand-in for the hairline when no mesh is known."""
    lm = np.asarray(landmarks, np.float64)
    brows = lm[BROWS]
    up = brows.mean(0) - lm[CHIN]
    return brows + up * factor


def landmarks_label(landmarks: np.ndarray, size: int, factor: float = FOREHEAD) -> np.ndarray:
    """The 68-point hull with the forehead added (no mesh), float32 size²."""
    lm = np.asarray(landmarks, np.float64)
    return fill_hull(np.vstack([lm, forehead_points(lm, factor)]), size)


def hull68_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The plain 68-point hull (chin to eyebrows), float32 size²: the baseline."""
    return fill_hull(landmarks, size)


def face_label(meta: FaceMeta, size: int | None = None) -> np.ndarray:
    """The face-region label of an aligned face at `size`² (default: the face's own size),
    float32 in [0, 1] with anti-aliased edges: the mesh hull, or the 68-point hull with
    the forehead extended when the face has no mesh."""
    size = int(size or meta.size)
    scale = size / meta.size
    if meta.mesh is not None and len(meta.mesh) >= MESH_FACE_VERTICES:
        return mesh_label(np.asarray(meta.mesh)[:, :2] * scale, size)
    return landmarks_label(np.asarray(meta.landmarks) * scale, size)
