"""Frame images and pixel conversions in facelab.video.frames: what the fast paths write and
return is what OpenCV and PyAV's own calls would."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facelab.video.frames import DecodeState, ImageWriter, decode_video, to_array, to_video_frame

RNG = np.random.default_rng(7)
IMAGES = {
    "bgr": RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8),
    "bgra": RNG.integers(0, 256, (37, 53, 4), dtype=np.uint8),
    "gray": RNG.integers(0, 256, (37, 53), dtype=np.uint8),
    "gray_hw1": RNG.integers(0, 256, (37, 53, 1), dtype=np.uint8),
    "strided_view": RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)[::2, 1:50],
    "uint16_fallback": RNG.integers(0, 65536, (37, 53, 3), dtype=np.uint16),
}


@pytest.mark.parametrize("name", IMAGES)
def test_png_writer_is_lossless_for_every_layout(tmp_path: Path, name: str) -> None:
    image = IMAGES[name]
    with ImageWriter("png", workers=2) as writer:
        for i in range(4):
            writer.submit(tmp_path / f"{i:05d}.png", image)
    for i in range(4):
        back = cv2.imread(str(tmp_path / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert back.dtype == image.dtype
        assert np.array_equal(back.reshape(image.shape), image)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_png_writer_compression_level_is_used(tmp_path: Path) -> None:
    image = np.tile(np.arange(256, dtype=np.uint8), (64, 3)).reshape(64, 256, 3)
    with ImageWriter("png", png_compression=0) as w0, ImageWriter("png", png_compression=9) as w9:
        w0.submit(tmp_path / "0.png", image)
        w9.submit(tmp_path / "9.png", image)
    assert (tmp_path / "9.png").stat().st_size < (tmp_path / "0.png").stat().st_size


def test_to_array_and_to_video_frame_match_pyav(grid_b: Path) -> None:
    with av.open(str(grid_b)) as c:
        frames = [f for _, f in zip(range(5), decode_video(c, DecodeState()), strict=False)]
    for frame in frames:
        for fmt in ("bgr24", "rgb24", "gray"):
            assert np.array_equal(to_array(frame, fmt), frame.to_ndarray(format=fmt))
        bgr = to_array(frame)
        ours = to_video_frame(bgr, "bgr24", "yuv420p")
        theirs = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
        assert ours.format.name == "yuv420p"
        assert np.array_equal(ours.to_ndarray(), theirs.to_ndarray())
