"""Decoding video frames and writing/reading numbered frame images.

Decoding streams one frame at a time; image files are encoded by a small thread pool
(the encoders release the GIL while they compress) with a bounded queue, so memory stays
flat on an hour of 1080p.

PNG frames are compressed by FFmpeg's PNG encoder (through PyAV), not OpenCV's: at the same
zlib level and nearly the same size it takes about two thirds of the time, because the
OpenCV wheels carry an old zlib and libpng tries every row filter (bench/video.py,
docs/BENCHMARKS.md). Images OpenCV can write but that encoder cannot take (16-bit, float)
still go through `cv2.imwrite`. `to_array` and `to_video_frame` convert pixel formats
through one swscale context per thread instead of PyAV's one per frame.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.error
import av.logging
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from facelab.errors import FacelabError
from facelab.executor import default_workers as usable_cores

FrameFormat = Literal["png", "jpg"]


def frame_name(number: int, fmt: str) -> str:
    return f"{number:05d}.{fmt}"


def default_workers() -> int:
    """Threads for encoding or decoding frame images: one more than the usable cores, as
    FFmpeg sizes its frame threads, so the cores stay busy while one worker waits for the
    GIL or the disk; at most 8."""
    return max(2, min(8, usable_cores() + 1))


#: 8-bit channel counts FFmpeg's PNG encoder takes: (cv2.mixChannels pairs from OpenCV's
#: BGR(A) to RGB(A) order, encoder pix_fmt).
_PNG_LAYOUTS: dict[int, tuple[list[int], str]] = {
    1: ([0, 0], "gray"),
    3: ([0, 2, 1, 1, 2, 0], "rgb24"),
    4: ([0, 2, 1, 1, 2, 0, 3, 3], "rgba"),
}


class _PngEncoder:
    """FFmpeg's PNG encoder, one codec context per writer thread and frame layout."""

    def __init__(self, compression: int) -> None:
        self.compression = compression
        self._local = threading.local()

    def accepts(self, image: np.ndarray) -> bool:
        channels = 1 if image.ndim == 2 else image.shape[2]
        return image.dtype == np.uint8 and image.ndim in (2, 3) and channels in _PNG_LAYOUTS

    def encode(self, image: np.ndarray) -> list[av.Packet]:
        channels = 1 if image.ndim == 2 else image.shape[2]
        pairs, pix_fmt = _PNG_LAYOUTS[channels]
        height, width = image.shape[:2]
        # Reorder straight into the frame's buffer: one pass, no extra frame-sized copy.
        # mixChannels, not cvtColor: cvtColor hands each image to OpenCV's thread pool,
        # whose idle threads then spin in sched_yield (~15% of the CPU on 2 cores).
        frame = av.VideoFrame(width, height, pix_fmt)
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)
        target = rows[:, :width * channels].reshape(height, width, channels)
        cv2.mixChannels([image.reshape(height, width, channels)], [target], pairs)
        key = (width, height, pix_fmt)
        contexts: dict[tuple[int, int, str], av.VideoCodecContext] = getattr(
            self._local, "contexts", None) or {}
        self._local.contexts = contexts
        ctx = contexts.get(key)
        if ctx is None:
            ctx = av.CodecContext.create("png", "w")
            ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
            ctx.time_base = Fraction(1, 25)  # unused by PNG; the encoder wants one set
            ctx.thread_count = 1  # one packet per frame, no frame-thread delay
            ctx.options = {"compression_level": str(self.compression), "pred": "paeth"}
            contexts[key] = ctx
        packets = ctx.encode(frame)
        if not packets:
            raise FacelabError("The PNG encoder returned no image.")
        return packets


class ImageWriter:
    """Writes images in parallel, each to a temporary name renamed when complete."""

    def __init__(self, fmt: FrameFormat, *, jpeg_quality: int = 95, png_compression: int = 1,
                 workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self._png = _PngEncoder(png_compression) if fmt == "png" else None
        if fmt == "png":
            self.params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
        else:
            self.params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="imwrite")
        self._pending: deque[Future[None]] = deque()

    def _write(self, path: Path, image: np.ndarray) -> None:
        tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        if self._png is not None and self._png.accepts(image):
            packets = self._png.encode(image)
            try:
                with open(tmp, "wb") as f:
                    for packet in packets:
                        f.write(memoryview(packet))
            except OSError as e:
                raise FacelabError(
                    f"Could not write {path} (disk full or folder not writable?): {e}") from e
        elif not cv2.imwrite(str(tmp), image, self.params):
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
    rate = Subsampler(fps)
    for frame in frames:
        if rate.keep(state.last_time):
            yield frame


class Subsampler:
    """Which frames to keep at a rate, given each one's time in order (one rule for a
    decode and for an index's timestamps)."""

    def __init__(self, fps: Fraction) -> None:
        self.step = 1 / float(fps)
        self.next_t: float | None = None

    def keep(self, t: float) -> bool:
        if self.next_t is not None and t < self.next_t - 1e-6:
            return False
        self.next_t = (t if self.next_t is None else self.next_t) + self.step
        while self.next_t <= t:  # a gap longer than the step: don't emit a burst later
            self.next_t += self.step
        return True


_sws = threading.local()


def _reformatter() -> VideoReformatter:
    """This thread's swscale context, kept across frames, single-threaded.

    PyAV's `VideoFrame.to_ndarray`/`reformat` set up a new context for every frame, and with
    it a pool of slice threads (one per core) started and joined each time; an encoder
    converts a frame it is handed with a threaded context too. On 2 busy cores those thread
    hand-offs were most of the decoding thread's time."""
    reformatter: VideoReformatter | None = getattr(_sws, "reformatter", None)
    if reformatter is None:
        reformatter = _sws.reformatter = VideoReformatter()
    return reformatter


def to_array(frame: av.VideoFrame, fmt: str = "bgr24") -> np.ndarray:
    """`frame.to_ndarray(format=fmt)`, the same pixels, without a swscale setup per frame."""
    return _reformatter().reformat(frame, format=fmt, threads=1).to_ndarray()


def to_video_frame(image: np.ndarray, layout: str, pix_fmt: str) -> av.VideoFrame:
    """`image` (in `layout`, e.g. "bgr24") as a frame in an encoder's `pix_fmt`: the same
    conversion the encoder would make, done here, e.g. in a reader thread."""
    frame = av.VideoFrame.from_ndarray(image, format=layout)
    return _reformatter().reformat(frame, format=pix_fmt, threads=1)


@contextlib.contextmanager
def ffmpeg_errors() -> Iterator[list[tuple[int, str, str]]]:
    """Collect the errors FFmpeg logs while decoding (corrupt packets, concealed frames).

    Close the container only after leaving this block: freeing a decoder whose threads are
    still logging into the capture deadlocks on the GIL (seen with damaged H.264)."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=False) as logs:  # decoder threads log too
            yield logs
    finally:
        av.logging.set_level(previous)


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image as BGR(A); a missing or corrupt file becomes one FacelabError."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise FacelabError(f"{path} does not exist.")
    image = cv2.imdecode(data, flags)
    if image is None:
        raise FacelabError(f"{path.name} is not an image OpenCV can read.")
    return image
