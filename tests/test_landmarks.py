"""Landmarks and head pose on real faces: FaceMesh → 68 against dlib's predictor, pose signs
checked on Pexels frames looked at by eye, flip and rotation invariances.

Bounds are the measured worst cases with a margin (tools/mesh_to_68.py, docs): GRID per-frame
mean error ≤ 0.036 inter-ocular distances, GRID |yaw| ≤ 5.4°, |pitch| ≤ 10.6°, |roll| ≤ 3.4°.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.faces import landmarks as lmod
from facelab.faces.landmarks import create_landmarker
from tests.conftest import data_file

dlib = pytest.importorskip("dlib", reason="dlib-bin is the optional reference extra")
pytest.importorskip("mediapipe", reason="mediapipe is needed for the mesh landmarker")

GRID = ["speaker_a_1", "speaker_a_2", "speaker_b", "speaker_c", "speaker_d"]
#: Pexels frames checked by eye: turned to the image's left / right, looking down / up,
#: head tilted counter-clockwise / clockwise.
TURN_LEFT, TURN_RIGHT, LOOK_DOWN, LOOK_UP, TILT_CCW, TILT_CW = 159, 395, 90, 309, 405, 459


def frames(rel: str, step: int = 1) -> list[np.ndarray]:
    with av.open(str(data_file(rel))) as box:
        return [np.ascontiguousarray(f.to_ndarray(format="bgr24"))
                for i, f in enumerate(box.decode(video=0)) if i % step == 0]


_HOG: list = []


def hog_box(image: np.ndarray) -> tuple[float, float, float, float]:
    if not _HOG:
        _HOG.append(dlib.get_frontal_face_detector())
    rects = _HOG[0](np.ascontiguousarray(image[:, :, ::-1]), 0)
    assert rects, "dlib HOG found no face"
    r = max(rects, key=lambda r: r.area())
    return (r.left(), r.top(), r.right(), r.bottom())


def iod(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[36] - points[45]))


@pytest.fixture(scope="module")
def mesh():
    lm = create_landmarker("mesh")
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def ref():
    if lmod.dlib_model_path() is None:
        pytest.skip("face-recognition-models (dlib's 68-point model) is not installed")
    return create_landmarker("dlib")


@pytest.fixture(scope="module")
def grid() -> list[tuple[str, np.ndarray, tuple[float, float, float, float]]]:
    out = []
    for name in GRID:
        for img in frames(f"grid/{name}.mpg", step=4):
            out.append((name, img, hog_box(img)))
    return out


@pytest.fixture(scope="module")
def pexels() -> list[np.ndarray]:
    return frames("pexels/woman_pose_variety.mp4")


@pytest.mark.slow
def test_grid_points_in_box_and_close_to_dlib(mesh, ref, grid):
    errors: dict[str, list[float]] = {n: [] for n in GRID}
    for name, img, box in grid:
        got = mesh.fit(img, box)
        assert got is not None, name
        assert got.points68.shape == (68, 2) and got.mesh is not None
        assert got.mesh.shape == (478, 3) and np.isfinite(got.mesh).all()
        x0, y0, x1, y1 = box
        pad = 0.25 * (x1 - x0)  # measured worst: 0.14 box sides outside dlib's tight box
        p = got.points68
        assert (p[:, 0] > x0 - pad).all() and (p[:, 0] < x1 + pad).all(), name
        assert (p[:, 1] > y0 - pad).all() and (p[:, 1] < y1 + pad).all(), name
        d = ref.fit(img, box).points68
        errors[name].append(float(np.linalg.norm(p - d, axis=1).mean() / iod(d)))
    for name, errs in errors.items():
        assert max(errs) < 0.05, (name, max(errs))  # measured ≤ 0.036
        assert np.mean(errs) < 0.035, (name, np.mean(errs))  # measured ≤ 0.030


@pytest.mark.slow
def test_grid_pose_near_frontal(mesh, ref, grid):
    for name, img, box in grid:
        m, d = mesh.fit(img, box), ref.fit(img, box)
        assert abs(m.yaw) < 8 and abs(m.pitch) < 14 and abs(m.roll) < 6, (name, m)
        assert abs(d.yaw) < 12 and abs(d.pitch) < 14 and abs(d.roll) < 6, (name, d.yaw)


@pytest.mark.slow
def test_pexels_pose_signs(mesh, ref, pexels):
    def fit(model, i: int):
        return model.fit(pexels[i], hog_box(pexels[i]))

    for model in (mesh, ref):
        assert fit(model, TURN_LEFT).yaw < -8 < 8 < fit(model, TURN_RIGHT).yaw, model.name
        assert fit(model, TILT_CCW).roll < -15 < 15 < fit(model, TILT_CW).roll, model.name
    # pitch from the mesh only: from 2D points it is weak (dlib says −4° looking down)
    assert fit(mesh, LOOK_DOWN).pitch < -7 < 10 < fit(mesh, LOOK_UP).pitch


@pytest.mark.parametrize("which", ["grid", "pexels"])
def test_flip_negates_yaw_and_roll(mesh, grid, pexels, which):
    img = grid[len(grid) // 2][1] if which == "grid" else pexels[TURN_RIGHT]
    box = hog_box(img)
    w = img.shape[1]
    a = mesh.fit(img, box)
    b = mesh.fit(np.ascontiguousarray(img[:, ::-1]), (w - box[2], box[1], w - box[0], box[3]))
    assert a is not None and b is not None
    assert abs(a.yaw + b.yaw) < 3, (a.yaw, b.yaw)
    assert abs(a.roll + b.roll) < 3, (a.roll, b.roll)
    assert abs(a.pitch - b.pitch) < 3, (a.pitch, b.pitch)
    if which == "pexels":
        assert a.yaw > 8 and b.yaw < -8


@pytest.mark.parametrize("which", ["grid", "pexels"])
def test_rotation_adds_roll(mesh, ref, grid, pexels, which):
    img = grid[0][1] if which == "grid" else pexels[100]
    box = hog_box(img)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    # cv2's positive angle turns the picture counter-clockwise: roll (+ = clockwise) drops
    mat = cv2.getRotationMatrix2D(centre, 15, 1.0)
    turned = cv2.warpAffine(img, mat, img.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    for model in (mesh, ref):
        a, b = model.fit(img, box), model.fit(turned, box)
        assert abs((b.roll - a.roll) + 15) < 2, (model.name, a.roll, b.roll)
        assert abs(b.yaw - a.yaw) < 4, (model.name, a.yaw, b.yaw)


def test_no_face_gives_none(mesh):
    flat = np.full((288, 360, 3), 128, np.uint8)
    assert mesh.fit(flat, (100, 80, 220, 200)) is None


def test_bad_box_and_names():
    with pytest.raises(FacelabError, match="mesh"):
        create_landmarker("nope")
    lm = create_landmarker("mesh")
    with pytest.raises(ValueError):
        lm.fit(np.zeros((64, 64, 3), np.uint8), (10, 10, 10, 40))
    lm.close()


def test_dlib_missing_model_names_the_packages(monkeypatch):
    monkeypatch.setattr(lmod, "dlib_model_path", lambda: None)
    with pytest.raises(FacelabError, match="face-recognition-models"):
        create_landmarker("dlib")


@pytest.mark.slow
def test_jaw_follows_the_outline_on_turned_faces(mesh, ref, pexels):
    """dlib's jaw lies on the visible contour; fixed mesh vertices drift off it with yaw
    (measured on these frames: 0.056 inter-ocular distances on the outline, 0.077 without)."""
    errs = []
    for i in (159, 170, 180, 190, 395, 400, 405, 410):
        box = hog_box(pexels[i])
        got, d = mesh.fit(pexels[i], box), ref.fit(pexels[i], box)
        assert got is not None and abs(got.yaw) > 8, (i, got)
        errs.append(np.linalg.norm(got.points68[:17] - d.points68[:17], axis=1).mean()
                    / iod(d.points68))
    assert np.mean(errs) < 0.065, errs
