"""Manual extraction (faces/manual.py): landmarks that follow a drawn box, a face placed by
hand saved in exactly the automatic format, kept by a rerun of `facelab extract`, replace
to the trash, one clear sentence for a bad box."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.faces import manual
from facelab.faces.faceimage import read_face, read_meta
from facelab.faces.facetype import similarity_fit, transform_points
from facelab.faces.landmarks import bend_mesh, box_from_points, mean_face_in_box
from facelab.fsutil import read_json, write_json
from facelab.workspace import Workspace
from tests.conftest import copy_workspace, lock_holder, put_video, run_facelab

FRAME = np.zeros((288, 360, 3), np.uint8)  # GRID's frame size


# -- no footage -------------------------------------------------------------------------------

@pytest.mark.parametrize("box, words", [
    ((-500, -500, -400, -400), "outside the 360×288 frame"),
    ((300, 200, 500, 400), "outside"),  # three quarters off the frame
    ((10, 10, 25, 90), "at least 20×20"),
    ((50, 50, 40, 90), "at least 20×20"),  # x1 < x0
    ((0, 0, float("nan"), 50), "finite"),
    (("a", 0, 50, 50), "four numbers"),
    ((0, 0, 50), "four numbers"),
])
def test_bad_box_is_one_sentence(box, words):
    with pytest.raises(FacelabError) as e:
        manual.landmarks_in_box(FRAME, box)  # refused before any model loads
    msg = str(e.value)
    assert words in msg and "\n" not in msg and msg.endswith("."), msg


def test_bad_points_are_one_sentence():
    with pytest.raises(FacelabError, match="68 points"):
        manual.face_from_points(FRAME, np.zeros((67, 2)), "00001.png", "dst")
    with pytest.raises(FacelabError, match="at least 20×20"):  # all on one spot
        manual.face_from_points(FRAME, np.full((68, 2), 100.0), "00001.png", "dst")
    with pytest.raises(FacelabError, match="not a frame name"):
        manual.face_from_points(FRAME, np.zeros((68, 2)), "../00001.png", "dst")


def test_mean_face_and_box_round_trip():
    box = (100.0, 60.0, 220.0, 230.0)
    lm = mean_face_in_box(box)
    assert lm.model == "mean" and lm.points68.shape == (68, 2)
    assert np.allclose(box_from_points(lm.points68), box, atol=0.05 * 120)


def test_bent_mesh_follows_the_points():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (68, 2))
    mesh = np.c_[rng.uniform(0, 100, (478, 2)), rng.normal(0, 10, 478)]
    sim = similarity_fit(pts, pts * 1.5 + [7, -3])  # an affine move is reproduced exactly
    bent = bend_mesh(mesh, pts, transform_points(pts, sim))
    assert np.allclose(bent[:, :2], transform_points(mesh[:, :2], sim), atol=1e-6)
    assert np.allclose(bent[:, 2], mesh[:, 2] * 1.5)
    moved = pts.copy()
    moved[8] += [0, 6]  # the chin dragged down: mesh near it follows, far parts stay
    bent = bend_mesh(mesh, pts, moved)[:, :2]
    near = np.linalg.norm(mesh[:, :2] - pts[8], axis=1)
    shift = np.linalg.norm(bent - mesh[:, :2], axis=1)
    assert shift[near.argmin()] > 4 and np.median(shift[near > 40]) < 0.1
    on_points = bend_mesh(np.c_[pts, np.zeros(68)], pts, moved)[:, :2]
    assert np.abs(on_points - moved).max() < 0.5  # lightly smoothed, not exact
    assert bend_mesh(mesh, pts, rng.uniform(0, 100, (68, 2))) is None  # another face


# -- real frames ------------------------------------------------------------------------------

@pytest.fixture
def ws(aligned_faces: Path, tmp_path: Path) -> Workspace:
    """A private copy of the session's GRID workspace (dst: 75 PNG frames, one face each)."""
    return Workspace(copy_workspace(aligned_faces, tmp_path / "ws"))


def _auto(ws: Workspace, frame: str) -> Path:
    return ws.aligned_dir("dst") / f"{Path(frame).stem}_0.jpg"


def _errors(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1).mean())


