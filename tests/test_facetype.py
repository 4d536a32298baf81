"""Face types: the crop geometry each type promises, and exact point round trips."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.faces.facetype import (
    FIT_POINTS,
    MEAN_FACE_68,
    FaceType,
    face_transform,
    invert,
    similarity_fit,
    transform_points,
)


def frame_landmarks(angle_deg: float = 0.0, scale: float = 120.0,
                    shift: tuple[float, float] = (300, 200)) -> np.ndarray:
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (MEAN_FACE_68 - 0.5) @ rot.T * scale + np.array(shift)


def test_similarity_fit_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(40, 2)) * 50
    a, s, t = math.radians(23), 1.7, np.array([12.0, -40.0])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    moved = pts @ rot.T * s + t
    mat = similarity_fit(pts, moved)
    assert np.allclose(transform_points(pts, mat), moved, atol=1e-9)


@pytest.mark.parametrize("face_type", list(FaceType))
@pytest.mark.parametrize("angle", [0.0, 17.0, -35.0])
def test_crop_is_upright_and_round_trips(face_type, angle):
    lm = frame_landmarks(angle)
    mat = face_transform(lm, face_type, 256)
    face = transform_points(lm, mat)
    # the eye line is horizontal in the aligned face whatever the head's roll
    left, right = face[36:42].mean(0), face[42:48].mean(0)
    assert abs(left[1] - right[1]) < 1e-6 and right[0] > left[0]
    # face -> frame maps back within a pixel
    back = transform_points(face, invert(mat))
    assert np.abs(back - lm).max() < 1e-6


def test_types_nest_from_tight_to_wide():
    lm = frame_landmarks()
    spans = []
    for t in [FaceType.HALF, FaceType.MID_FULL, FaceType.FULL, FaceType.WHOLE_FACE,
              FaceType.HEAD]:
        face = transform_points(lm, face_transform(lm, t, 256))
        spans.append(face[FIT_POINTS, 0].max() - face[FIT_POINTS, 0].min())
    assert all(a > b for a, b in itertools.pairwise(spans))


def test_expected_geometry_per_type():
    lm = frame_landmarks()
    size = 256

    def face(t: FaceType) -> np.ndarray:
        return transform_points(lm, face_transform(lm, t, size))

    half = face(FaceType.HALF)
    # half face: the inner points fill the square from the brows to below the lower lip
    assert half[17:27, 1].min() == pytest.approx(0.019 * size, abs=1.0)
    assert half[57, 1] == pytest.approx(0.909 * size, abs=1.0)
    full = face(FaceType.FULL)
    # full face: the chin is inside, the outer jaw near the edges
    assert 0.85 * size < full[8, 1] < size
    assert full[0, 0] > 0 and full[16, 0] < size
    whole = face(FaceType.WHOLE_FACE)
    # whole face: room above the brows for the forehead (more than full face leaves)
    assert whole[19, 1] > full[19, 1] and whole[8, 1] < 0.9 * size
    head = face(FaceType.HEAD)
    assert head[19, 1] > 0.4 * size  # half of the crop above the brows: hair and skull


def test_head_shifts_with_yaw():
    lm = frame_landmarks()
    centre = transform_points(lm, face_transform(lm, "head", 256, yaw_deg=0))[30, 0]
    turned = transform_points(lm, face_transform(lm, "head", 256, yaw_deg=40))[30, 0]
    assert abs(turned - centre) > 10


def test_unknown_face_type():
    with pytest.raises(FacelabError, match="half, mid-full, full, whole-face, head"):
        FaceType.parse("chin")
