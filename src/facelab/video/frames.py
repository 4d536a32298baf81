"""Decoding video frames and writing/reading numbered frame images.

Decoding streams one frame at a time; image files are encoded by a small thread pool
(OpenCV releases the GIL while it compresses) with a bounded queue, so memory stays flat
on an hour of 1080p.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.error
import cv2
import numpy as np

from facelab.errors import FacelabError

FrameFormat = Literal["png", "jpg"]


def frame_name(number: int, fmt: str) -> str:
    return f"{number:05d}.{fmt}"


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class ImageWriter:
    """Writes images in parallel, each to a temporary name renamed when complete."""

    def __init__(self, fmt: FrameFormat, *, jpeg_quality: int = 95, png_compression: int = 1,
                 workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        if fmt == "png":
            self.params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
        else:
            self.params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="imwrite")
        self._pending: deque[Future[None]] = deque()

    def _write(self, path: Path, image: np.ndarray) -> None:
        tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        if not cv2.imwrite(str(tmp), image, self.params):
            raise FacelabError(f"Could not write {path} (disk full or folder not writable?).")
        os.replace(tmp, path)

    def submit(self, path: Path, image: np.ndarray) -> None:
        while len(self._pending) >= 2 * self.workers:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, path, image))

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class DecodeState:
    """How far decoding got; `error` is set when the file broke before its end."""

    frames: int = 0
    last_time: float = 0.0
    error: str | None = None


def decode_video(container: av.container.InputContainer, state: DecodeState
                 ) -> Iterator[av.VideoFrame]:
    """Yield the first video stream's frames; a corrupt stream stops the iteration and is
    recorded in `state.error` instead of raising, so what was readable is kept."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    try:
        for frame in container.decode(stream):
            state.frames += 1
            if frame.pts is not None:
                state.last_time = float(frame.pts * stream.time_base) - start
            yield frame
    except (av.error.InvalidDataError, av.error.EOFError, av.error.OSError) as e:
        state.error = getattr(e, "strerror", None) or str(e)


def subsample(frames: Iterator[av.VideoFrame], fps: Fraction | None, state: DecodeState
              ) -> Iterator[av.VideoFrame]:
    """Keep frames at `fps` (by timestamp); None keeps every frame."""
    if fps is None:
        yield from frames
        return
    step = 1 / float(fps)
    next_t: float | None = None
    for frame in frames:
        t = state.last_time
        if next_t is None or t >= next_t - 1e-6:
            next_t = (t if next_t is None else next_t) + step
            while next_t <= t:  # a gap longer than the step: don't emit a burst later
                next_t += step
            yield frame


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image as BGR(A); a missing or corrupt file becomes one FacelabError."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise FacelabError(f"{path} does not exist.")
    image = cv2.imdecode(data, flags)
    if image is None:
        raise FacelabError(f"{path.name} is not an image OpenCV can read.")
    return image
