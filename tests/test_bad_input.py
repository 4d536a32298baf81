"""Every bad input: a non-zero exit, one line on stderr, no traceback, no output left."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from facelab.video.source import open_frames
from facelab.workspace import Workspace
from tests.conftest import assert_one_line_error, put_video, run_facelab, run_in_process

pytestmark = pytest.mark.slow  # real footage or training (make test-fast skips it)



@pytest.fixture
def facelab():
    """The CLI in this process (conftest.run_in_process: same parsing, output, one-line
    errors and exit status): these tests are about the commands; test_not_a_video runs a real
    process."""
    return run_in_process

def no_result(ws: Path) -> None:
    leftovers = [p.name for p in ws.glob("*result*")] + [p.name for p in ws.glob(".*part*")]
    assert not leftovers, leftovers


def test_missing_workspace_video(facelab, workspace):
    res = facelab("-w", workspace, "video", "extract", "dst")
    assert_one_line_error(res, "data_dst")


def test_missing_workspace(facelab, tmp_path):
    res = facelab("-w", tmp_path / "nope", "video", "extract", "src")
    assert_one_line_error(res, "workspace")


def test_not_a_video(workspace):
    (workspace / "data_dst.mp4").write_bytes(b"this is text, not a video\n" * 100)
    res = run_facelab("-w", workspace, "video", "extract", "dst")
    assert_one_line_error(res, "data_dst.mp4", "not a video")
    assert not list((workspace / "data_dst").glob("*.png"))


def test_empty_file(facelab, workspace):
    (workspace / "data_src.mkv").write_bytes(b"")
    res = facelab("-w", workspace, "video", "extract", "src")
    assert_one_line_error(res, "data_src.mkv")


@pytest.mark.parametrize("clip,keep", [("pexels", 800_000), ("grid_b", 200_000)])
def test_truncated_video_keeps_readable_frames(facelab, workspace, clip, keep, request):
    src: Path = request.getfixturevalue(clip)
    (workspace / f"data_dst{src.suffix}").write_bytes(src.read_bytes()[:keep])
    res = facelab("-w", workspace, "video", "extract", "dst", "--frames", "png")
    assert_one_line_error(res, "breaks at", "kept the readable frames")
    kept = list((workspace / "data_dst").glob("*.png"))
    assert 10 < len(kept) < (472 if clip == "pexels" else 75)
    # what was readable can still be assembled
    res = facelab("-w", workspace, "video", "assemble", "--frames", workspace / "data_dst")
    assert res.rc == 0, res.err


def test_truncated_kept_video_indexes_the_readable_frames(facelab, workspace, pexels):
    (workspace / "data_dst.mp4").write_bytes(pexels.read_bytes()[:800_000])
    res = facelab("-w", workspace, "video", "extract", "dst")
    assert_one_line_error(res, "breaks at", "kept the readable frames")
    frames = open_frames(Workspace(workspace), "dst")
    assert 10 < len(frames) < 472
    last = frames.read(frames.names[-1])  # the last indexed frame decodes
    assert last.shape == (360, 640, 3)


def test_empty_merged(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst").rc == 0
    res = facelab("-w", workspace, "video", "assemble")
    assert_one_line_error(res, "merged", "no frames")
    no_result(workspace)


def test_assemble_before_extract(facelab, workspace):
    res = facelab("-w", workspace, "workspace", "init")
    assert res.rc == 0
    res = facelab("-w", workspace, "video", "assemble")
    assert_one_line_error(res, "video.json", "extract dst")


def test_mixed_frame_sizes(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    merged = workspace / "data_dst" / "merged"
    for p in sorted((workspace / "data_dst").glob("*.png"))[:10]:
        img = cv2.imread(str(p))
        if p.name == "00007.png":
            img = cv2.resize(img, (200, 160))
        cv2.imwrite(str(merged / p.name), img)
    res = facelab("-w", workspace, "video", "assemble")
    assert_one_line_error(res, "differ in size", "00007.png")
    no_result(workspace)


def test_corrupt_frame(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    merged = workspace / "data_dst" / "merged"
    for p in sorted((workspace / "data_dst").glob("*.png"))[:5]:
        merged.joinpath(p.name).write_bytes(p.read_bytes())
    (merged / "00003.png").write_bytes(b"\x89PNG broken")
    res = facelab("-w", workspace, "video", "assemble")
    assert_one_line_error(res, "00003.png")
    no_result(workspace)


def test_dst_video_gone_needs_no_audio(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    (workspace / "data_dst.mpg").rename(workspace / "elsewhere.mpg")
    args = ("-w", workspace, "video", "assemble", "--frames", workspace / "data_dst")
    assert_one_line_error(facelab(*args), "--no-audio")
    no_result(workspace)
    assert facelab(*args, "--no-audio").rc == 0


@pytest.mark.parametrize("args,words", [
    (("--format", "gif"), ("gif",)),
    (("--format", "mp4-lossless", "--crf", "10"), ("lossless",)),
    (("--format", "avi", "--crf", "10"), ("bitrate",)),
    (("--crf", "99"), ("crf",)),
    (("--crf", "20", "--bitrate", "5"), ("not both",)),
])
def test_bad_assemble_options(facelab, workspace, grid_b, args, words):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    res = facelab("-w", workspace, "video", "assemble", "--frames", workspace / "data_dst",
                  *args)
    assert_one_line_error(res, *words)
    no_result(workspace)


@pytest.mark.parametrize("fps", ["0", "abc", "-3"])
def test_bad_fps(facelab, workspace, grid_b, fps):
    put_video(workspace, "src", grid_b)
    res = facelab("-w", workspace, "video", "extract", "src", "--fps", fps)
    assert res.rc != 0 and "Traceback" not in res.err