@pytest.mark.slow
def test_box_gives_the_automatic_landmarks(aligned_faces: Path):
    ws = Workspace(aligned_faces)  # only read
    for frame in ("00001.png", "00030.png", "00060.png"):
        auto = read_meta(_auto(ws, frame))
        image = manual.load_frame(ws, "dst", frame)
        lm = manual.landmarks_in_box(image, auto.source_rect)
        assert lm.model == "mesh" and lm.mesh is not None
        assert _errors(lm.points68, auto.source_landmarks) < 1.5
        x0, y0, x1, y1 = auto.source_rect
        d = 0.12 * (x1 - x0)  # the box moved: the points stay on the face
        moved = manual.landmarks_in_box(image, (x0 + d, y0 - d, x1 + d, y1 - d))
        assert _errors(moved.points68, auto.source_landmarks) < 3
        assert abs(lm.yaw - auto.yaw) < 2 and abs(lm.roll - auto.roll) < 2
    empty = manual.landmarks_in_box(image, (2, 2, 60, 60))  # GRID's plain background
    assert empty.model == "mean" and empty.mesh is None
    assert (empty.points68.min(0) > 0).all() and (empty.points68.max(0) < 70).all()


def _make_missing(ws: Workspace, frame: str) -> Path:
    """The state an extraction leaves when its detector found no face in `frame`: no face
    in aligned/, 0 in faces.json, the frame in aligned_missing.txt. The face it had is
    kept aside as the reference."""
    ref = ws.root / "reference.jpg"
    shutil.move(_auto(ws, frame), ref)
    state_path = ws.frames_dir("dst") / "faces.json"
    state = read_json(state_path)
    state["frames"][frame] = 0
    write_json(state_path, state)
    (ws.frames_dir("dst") / "aligned_missing.txt").write_text(f"{frame}\n")
    return ref


def _shape(v: object) -> object:
    return np.shape(v) if isinstance(v, list) else type(v).__name__


@pytest.mark.slow
def test_face_placed_by_hand_on_a_missing_frame(ws: Workspace):
    frame = "00040.png"
    ref = read_meta(_make_missing(ws, frame))
    assert manual.missing_frames(ws, "dst") == [frame]
    assert manual.frame_faces(ws, "dst", frame) == []
    image = manual.load_frame(ws, "dst", frame)
    x0, y0, x1, y1 = ref.source_rect
    points = manual.landmarks_in_box(image, (x0 - 6, y0 + 4, x1 - 6, y1 + 4)).points68.copy()
    points[7:10] += [0, 3]  # the user drags the chin down a little
    options = manual.workspace_options(ws, "dst")
    face = manual.face_from_points(image, points, frame, "dst", options.extractor)
    path = manual.save_manual_face(ws, "dst", frame, face)

    assert path == _auto(ws, frame)
    pixels, meta = read_face(path)
    assert pixels.shape == (256, 256, 3) and meta.detector == manual.MANUAL
    assert (meta.face_index, meta.source_filename, meta.original_name) == (0, frame, path.name)
    assert np.allclose(meta.source_landmarks, points)
    auto_json, man_json = ref.to_json(), meta.to_json()  # the automatic format exactly
    assert list(man_json) == list(auto_json)
    assert {k: _shape(v) for k, v in man_json.items()} == \
        {k: _shape(v) for k, v in auto_json.items()}
    assert _errors(meta.landmarks, ref.landmarks) < 3  # in the 256-px aligned face
    assert abs(meta.yaw - ref.yaw) < 3 and abs(meta.pitch - ref.pitch) < 4
    assert _errors(meta.mesh[:, :2], ref.mesh[:, :2]) < 4  # bent onto the dragged chin
    assert manual.missing_frames(ws, "dst") == []
    assert [m.detector for m in manual.frame_faces(ws, "dst", frame)] == [manual.MANUAL]
    assert read_json(ws.frames_dir("dst") / "faces.json")["frames"][frame] == 1

    from facelab.faceset.features import load_features
    from facelab.faceset.folder import resolve
    from facelab.train.data import Faceset, SampleOptions

    other = _auto(ws, "00041.png")
    recs = load_features(resolve(ws, "dst", None), [path, other], ("pose", "blur"), jobs=1)
    assert recs[0]["info"]["source_filename"] == frame
    assert abs(recs[0]["pose"][0] - recs[1]["pose"][0]) < 10  # yaw like its neighbour's
    faces = Faceset(ws.aligned_dir("dst"), 64, "full")
    sample = faces.sample(faces.paths.index(path), np.random.default_rng(0), SampleOptions())
    assert sample.target.shape == (3, 64, 64) and float(sample.target.std()) > 0.05

    before = path.read_bytes()
    res = run_facelab("-w", ws.root, "extract", "dst")
    assert res.rc == 0, res.err
    assert path.read_bytes() == before and read_meta(path).detector == manual.MANUAL
    missing = (ws.frames_dir("dst") / "aligned_missing.txt").read_text()
    assert frame not in missing  # rewritten by the rerun from faces.json


