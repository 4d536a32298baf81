"""`facelab extract src|dst`: real clips, real detectors and landmarks, end to end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from facelab.faces.faceimage import read_face, read_meta
from facelab.faces.facetype import transform_points
from tests.conftest import assert_one_line_error, data_file, put_video, run_facelab, run_in_process

pytestmark = pytest.mark.slow  # real footage or training (make test-fast skips it)

pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")



@pytest.fixture
def facelab():
    """The CLI in this process (conftest.run_in_process): these tests are about the
    command; the tests about the process (FFmpeg's own stderr, a lock held by another
    process) and the module's fixture run real processes."""
    return run_in_process

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


def _face_frames(folder: Path, count: int) -> list[Path]:
    """`count` small PNG frames, each holding one face (the two portraits in turn)."""
    import cv2

    portraits = [cv2.imread(str(data_file(f"images/{n}")))
                 for n in ("astronaut.png", "grace_hopper.jpg")]
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(count):
        image = portraits[i % 2]
        small = cv2.resize(image, (240, round(240 * image.shape[0] / image.shape[1])))
        frames.append(folder / f"{i + 1:05d}.png")
        cv2.imwrite(str(frames[-1]), small)
    return frames


def test_corrupt_frames_are_skipped_listed_and_quiet(workspace):
    """Two cut-short PNGs and a garbage file among good frames: the good ones are extracted
    in one run, the bad ones listed, one line and exit 3 ("kept what was readable"), and
    nothing of OpenCV's or libpng's on the terminal. 9 frames: the worker pool's path."""
    frames = _face_frames(workspace / "data_dst", 9)
    bad = [frames[1], frames[4], frames[7]]
    whole = frames[1].read_bytes()
    frames[1].write_bytes(whole[: len(whole) // 2])
    frames[4].write_bytes(whole[:300])
    frames[7].write_bytes(b"\x89PNG\r\n\x1a\n but then not a PNG at all" * 20)
    stale = [workspace / "data_dst" / ".faces.part-4000000.json",  # left by a killed run
             workspace / "data_dst" / "aligned" / ".00001_0.part-4000000.jpg"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")

    res = run_facelab("-w", workspace, "extract", "dst")
    assert res.rc == 3, res
    assert_one_line_error(res, "3 of the 9 dst frames could not be read",
                          "aligned_unreadable.txt")
    for chatter in ("[ WARN", "libpng", "Traceback", "imdecode"):
        assert chatter not in res.err
    listed = (workspace / "data_dst" / "aligned_unreadable.txt").read_text().split()
    assert listed == [p.name for p in bad]
    good = {p.stem for p in frames if p not in bad}
    faces = {p.stem.split("_")[0] for p in (workspace / "data_dst" / "aligned").glob("*.jpg")}
    assert faces == good
    assert "6 processed now" in res.out
    assert not any(p.exists() for p in stale)

    # the bad frames are not recorded as done: replaced, a rerun extracts just them
    for p in bad:
        p.write_bytes(frames[0].read_bytes())
    res = run_facelab("-w", workspace, "extract", "dst")
    assert res.rc == 0, res.err
    assert "3 processed now" in res.out
    assert not (workspace / "data_dst" / "aligned_unreadable.txt").exists()


def test_extraction_refused_while_another_process_holds_the_side(workspace):
    from facelab import locks

    _face_frames(workspace / "data_src", 2)
    with locks.hold(workspace, "faces-src", "the src faces of this workspace"):
        res = run_facelab("-w", workspace, "extract", "src")
    assert_one_line_error(res, "src faces", "in use by", f"pid {os.getpid()}")
    assert not (workspace / "data_src" / "faces.json").exists()
    assert not list((workspace / "data_src" / "aligned").glob("*.jpg"))


def faceless_clip(path: Path, frames: int = 6, cut: int = 0) -> Path:
    """A real clip without any face (FFmpeg's test pattern), `cut` bytes short of its end."""
    import subprocess

    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                    "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=6", "-frames:v",
                    str(frames), "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)],
                   check=True, timeout=60)
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])
    return path


def test_faceless_clip_says_so_plainly(facelab, workspace, tmp_path):
    """No face in any frame: extract says so in one line and fails (it said "0 faces
    written" and exit 0), every time; train's faceset then says the same, not "run
    `facelab extract src`"."""
    put_video(workspace, "src", faceless_clip(tmp_path / "pattern.mp4"))
    assert facelab("-w", workspace, "video", "extract", "src").rc == 0
    for _ in range(2):
        res = facelab("-w", workspace, "extract", "src")
        assert_one_line_error(res, "no face was found in any of the 6 frames of "
                              "data_src.mp4", "pixels wide")
    from facelab.errors import FacelabError
    from facelab.train.data import Faceset

    with pytest.raises(FacelabError, match="No face was found in any of the 6 frames") as e:
        Faceset(workspace / "data_src" / "aligned", 64, "full")
    assert "run `facelab extract" not in str(e.value)
