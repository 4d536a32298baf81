"""Pose and expression descriptors of aligned faces, from their FaceMesh mesh.

Retrieval needs a few numbers that say how a face is turned and what it is doing, so that a
dst face that blinks or opens its mouth finds src faces that do too. They come from the
478-point mesh the extractor stores in each aligned face (`FaceMeta.mesh`, aligned-face
pixels, z in the same units), measured in 3-D so that a turned head does not look like a
narrowed eye:

| feature | what | unit |
|---|---|---|
| yaw, pitch | head pose from the extraction (`FaceMeta`) | degrees |
| roll | the tilt left in the crop (outer eye corners' line) | degrees |
| mouth | inner-lip gap / inner mouth width | ratio, 0 closed … ~0.5 wide open |
| eye_left, eye_right | eyelid gap / eye width (image's left / right eye) | ~0.35 open, <0.1 shut |
| gaze_x, gaze_y | iris centre off the eye's centre / eye width, both eyes' mean | ratio |

Indices are MediaPipe FaceMesh's; "left" is the image's left (the subject's right eye).
They were checked on GRID: the mouth ratio follows the 68-point inner-lip gap (r > 0.99)
and the eye ratios drop from ~0.37 to ~0.06 on the clips' blinks. `SCALES` says how much of
each feature counts as one unit of distance, so pose and expression both weigh.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facelab.errors import FacelabError
from facelab.faces.facemeta import FaceMeta

FEATURES = ("yaw", "pitch", "roll", "mouth", "eye_left", "eye_right", "gaze_x", "gaze_y")
#: One unit of descriptor distance per feature: 10° of pose weighs as much as 0.1 of mouth
#: or eye openness (a blink moves each eye by ~0.3, speech moves the mouth by up to ~0.45).
SCALES = np.array([10.0, 10.0, 10.0, 0.1, 0.1, 0.1, 0.15, 0.15])

MESH_POINTS = 478  # FaceMesh with irises; 468 (no irises) gives gaze 0
MIN_MESH_POINTS = 468

#: Eyes: (outer, inner) corners and (upper, lower) lid pairs along the opening.
EYE_LEFT_CORNERS = (33, 133)
EYE_LEFT_LIDS = ((160, 144), (159, 145), (158, 153))
EYE_RIGHT_CORNERS = (263, 362)
EYE_RIGHT_LIDS = ((387, 373), (386, 374), (385, 380))
#: The whole lid contours, outer to inner corner (the upper[i] above lower[i]).
EYE_LEFT_UPPER = (246, 161, 160, 159, 158, 157, 173)
EYE_LEFT_LOWER = (7, 163, 144, 145, 153, 154, 155)
EYE_RIGHT_UPPER = (466, 388, 387, 386, 385, 384, 398)
EYE_RIGHT_LOWER = (249, 390, 373, 374, 380, 381, 382)
IRIS_LEFT = tuple(range(468, 473))  # centre first
IRIS_RIGHT = tuple(range(473, 478))
#: Mouth: inner corners and (upper, lower) inner-lip pairs.
MOUTH_CORNERS = (78, 308)
MOUTH_LIPS = ((82, 87), (13, 14), (312, 317))


def _dist(mesh: np.ndarray, a: int | Sequence[int], b: int | Sequence[int]) -> np.ndarray:
    return np.linalg.norm(mesh[..., a, :] - mesh[..., b, :], axis=-1)


def _opening(mesh: np.ndarray, corners: tuple[int, int],
             pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    up, lo = zip(*pairs, strict=True)
    gap = _dist(mesh, list(up), list(lo)).mean(-1)
    return gap / np.maximum(_dist(mesh, *corners), 1e-6)


def _gaze(mesh: np.ndarray) -> np.ndarray:
    """Iris centre off each eye's corner midpoint, over the eye's width, both eyes' mean."""
    if mesh.shape[-2] < MESH_POINTS:
        return np.zeros((*mesh.shape[:-2], 2))
    out = 0.0
    for corners, iris in ((EYE_LEFT_CORNERS, IRIS_LEFT[0]), (EYE_RIGHT_CORNERS, IRIS_RIGHT[0])):
        a, b = mesh[..., corners[0], :2], mesh[..., corners[1], :2]
        width = np.maximum(np.linalg.norm(b - a, axis=-1, keepdims=True), 1e-6)
        out = out + (mesh[..., iris, :2] - (a + b) / 2) / width
    return out / 2


def describe(meshes: np.ndarray, yaw: np.ndarray | float, pitch: np.ndarray | float) -> np.ndarray:
    """Descriptors (…×F, `FEATURES` order) of meshes (…×N×3, aligned-face coordinates) with
    their head pose in degrees. Works on one mesh or a stack; also on a target mesh made by
    `geometry.target_mesh`, which is how a dst face is put to the src index."""
    m = np.asarray(meshes, np.float64)
    if m.ndim < 2 or m.shape[-1] != 3 or m.shape[-2] < MIN_MESH_POINTS:
        raise ValueError(f"meshes must be …×N×3 with N ≥ {MIN_MESH_POINTS}, not {m.shape}")
    d = m[..., EYE_RIGHT_CORNERS[0], :2] - m[..., EYE_LEFT_CORNERS[0], :2]
    roll = np.degrees(np.arctan2(d[..., 1], d[..., 0]))
    shape = roll.shape
    return np.stack([
        np.broadcast_to(np.asarray(yaw, np.float64), shape),
        np.broadcast_to(np.asarray(pitch, np.float64), shape),
        roll,
        _opening(m, MOUTH_CORNERS, MOUTH_LIPS),
        _opening(m, EYE_LEFT_CORNERS, EYE_LEFT_LIDS),
        _opening(m, EYE_RIGHT_CORNERS, EYE_RIGHT_LIDS),
        *np.moveaxis(_gaze(m), -1, 0),
    ], axis=-1)


def meshes_of(metas: Sequence[FaceMeta], names: Sequence[str] | None = None) -> np.ndarray:
    """The faces' meshes as one K×N×3 stack; a face without a FaceMesh mesh (dlib
    landmarks, a DeepFaceLab import) is one FacelabError naming it and the fix."""
    out = []
    for i, meta in enumerate(metas):
        mesh = meta.mesh
        if mesh is None or mesh.ndim != 2 or mesh.shape[0] < MIN_MESH_POINTS:
            name = names[i] if names else meta.original_name or meta.source_filename
            raise FacelabError(
                f"Face {name} has no FaceMesh mesh, which meshswap needs: extract the faces "
                "again with the mesh landmarker (facelab extract).")
        out.append(mesh[:MESH_POINTS] if len(mesh) >= MESH_POINTS else mesh[:MIN_MESH_POINTS])
    if len({len(m) for m in out}) > 1:  # some with irises, some without: use the common part
        out = [m[:MIN_MESH_POINTS] for m in out]
    return np.stack(out) if out else np.zeros((0, MESH_POINTS, 3))


def describe_faces(metas: Sequence[FaceMeta], names: Sequence[str] | None = None) -> np.ndarray:
    """Descriptors (K×F) of aligned faces from their metadata (`faceimage.read_meta`)."""
    meshes = meshes_of(metas, names)
    if not len(meshes):
        return np.zeros((0, len(FEATURES)))
    yaw = np.array([m.yaw for m in metas], np.float64)
    pitch = np.array([m.pitch for m in metas], np.float64)
    return describe(meshes, yaw, pitch)
