"""Video in, frames out, frames in, video out: counts, exact rates and audio survive."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facelab.video.probe import probe
from tests.conftest import put_video, run_facelab, run_in_process

pytestmark = pytest.mark.slow  # real footage or training (make test-fast skips it)



@pytest.fixture
def facelab():
    """The CLI in this process (conftest.run_in_process: same parsing, output, one-line
    errors and exit status): these tests are about the commands; test_grid_round_trip runs a real
    process."""
    return run_in_process

def decode_all(path: Path) -> tuple[int, Fraction, float | None, list[np.ndarray]]:
    """Frame count, rate, audio seconds (decoded), first and last frames."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        rate = vs.average_rate
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(vs)]
    audio_s = None
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            samples = sum(f.samples for f in c.decode(a))
            audio_s = samples / a.codec_context.sample_rate
    return len(frames), rate, audio_s, [frames[0], frames[-1]]


def test_grid_round_trip(workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    res = run_facelab("-w", workspace, "video", "extract", "dst", "--frames", "png")
    assert res.rc == 0, res.err
    frames = sorted((workspace / "data_dst").glob("*.png"))
    assert len(frames) == 75
    assert frames[0].name == "00001.png" and frames[-1].name == "00075.png"
    meta = json.loads((workspace / "data_dst" / "video.json").read_text())
    assert meta["fps"] == "25/1" and meta["frame_count"] == 75
    assert [a["codec"] for a in meta["audio"]] == ["mp2"]

    res = run_facelab("video", "assemble", "--frames", workspace / "data_dst", "-w", workspace)
    assert res.rc == 0, res.err
    result = workspace / "result.mp4"
    n, rate, audio_s, (first, last) = decode_all(result)
    assert n == 75 and rate == 25
    assert audio_s is not None and abs(audio_s - 3.0) < 0.06  # 75 frames = 3 s of audio
    # the frames come back as they went in (H.264 at CRF 18 is close, not exact)
    src0 = cv2.imread(str(frames[0]))
    assert np.abs(first.astype(int) - src0).mean() < 3
    src_last = cv2.imread(str(frames[-1]))
    assert np.abs(last.astype(int) - src_last).mean() < 3


def test_pexels_keeps_ntsc_rate_exactly(facelab, workspace, pexels):
    put_video(workspace, "dst", pexels)
    assert facelab("-w", workspace, "video", "extract", "dst", "-q", "--frames", "png").rc == 0
    assert len(list((workspace / "data_dst").glob("*.png"))) == 472
    meta = json.loads((workspace / "data_dst" / "video.json").read_text())
    assert meta["fps"] == "24000/1001"
    res = facelab("-w", workspace, "video", "assemble", "--frames", workspace / "data_dst")
    assert res.rc == 0, res.err
    info = probe(workspace / "result.mp4")
    assert info.fps == Fraction(24000, 1001)
    n, rate, audio_s, _ = decode_all(workspace / "result.mp4")
    assert n == 472 and rate == Fraction(24000, 1001)
    assert info.audio[0].codec == "aac"  # AAC is copied, not re-encoded
    assert abs(audio_s - 472 * 1001 / 24000) < 1001 / 24000 + 0.025


def test_lossless_mp4_is_bit_exact(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    res = facelab("-w", workspace, "video", "assemble", "--frames", workspace / "data_dst",
                  "--format", "mp4-lossless")
    assert res.rc == 0, res.err
    with av.open(str(workspace / "result.mp4")) as c:
        back = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    pngs = sorted((workspace / "data_dst").glob("*.png"))
    assert len(back) == len(pngs) == 75
    for i in (0, 37, 74):
        assert np.array_equal(back[i], cv2.imread(str(pngs[i])))


def test_avi_copies_mp2_audio(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    res = facelab("-w", workspace, "video", "assemble", "--frames", workspace / "data_dst",
                  "-f", "avi")
    assert res.rc == 0, res.err
    assert "mp2 copied" in res.out
    n, rate, audio_s, _ = decode_all(workspace / "result.avi")
    assert n == 75 and rate == 25 and abs(audio_s - 3.0) < 0.06


def test_src_fps_subsampling_and_two_clips(facelab, workspace, grid_a1, pexels):
    res = facelab("-w", workspace, "video", "extract", "src", "--fps", "5",
                  "-i", grid_a1, "-i", pexels)
    assert res.rc == 0, res.err
    frames = sorted((workspace / "data_src").glob("*.png"))
    # 3 s at 5 fps = 15 frames, then 19.69 s at 5 fps = 99 frames, numbered on
    assert len(frames) == 15 + 99
    assert frames[-1].name == f"{15 + 99:05d}.png"
    assert cv2.imread(str(frames[14])).shape == (288, 360, 3)
    assert cv2.imread(str(frames[15])).shape == (360, 640, 3)


def test_rerun_skips_and_resumes(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    res = facelab("-w", workspace, "video", "extract", "dst", "--frames", "png")
    assert res.rc == 0 and "0 written now" in res.out
    # an interrupted run: the manifest says incomplete and a third of the frames are gone
    manifest = workspace / "data_dst" / "frames.json"
    data = json.loads(manifest.read_text())
    data["inputs"][0]["complete"] = False
    manifest.write_text(json.dumps(data))
    for p in sorted((workspace / "data_dst").glob("*.png"))[50:]:
        p.unlink()
    res = facelab("-w", workspace, "video", "extract", "dst", "--frames", "png")
    assert res.rc == 0, res.err
    assert "25 written now" in res.out
    assert len(list((workspace / "data_dst").glob("*.png"))) == 75


def test_force_moves_old_frames_to_trash(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    res = facelab("-w", workspace, "video", "extract", "dst", "--force", "--format", "jpg")
    assert res.rc == 0, res.err
    assert len(list((workspace / "data_dst").glob("*.jpg"))) == 75
    assert not list((workspace / "data_dst").glob("*.png"))
    trashed = list((workspace / ".trash").rglob("*.png"))
    assert len(trashed) == 75


def test_other_settings_need_force(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst").rc == 0
    res = facelab("-w", workspace, "video", "extract", "dst", "--format", "jpg")
    assert res.rc == 1 and "--force" in res.err


def test_assemble_reruns_only_when_needed(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    args = ("-w", workspace, "video", "assemble", "--frames", workspace / "data_dst")
    assert facelab(*args).rc == 0
    res = facelab(*args)
    assert res.rc == 0 and "up to date" in res.out
    res = facelab(*args, "--crf", "30")  # other settings: rebuilt, the old one kept in trash
    assert res.rc == 0 and "Wrote" in res.out
    assert len(list((workspace / ".trash").rglob("result.mp4"))) == 1
