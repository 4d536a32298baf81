"""`facelab extract src|dst`: real clips, real detectors and landmarks, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facelab.faces.faceimage import read_face, read_meta
from facelab.faces.facetype import transform_points
from tests.conftest import assert_one_line_error, put_video

pytestmark = pytest.mark.slow  # real footage or training (make test-fast skips it)

pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")


@pytest.fixture(scope="module")
def dst_done(tmp_path_factory, request) -> Path:
    """A workspace whose dst (GRID speaker B, 75 frames) went through `facelab extract`."""
    from tests.conftest import data_file, run_facelab

    clip = data_file("grid/speaker_b.mpg")
    ws = tmp_path_factory.mktemp("faces") / "ws"
    ws.mkdir()
    put_video(ws, "dst", clip)
    assert run_facelab("-w", ws, "video", "extract", "dst").rc == 0
    res = run_facelab("-w", ws, "extract", "dst")
    assert res.rc == 0, res.err
    return ws


def test_grid_one_face_per_frame(dst_done: Path):
    faces = sorted((dst_done / "data_dst" / "aligned").glob("*.jpg"))
    frames = {read_meta(p).source_filename for p in faces}
    assert len(frames) >= 74  # one face in at least 74 of 75 frames
    assert len(faces) <= 75 + 1  # and (almost) never a second one
    for p in faces[::10]:
        image, meta = read_face(p)
        assert image.shape == (256, 256, 3) and meta.face_type == "full"
        x0, y0, x1, y1 = meta.source_rect
        pad = 0.25 * (x1 - x0)
        pts = meta.source_landmarks
        assert (pts[:, 0] > x0 - pad).all() and (pts[:, 0] < x1 + pad).all()
        assert (pts[:, 1] > y0 - pad).all() and (pts[:, 1] < y1 + pad).all()
        back = transform_points(meta.landmarks, meta.face_to_frame())
        assert np.abs(back - pts).max() < 1.0  # face ↔ frame within a pixel
        assert abs(meta.yaw) < 15 and meta.mesh is not None and meta.mesh.shape == (478, 3)


def test_debug_frames_and_missing_list(dst_done: Path):
    debug = sorted((dst_done / "data_dst" / "aligned_debug").glob("*.jpg"))
    assert len(debug) == 75
    missing = (dst_done / "data_dst" / "aligned_missing.txt").read_text().split()
    state = json.loads((dst_done / "data_dst" / "faces.json").read_text())
    assert sorted(missing) == sorted(n for n, c in state["frames"].items() if c == 0)


def test_rerun_skips(facelab, dst_done: Path):
    res = facelab("-w", dst_done, "extract", "dst")
    assert res.rc == 0 and "0 processed now" in res.out


def test_redo_deleted_debug_redoes_exactly_those(facelab, dst_done: Path, tmp_path: Path):
    ws = tmp_path / "copy"
    shutil.copytree(dst_done, ws)
    debug = ws / "data_dst" / "aligned_debug"
    deleted = ["00010", "00033"]
    for stem in deleted:
        (debug / f"{stem}.jpg").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (ws / "data_dst" / "aligned").glob("*")}
    res = facelab("-w", ws, "extract", "dst", "--redo-deleted-debug")
    assert res.rc == 0, res.err
    assert "redid 2 frames" in res.out
    after = {p.name: p.stat().st_mtime_ns for p in (ws / "data_dst" / "aligned").glob("*")}
    changed = sorted(n for n in after if before.get(n) != after[n])
    assert changed == [f"{s}_0.jpg" for s in deleted]
    trashed = sorted(p.name for p in (ws / "data_dst" / "aligned_trash").glob("*.jpg"))
    assert trashed == [f"{s}_0.jpg" for s in deleted]  # the old faces are kept
    assert all((debug / f"{s}.jpg").exists() for s in deleted)


def test_src_takes_every_face_and_no_debug_by_default(facelab, workspace, grid_a1):
    put_video(workspace, "src", grid_a1)
    assert facelab("-w", workspace, "video", "extract", "src", "--fps", "5").rc == 0
    res = facelab("-w", workspace, "extract", "src", "--face-type", "half", "--size", "128")
    assert res.rc == 0, res.err
    faces = sorted((workspace / "data_src" / "aligned").glob("*.jpg"))
    assert len(faces) == 15
    assert read_meta(faces[0]).face_type == "half" and read_meta(faces[0]).size == 128
    assert not list((workspace / "data_src" / "aligned_debug").glob("*.jpg"))


def test_bad_inputs(facelab, workspace, grid_b):
    assert_one_line_error(facelab("-w", workspace, "extract", "dst"), "no frames")
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst").rc == 0
    assert_one_line_error(facelab("-w", workspace, "extract", "dst", "--detector", "nope"),
                          "nope")
    assert_one_line_error(facelab("-w", workspace, "extract", "dst", "--face-type", "chin"),
                          "chin")
    (workspace / "data_dst" / "00005.png").write_bytes(b"\x89PNG not really")
    res = facelab("-w", workspace, "extract", "dst")
    assert_one_line_error(res, "00005.png")
    state = json.loads((workspace / "data_dst" / "faces.json").read_text())
    assert len(state["frames"]) == 4  # the frames before the bad one are kept and recorded
    # what the workers wrote for frames after the bad one was removed again
    before = {f"0000{i}" for i in range(1, 5)}
    for folder in ("aligned", "aligned_debug"):
        written = (workspace / "data_dst" / folder).glob("*.jpg")
        assert {p.stem.split("_")[0] for p in written} == before, folder