@pytest.mark.slow
def test_replace_trashes_the_old_face_and_second_face_gets_next_index(ws: Workspace):
    debug = ws.aligned_debug_dir("dst")
    debug.mkdir(exist_ok=True)
    shutil.copy(_auto(ws, "00001.png"), debug / "00001.jpg")  # the side has debug frames
    frame = "00020.png"
    old = _auto(ws, frame)
    old_bytes, auto = old.read_bytes(), read_meta(old)
    drawn_path = debug / "00020.jpg"
    drawn_before = drawn_path.read_bytes() if drawn_path.exists() else None
    image = manual.load_frame(ws, "dst", frame)
    points = auto.source_landmarks + np.array([2.0, 0.0])
    face = manual.face_from_points(image, points, frame, "dst")
    with pytest.raises(FacelabError, match="has no face 3"):
        manual.replace_face(ws, "dst", frame, 3, face)
    with pytest.raises(FacelabError, match=r"placed on dst frame 00020\.png"):
        manual.save_manual_face(ws, "dst", "00021.png", face)

    with lock_holder(ws.root, "faces-dst"), pytest.raises(FacelabError, match="in use by"):
        manual.replace_face(ws, "dst", frame, 0, face)  # an extraction runs: refused
    assert old.read_bytes() == old_bytes

    path = manual.replace_face(ws, "dst", frame, 0, face)
    assert path == old and read_meta(path).detector == manual.MANUAL
    trashed = ws.aligned_trash_dir("dst") / old.name
    assert trashed.read_bytes() == old_bytes  # moved, never deleted
    assert read_json(ws.frames_dir("dst") / "faces.json")["frames"][frame] == 1
    drawn = cv2.imread(str(drawn_path))  # redrawn with the new face
    assert drawn is not None and drawn.shape == image.shape
    assert drawn_path.read_bytes() != drawn_before

    second = "00021.png"
    image = manual.load_frame(ws, "dst", second)
    pts = read_meta(_auto(ws, second)).source_landmarks
    face = manual.face_from_points(image, pts, second, "dst")
    path = manual.save_manual_face(ws, "dst", second, face)
    assert path.name == "00021_1.jpg"
    assert [(m.face_index, m.detector) for m in manual.frame_faces(ws, "dst", second)] == \
        [(0, auto.detector), (1, manual.MANUAL)]
    assert read_json(ws.frames_dir("dst") / "faces.json")["frames"][second] == 2


@pytest.mark.slow
def test_dst_kept_in_its_video_before_any_extraction(aligned_faces: Path, grid_a1: Path,
                                                     tmp_path: Path):
    """Frames read from the kept video (the PNG's pixels exactly); a face placed before
    `facelab extract` starts faces.json with the settings extract's defaults will match."""
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    put_video(ws.root, "dst", grid_a1)
    res = run_facelab("-w", ws.root, "video", "extract", "dst")
    assert res.rc == 0, res.err
    assert manual.frame_names(ws, "dst") == manual.frame_names(Workspace(aligned_faces), "dst")
    frame = "00040.png"
    image = manual.load_frame(ws, "dst", frame)
    assert np.array_equal(image, cv2.imread(str(aligned_faces / "data_dst" / frame)))
    assert manual.missing_frames(ws, "dst") == [] and manual.frame_faces(ws, "dst", frame) == []
    with pytest.raises(FacelabError, match=r"no frame 00099\.png"):
        manual.load_frame(ws, "dst", "00099.png")
    box = read_meta(_auto(Workspace(aligned_faces), frame)).source_rect
    points = manual.landmarks_in_box(image, box).points68
    face = manual.face_from_points(image, points, frame, "dst")
    path = manual.save_manual_face(ws, "dst", frame, face)
    assert path == _auto(ws, frame) and read_meta(path).detector == manual.MANUAL
    state = read_json(ws.frames_dir("dst") / "faces.json")
    assert state["frames"] == {frame: 1}
    assert state["settings"] == {"detector": "accurate", "landmarks": "mesh",
                                 "face_type": "full", "size": 256, "jpeg_quality": 95}
    manual.release()
