"""Alpha formats: a known alpha pattern comes back from the encoded file."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facelab.video.formats import FORMATS
from facelab.workspace import Workspace
from tests.conftest import put_video

pytestmark = pytest.mark.slow  # real footage or training (make test-fast skips it)

N = 6


def alpha_pattern(i: int, h: int, w: int) -> np.ndarray:
    """An ellipse that moves with i, a soft ramp on the left, transparent elsewhere."""
    a = np.zeros((h, w), np.uint8)
    cv2.ellipse(a, (w // 2 + 8 * i, h // 2), (w // 5, h // 4), 0, 0, 360, 255, -1)
    a[:, : w // 8] = np.linspace(0, 255, w // 8, dtype=np.uint8)[None, :]
    return a


def decode_alpha(path: Path) -> list[np.ndarray]:
    """Alpha planes as a player reads them (VP9 alpha needs the libvpx-vp9 decoder)."""
    out = []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        if vs.codec_context.name == "vp9":
            dec = av.codec.CodecContext.create("libvpx-vp9", "r")
            for pkt in c.demux(vs):
                if pkt.size:
                    out += [f.to_ndarray(format="rgba")[..., 3] for f in dec.decode(pkt)]
        else:
            out = [f.to_ndarray(format="rgba")[..., 3] for f in c.decode(vs)]
    return out


@pytest.fixture
def dst_frames(facelab, workspace: Path, grid_b: Path) -> Workspace:
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", "png").rc == 0
    return Workspace(workspace)


@pytest.mark.parametrize("fmt", [f.name for f in FORMATS.values() if f.alpha])
@pytest.mark.parametrize("source", ["rgba-frames", "merged_mask"])
def test_alpha_comes_back(facelab, dst_frames: Workspace, fmt: str, source: str):
    ws = dst_frames
    frames = sorted(ws.frames_dir("dst").glob("*.png"))[:N]
    ws.merged_dir.mkdir(parents=True, exist_ok=True)
    ws.merged_mask_dir.mkdir(parents=True, exist_ok=True)
    patterns = []
    for i, p in enumerate(frames):
        bgr = cv2.imread(str(p))
        a = alpha_pattern(i, *bgr.shape[:2])
        patterns.append(a)
        if source == "rgba-frames":
            cv2.imwrite(str(ws.merged_dir / p.name), np.dstack([bgr, a]))
        else:
            cv2.imwrite(str(ws.merged_dir / p.name), bgr)
            cv2.imwrite(str(ws.merged_mask_dir / p.name), a)
    res = facelab("-w", ws.root, "video", "assemble", "--format", fmt, "--no-audio")
    assert res.rc == 0, res.err
    assert f"alpha from {'frames' if source == 'rgba-frames' else 'merged_mask'}" in res.out
    out = ws.root / f"result.{FORMATS[fmt].ext}"
    back = decode_alpha(out)
    assert len(back) == N
    for got, want in zip(back, patterns, strict=True):
        diff = np.abs(got.astype(int) - want)
        if FORMATS[fmt].lossless:
            assert diff.max() == 0
        else:  # VP9 is lossy: edges soften, the pattern stays
            assert diff.mean() < 2.0
            assert (diff > 24).mean() < 0.01


def test_alpha_format_without_alpha_is_opaque_with_warning(facelab, dst_frames: Workspace):
    ws = dst_frames
    res = facelab("-w", ws.root, "video", "assemble", "--frames", ws.frames_dir("dst"),
                  "--format", "mov-alpha", "--no-audio")
    assert res.rc == 0 and "fully opaque" in res.err
    back = decode_alpha(ws.root / "result.mov")
    assert len(back) == 75 and all(a.min() == 255 for a in back[:3])
