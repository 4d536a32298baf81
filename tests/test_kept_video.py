"""dst kept in its video (`video extract dst`'s default) against dst as PNG frames: the same
frames by name, the same faces, and the workspace says which it holds."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from facelab.video.source import INDEX, kept_as_video, open_frames
from facelab.workspace import Workspace, list_images
from tests.conftest import data_file, run_facelab

FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """GRID speaker A's first frames as H.264 with B-frames (frames reorder on decode)."""
    out = tmp_path_factory.mktemp("clip") / "dst.mp4"
    with av.open(str(data_file("grid/speaker_a_1.mpg"))) as src, \
            av.open(str(out), "w") as dst:
        vs = dst.add_stream("libx264", rate=25, options={"bf": "2", "g": "6", "crf": "20"})
        vs.width, vs.height, vs.pix_fmt = 360, 288, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == FRAMES:
                break
            frame.pts = None
            dst.mux(vs.encode(frame))
        dst.mux(vs.encode(None))
    return out


def _workspace(root: Path, clip: Path, *args: str) -> Workspace:
    root.mkdir()
    (root / "data_dst.mp4").write_bytes(clip.read_bytes())
    res = run_facelab("-w", root, "video", "extract", "dst", *args)
    assert res.rc == 0, res.err
    return Workspace(root)


@pytest.mark.slow
def test_kept_video_reads_and_extracts_as_the_png_frames(clip: Path, tmp_path: Path):
    kept = _workspace(tmp_path / "kept", clip)
    png = _workspace(tmp_path / "png", clip, "--frames", "png")
    assert kept_as_video(kept, "dst") and not kept_as_video(png, "dst")
    assert not list_images(kept.frames_dir("dst")) and (kept.frames_dir("dst") / INDEX).is_file()
    assert len(list_images(png.frames_dir("dst"))) == FRAMES
    a, b = open_frames(kept, "dst"), open_frames(png, "dst")
    assert a.names == b.names and len(a) == FRAMES
    for name in reversed(a.names):  # by name, any order: the PNG's pixels exactly
        assert np.array_equal(a.read(name), b.read(name)), name
    a.close()
    for ws in (kept, png):
        res = run_facelab("-w", ws.root, "extract", "dst", "--no-debug")
        assert res.rc == 0, res.err
    done = [json.loads((w.frames_dir("dst") / "faces.json").read_text())["frames"]
            for w in (kept, png)]
    assert done[0] == done[1] and sum(done[0].values()) == FRAMES
    faces = [sorted(w.aligned_dir("dst").glob("*.jpg")) for w in (kept, png)]
    assert [p.name for p in faces[0]] == [p.name for p in faces[1]]
    for x, y in zip(*faces, strict=True):
        assert x.read_bytes() == y.read_bytes(), x.name
    info = run_facelab("-w", kept.root, "workspace", "info")
    assert f"{FRAMES} frames kept in the video" in info.out


def test_extract_refuses_frames_it_cannot_keep(tmp_path: Path, clip: Path):
    root = tmp_path / "ws"
    root.mkdir()
    res = run_facelab("-w", root, "video", "extract", "dst", "--frames", "gif", "-i", clip)
    assert res.rc != 0 and "choose video, png or jpg" in res.err


def test_debug_frames_of_a_large_dst_are_kept_small():
    from facelab.faces.debug import draw_debug

    assert draw_debug(np.zeros((1080, 1920, 3), np.uint8), []).shape == (720, 1280, 3)
    assert draw_debug(np.zeros((360, 640, 3), np.uint8), []).shape == (360, 640, 3)
