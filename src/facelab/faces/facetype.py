"""Face types and the alignment that cuts a face out of a frame.

A face type says how much of the head an aligned face shows. As in DeepFaceLab, the
landmarks of the eyebrows, nose, eyes and mouth corners (points 17–48 and 54, iBUG order)
are fitted by a similarity transform to a mean face whose those points span the unit
square; the crop is that square, centred where it lies and enlarged by the type's padding:
half-diagonal = diagonal × (padding·√2 + 0.5).

| type       | padding | centre                                   | shows                        |
|------------|---------|------------------------------------------|------------------------------|
| half       | 0.0     | square centre                            | eyebrows to mouth            |
| mid-full   | 0.0675  | square centre                            | a little more than half      |
| full       | 0.2109  | square centre                            | the face, chin to eyebrows   |
| whole-face | 0.40    | 7 % of the square's side toward the brow | face with forehead and ears  |
| head       | 0.70    | 50 % up, shifted sideways with the yaw   | the whole head and hair      |

The mean face is ours: the symmetrised Procrustes mean of dlib's 68 points on the GRID
clips (`tools/mean_face.py` rebuilds it), not DeepFaceLab's table.
"""

from __future__ import annotations

import math
from enum import StrEnum

import cv2
import numpy as np

from facelab.errors import FacelabError


class FaceType(StrEnum):
    HALF = "half"
    MID_FULL = "mid-full"
    FULL = "full"
    WHOLE_FACE = "whole-face"
    HEAD = "head"

    @classmethod
    def parse(cls, text: str) -> FaceType:
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise FacelabError(f"Unknown face type {text!r}: choose {names}.") from None


PADDING = {FaceType.HALF: 0.0, FaceType.MID_FULL: 0.0675, FaceType.FULL: 0.2109375,
           FaceType.WHOLE_FACE: 0.40, FaceType.HEAD: 0.70}
#: How far the crop centre moves toward the forehead, in sides of the unit square.
CENTRE_UP = {FaceType.WHOLE_FACE: 0.07, FaceType.HEAD: 0.50}

#: Points fitted to the mean face (eyebrows, nose, eyes, mouth corners: stable under speech).
FIT_POINTS = [*range(17, 49), 54]

#: Mean face, 68 iBUG points (x right, y down); the 51 inner points (17–67) span
#: x 0–0.98, y 0.019–0.909 of the unit square, as in DeepFaceLab's face types.
MEAN_FACE_68 = np.array([
    [-0.0914, 0.2910], [-0.0762, 0.4403], [-0.0568, 0.5883], [-0.0372, 0.7389],
    [0.0032, 0.8812], [0.0806, 1.0060], [0.1916, 1.1080], [0.3279, 1.1832], [0.4900, 1.2083],
    [0.6521, 1.1832], [0.7884, 1.1080], [0.8994, 1.0060], [0.9768, 0.8812], [1.0172, 0.7389],
    [1.0368, 0.5883], [1.0562, 0.4403], [1.0714, 0.2910], [0.0000, 0.1196], [0.0678, 0.0434],
    [0.1733, 0.0190], [0.2854, 0.0346], [0.3890, 0.0751], [0.5910, 0.0751], [0.6946, 0.0346],
    [0.8067, 0.0190], [0.9122, 0.0434], [0.9800, 0.1196], [0.4900, 0.1886], [0.4900, 0.2810],
    [0.4900, 0.3735], [0.4900, 0.4712], [0.3708, 0.5689], [0.4283, 0.5885], [0.4900, 0.6026],
    [0.5517, 0.5885], [0.6092, 0.5689], [0.1203, 0.2261], [0.1824, 0.1873], [0.2635, 0.1854],
    [0.3357, 0.2302], [0.2618, 0.2505], [0.1801, 0.2538], [0.6443, 0.2302], [0.7165, 0.1854],
    [0.7976, 0.1873], [0.8597, 0.2261], [0.7999, 0.2538], [0.7182, 0.2505], [0.2777, 0.8134],
    [0.3522, 0.7607], [0.4334, 0.7310], [0.4900, 0.7457], [0.5466, 0.7310], [0.6278, 0.7607],
    [0.7023, 0.8134], [0.6298, 0.8742], [0.5512, 0.9022], [0.4900, 0.9090], [0.4288, 0.9022],
    [0.3502, 0.8742], [0.3157, 0.8116], [0.4329, 0.7850], [0.4900, 0.7895], [0.5471, 0.7850],
    [0.6643, 0.8116], [0.5473, 0.8285], [0.4900, 0.8346], [0.4327, 0.8285],
], dtype=np.float64)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 similarity (rotation, uniform scale, shift) mapping src onto dst in the
    least-squares sense (Umeyama 1991), reflection excluded."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    var = (s**2).sum() / len(src)
    scale = float((sig * np.diag(fix)).sum() / var) if var > 0 else 1.0
    mat = np.zeros((2, 3))
    mat[:, :2] = scale * rot
    mat[:, 2] = mu_d - scale * rot @ mu_s
    return mat


def transform_points(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return pts @ mat[:, :2].T + mat[:, 2]


def invert(mat: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(mat, np.float64))


def face_transform(landmarks68: np.ndarray, face_type: FaceType | str, size: int,
                   yaw_deg: float = 0.0) -> np.ndarray:
    """The 2×3 transform from frame pixels to a `size`² aligned face of `face_type`."""
    face_type = FaceType(face_type)
    lm = np.asarray(landmarks68, np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise ValueError("landmarks68 must be 68 finite (x, y) points")
    to_unit = similarity_fit(lm[FIT_POINTS], MEAN_FACE_68[FIT_POINTS])
    to_frame = invert(to_unit)
    corners = transform_points(np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]]),
                               to_frame)
    side = float(np.linalg.norm(corners[1] - corners[0]))
    across = (corners[1] - corners[0]) / max(side, 1e-9)  # unit vector along the eye line
    up = (corners[0] - corners[3]) / max(side, 1e-9)  # unit vector toward the forehead
    centre = corners[4] + up * side * CENTRE_UP.get(face_type, 0.0)
    if face_type is FaceType.HEAD:
        yaw = math.radians(yaw_deg)
        centre -= across * side * 0.5 * yaw * abs(math.tanh(2 * yaw))  # the back of the head
    # half-diagonal = diagonal · (padding·√2 + 0.5), so half a side is side · (that)
    half_side = side * (PADDING[face_type] * math.sqrt(2) + 0.5)
    src = np.array([centre - across * half_side + up * half_side,   # top-left
                    centre + across * half_side + up * half_side,   # top-right
                    centre + across * half_side - up * half_side],  # bottom-right
                   np.float64)
    dst = np.array([[0, 0], [size, 0], [size, size]], np.float64)
    return np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # exact, in float64


def crop_face(frame: np.ndarray, frame_to_face: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned face out of `frame` (edges replicated where the crop leaves it)."""
    return cv2.warpAffine(frame, frame_to_face, (size, size), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
