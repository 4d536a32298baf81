"""dst kept in its video and merged straight into the result (`merge --to-video`).

The GRID workspace of the session (dst's faces found in PNG frames) gets its dst frames
replaced by the video itself (`video extract dst`'s default): the faces stay valid because
a frame keeps its name and pixels whichever way it is read. A tiny SAE model after two
training steps is the model (its quality is not what is tested here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facelab.progress import NullReporter
from facelab.provenance.video import read_video_mark
from facelab.train.trainer import TrainOptions, train
from facelab.video.source import INDEX, kept_as_video
from facelab.workspace import Workspace, list_images
from tests.conftest import (
    Result,
    assert_one_line_error,
    copy_workspace,
    run_facelab,
    run_in_process,
)
from tests.test_merge import TINY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(tmp_path_factory, aligned_faces: Path) -> Workspace:
    w = Workspace(copy_workspace(aligned_faces, tmp_path_factory.mktemp("stream") / "ws"))
    frames = w.frames_dir("dst")
    for p in [*list_images(frames), frames / "frames.json", w.video_json]:
        p.unlink()
    res = run_facelab("-w", w.root, "video", "extract", "dst")
    assert res.rc == 0, res.err
    assert kept_as_video(w, "dst") and not list_images(frames)
    assert (frames / INDEX).stat().st_size < 4096  # 75 frames: timestamps, key frames
    train(w, TrainOptions(model_name="warp", preset="sae", overrides=dict(TINY), batch_size=4,
                          target_iteration=2, preview_every=0, workers=0, precision="fp32"),
          NullReporter())
    return w


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def _merge(ws: Workspace, *args: str) -> Result:
    return run_facelab("-w", ws.root, "merge", "--model-name", "warp", *args)


def test_stream_is_the_png_route_frame_for_frame(ws: Workspace, tmp_path: Path):
    """Lossless H.264 in RGB: the streamed result decodes to exactly the PNG route's
    merged frames (same model, same decoded dst pixels, same marks)."""
    out = tmp_path / "lossless.mp4"
    res = _merge(ws, "--video-format", "mp4-lossless", "--output", str(out))
    assert res.rc == 0, res.err
    assert not list_images(ws.merged_dir)  # no PNG per frame
    res = _merge(ws, "--to-frames")
    assert res.rc == 0, res.err
    pngs = list_images(ws.merged_dir)
    streamed = _frames(out)
    assert len(streamed) == len(pngs) == 75
    for frame, png in zip(streamed, pngs, strict=True):
        assert np.array_equal(frame, cv2.imread(str(png))), png.name


@pytest.fixture(scope="module")
def streamed(ws: Workspace, tmp_path_factory) -> tuple[Result, Path]:
    """The default merge (dst kept in its video: --to-video), run once; a copy of its
    result for the tests that change the workspace."""
    res = _merge(ws)
    assert res.rc == 0, res.err
    copy = tmp_path_factory.mktemp("streamed") / "result.mp4"
    shutil.copyfile(ws.root / "result.mp4", copy)
    return res, copy


def test_default_result_keeps_audio_and_marks(ws: Workspace, streamed: tuple[Result, Path]):
    res, _ = streamed
    result = ws.root / "result.mp4"
    assert "result.mp4" in res.out
    with av.open(str(result)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.average_rate == 25 and (v.width, v.height) == (360, 288)
        assert abs(float(a.duration * a.time_base) - 3.0) < 0.1
        assert sum(1 for _ in c.decode(video=0)) == 75
    assert read_video_mark(result) is not None
    verify = run_facelab("verify", result)
    assert verify.rc == 0 and "watermark in" in verify.out, verify.out
    made = result.stat().st_mtime_ns
    again = _merge(ws)  # nothing left to do: every segment made with these settings
    assert again.rc == 0 and "Merged 0 frame(s)" in again.out and "75 already done" in again.out
    assert result.stat().st_mtime_ns == made  # the result is current: not joined again
    assert "up to date" in again.out


def _recorded(record: Path) -> int:
    """Segments the merge record names as finished."""
    try:
        return len(json.loads(record.read_text())["frames"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_stream_resumes_to_the_same_result(ws: Workspace, tmp_path: Path,
                                                  streamed: tuple[Result, Path]):
    whole = streamed[1]  # an uninterrupted run's
    w2 = Workspace(copy_workspace(ws.root, tmp_path / "ws2"))
    shutil.rmtree(w2.frames_dir("dst") / "merged_video")
    cmd = [sys.executable, "-m", "facelab", "-w", str(w2.root), "merge", "--model-name",
           "warp"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    record = w2.frames_dir("dst") / "merged_video" / "merge.json"
    deadline = time.monotonic() + 120
    while not _recorded(record) and time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("the merge ended before it could be killed")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < _recorded(record) < 3
    res = _merge(w2)
    assert res.rc == 0, res.err
    assert "already done" in res.out  # the finished segments were not made again
    assert _packets(w2.root / "result.mp4") == _packets(whole)


def test_stream_refusals(ws: Workspace):
    """(By the same CLI in this process: refusals, no start-up each.)"""
    merge = ("-w", ws.root, "merge", "--model-name", "warp")
    assert_one_line_error(run_in_process(*merge, "--to-video", "--frames", "1-10"),
                          "--to-frames")
    assert_one_line_error(run_in_process(*merge, "--to-video", "--export-alpha"), "alpha")
    res = run_in_process("-w", ws.root, "video", "denoise", "dst")
    assert_one_line_error(res, "--frames png")
