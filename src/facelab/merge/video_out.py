"""`merge --to-video`: the merged frames encoded straight into the result video, in segments.

A worker encodes each segment of consecutive frames (a run of dst frames from a key frame,
see `video/source.py`) into its own file in `data_dst/merged_video/` with a fresh encoder
(so every segment starts with its own key frame and depends on nothing before it), under a
temporary name renamed when complete. The driver records each finished segment in that
folder's `merge.json` (the same per-item record as merged frames: settings included), and
when all are there joins them packet for packet, with dst's audio and the provenance tags,
into `result.<ext>`. A killed run redoes only unfinished segments; each segment is encoded
by one thread with the same settings, so its bytes, and so the joined result, are those of
an uninterrupted run. That thread is the writer's own: PyAV lets go of the GIL while x264
encodes, so a frame's encoding overlaps the next frames' prediction and blending (at 1080p
the encoder is a third of a merged frame's CPU).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from facelab.errors import FacelabError
from facelab.fsutil import atomic_path, naming, temp_sibling
from facelab.progress import Reporter
from facelab.provenance import Mark, video_metadata
from facelab.provenance.credentials import Signing, sign_result_file
from facelab.video.audio import AudioMux
from facelab.video.formats import FORMATS, OutputFormat
from facelab.video.frames import to_video_frame
from facelab.video.probe import VideoInfo

SEGMENTS_DIR = "merged_video"  # in data_dst/
SEGMENT_EXT = ".mp4"  # exact time base, global header: its packets join into any muxer
#: formats a streaming merge writes: 8-bit 4:2:0 without alpha (alpha: --to-frames)
STREAMABLE = ("mp4", "mp4-lossless", "avi")


@dataclass(frozen=True)
class VideoSpec:
    """How every segment is encoded: the same settings make the same bytes."""

    format: str
    rate: Fraction
    width: int  # the frames' size
    height: int
    options: dict[str, str] = field(default_factory=dict)  # the encoder's (crf, preset)
    bit_rate: int | None = None

    @property
    def fmt(self) -> OutputFormat:
        return FORMATS[self.format]

    @property
    def pad(self) -> tuple[int, int]:
        """4:2:0 needs an even size: one row or column of edge pixels added."""
        return (self.width % 2, self.height % 2) if self.fmt.even_size else (0, 0)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["rate"] = f"{self.rate.numerator}/{self.rate.denominator}"
        return d


def segment_name(first: str, last: str) -> str:
    """`seg_00001-00024`: a segment named by its first and last frame."""
    return f"seg_{Path(first).stem}-{Path(last).stem}"


def segment_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{SEGMENT_EXT}"


class SegmentWriter:
    """Encodes one segment's frames (BGR, in order) into its file on a thread of its own
    (`QUEUE` frames ahead at most); `close` completes it."""

    QUEUE = 4

    def __init__(self, path: Path, spec: VideoSpec) -> None:
        self.path, self.spec = path, spec
        self._tmp = temp_sibling(path)
        fmt = spec.fmt
        with naming(path):
            self._out = av.open(str(self._tmp), mode="w", format="mp4")
        stream = self._out.add_stream(fmt.codec, rate=spec.rate, options=dict(spec.options))
        stream.width, stream.height = spec.width + spec.pad[0], spec.height + spec.pad[1]
        stream.pix_fmt = fmt.pix_fmt
        stream.time_base = Fraction(1) / spec.rate
        stream.codec_context.thread_count = 1  # one thread: the same bytes on every run
        if spec.bit_rate is not None:
            stream.bit_rate = spec.bit_rate
        self._stream = stream
        self._n = 0
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(self.QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encode, daemon=True,
                                        name=f"encode {path.name}")
        self._thread.start()

    def add(self, image: np.ndarray) -> None:
        self._raise()
        self._queue.put(image.copy())  # the caller may reuse its array

    def _encode(self) -> None:
        px, py = self.spec.pad
        try:
            while (image := self._queue.get()) is not None:
                if px or py:
                    image = np.pad(image, ((0, py), (0, px), (0, 0)), mode="edge")
                frame = to_video_frame(np.ascontiguousarray(image), "bgr24",
                                       self.spec.fmt.pix_fmt)
                frame.pts = self._n
                self._n += 1
                self._out.mux(self._stream.encode(frame))
            self._out.mux(self._stream.encode(None))
        except BaseException as e:  # handed to the caller's thread
            self._error = e
            while self._queue.get() is not None:  # unblock a caller waiting to put
                pass

    def _raise(self) -> None:
        if self._error is not None:
            with naming(self.path):
                raise self._error

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def close(self) -> Path:
        """Flush, close and rename: from now on the segment counts as written."""
        self._finish()
        self._raise()
        with naming(self.path):
            self._out.close()
            fd = os.open(self._tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._finish()
        with contextlib.suppress(av.error.FFmpegError, OSError):
            self._out.close()
        self._tmp.unlink(missing_ok=True)


def segment_frames(path: Path) -> int:
    """Frames a finished segment holds (0 when it cannot be read)."""
    try:
        with av.open(str(path)) as c:
            return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    except (av.error.FFmpegError, OSError, IndexError):
        return 0


def _packets(path: Path) -> Iterator[tuple[av.Packet, av.video.stream.VideoStream]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for packet in c.demux(stream):
            if packet.size:
                yield packet, stream


def join_segments(segments: list[Path], output: Path, spec: VideoSpec, info: VideoInfo,
                  audio: Path | None, mark: Mark, tag: str, reporter: Reporter,
                  before_rename: Callable[[], object] | None = None,
                  signing: Signing | None = None) -> str | None:
    """The segments' packets, retimed one after another, into `output` (written under a
    temporary name, renamed when complete, `before_rename` run just before) with `audio`'s
    first track, and `signing`'s C2PA manifest embedded last; returns how the audio was
    carried, or None."""
    fmt = spec.fmt
    total = sum(segment_frames(p) for p in segments)
    described = None
    with atomic_path(output) as tmp:
        with av.open(str(tmp), mode="w", format=fmt.muxer, options=fmt.mux_options) as out:
            out.metadata["comment"] = tag
            for key, value in video_metadata(mark, fmt.muxer).items():
                out.metadata[key] = value
            with av.open(str(segments[0])) as first:
                vs = out.add_stream_from_template(first.streams.video[0])
            vs.time_base = Fraction(1) / spec.rate
            mux = None
            if audio is not None:
                end = info.start_s + total / float(spec.rate)
                mux = AudioMux(out, fmt.muxer, audio, 0, info.start_s, end)
                described = mux.describe()
            offset = 0
            with reporter.task(f"join → {output.name}", len(segments)) as task:
                for path in segments:
                    count = 0
                    for packet, stream in _packets(path):
                        tick = stream.time_base * spec.rate  # segment ticks per frame
                        pts = None if packet.pts is None else round(packet.pts * tick)
                        dts = None if packet.dts is None else round(packet.dts * tick)
                        duration = round(packet.duration * tick) if packet.duration else 1
                        packet.stream = vs
                        packet.time_base = Fraction(1) / spec.rate
                        packet.pts = None if pts is None else pts + offset
                        packet.dts = None if dts is None else dts + offset
                        packet.duration = duration
                        out.mux(packet)
                        count += 1
                        if mux and packet.pts is not None:
                            mux.write_until(packet.pts / float(spec.rate))
                    offset += count
                    task.advance()
            if offset != total:
                raise FacelabError(f"The merged segments hold {offset} frames, not {total}: "
                                   "merge again with --force.")
            if mux:
                mux.finish()
        if signing is not None:  # last: its hash covers the finished file, tags included
            sign_result_file(tmp, tmp, signing, output.name)
        if before_rename is not None:
            before_rename()
    return described
