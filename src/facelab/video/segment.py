"""A run of a video's frames as a small file of its own: what a cluster worker decodes
instead of the whole film.

`cut` copies (never re-encodes) the packets from the key frame at or before the run's first
frame up to the last packet any of its frames needs, into a small file (NUT, or QuickTime
for the codecs NUT cannot hold, such as ProRes) that keeps every packet's timestamps as the
film has them (in its time base, or an exact multiple of it). The frames' index
(`index.py`) then stays valid for the piece: `VideoFrames(piece, index, start=key)` finds
frame n by the same timestamps and proves each frame it returns, so a piece that lacks a
frame gives an error, never a wrong frame. Decoding the same packets from the same key
frame gives the same pixels a seek in the whole film gives.

A piece is named `{key}-{stop}.piece` (its ordinals [key, stop); FFmpeg knows the container
by its content), so that the worker finds the one that holds the frames it is asked for.
"""

from __future__ import annotations

import bisect
import io
import re
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error

from facelab.errors import FacelabError
from facelab.video.index import FrameIndex
from facelab.video.probe import open_video

SUFFIX = ".piece"
_NAME = re.compile(r"^(\d+)-(\d+)\.piece$")
#: containers that keep a copied stream's timestamps, in order of preference
CONTAINERS = ("nut", "mov")
_KEEP_TS = {"avoid_negative_ts": "disabled"}


def piece_name(start: int, stop: int) -> str:
    return f"{start}-{stop}{SUFFIX}"


def piece_span(name: str) -> range | None:
    """The ordinals a piece named `name` holds; None for another file."""
    m = _NAME.match(name)
    return range(int(m[1]), int(m[2])) if m else None


def key_before(index: FrameIndex, ordinal: int) -> int:
    """The last key frame at or before `ordinal` (0 when none is)."""
    i = bisect.bisect_right(index.keyframes, ordinal) - 1
    return index.keyframes[i] if i >= 0 else 0


class Cutter:
    """Cuts pieces of one video (kept open between cuts: a long film is demuxed run by
    run, never read whole)."""

    def __init__(self, video: Path, index: FrameIndex) -> None:
        self.video, self.index = Path(video), index
        self._container: av.container.InputContainer | None = None

    def usable(self) -> bool:
        """Whether pieces can be cut: every frame has a timestamp of its own (else the
        worker could not prove which frame it decoded), and a piece container takes the
        codec; if not, the whole video is sent."""
        pts = self.index.pts
        if None in pts or len(set(pts)) != len(pts):
            return False
        return piece_format(self._open()) is not None

    def cut(self, ordinals: list[int]) -> tuple[str, bytes]:
        """The piece that holds `ordinals` (its name and bytes)."""
        idx = self.index
        lo, hi = min(ordinals), max(ordinals)
        key = key_before(idx, lo)
        need = set(idx.pts[key:hi + 1])  # every frame from the key on: they are counted
        stream = self._open()
        j = bisect.bisect_left(idx.keyframes, key)
        back = idx.seek_back[j] if j < len(idx.keyframes) and idx.keyframes[j] == key else 0
        for seek in ((True, False) if key > 0 else (False,)):
            # a seek to the key frame's dts, else (it landed past it: MPEG program
            # streams) the film demuxed from its start, which finds every packet
            if seek:
                self._container.seek(idx.pts[key] - back, stream=stream, backward=True)
            else:
                stream = self._open(again=True)
            data, left = self._copy(stream, idx.pts[key], need)
            if data is not None:
                break
        if data is None or left:
            raise FacelabError(f"Could not cut frames {lo}..{hi} out of {self.video.name} "
                               "(it changed since it was indexed?).")
        return piece_name(key, hi + 1), data

    def _open(self, again: bool = False) -> av.VideoStream:
        if again:
            self.close()
        if self._container is None:
            self._container = open_video(self.video)
        return self._container.streams.video[0]

    def _copy(self, stream: av.VideoStream, start_pts: int | None,
              need: set[int | None]) -> tuple[bytes | None, set[int | None]]:
        """The packets from the key frame at `start_pts` until every timestamp in `need`
        is in (None: the demuxer did not reach that key frame)."""
        assert self._container is not None
        left = set(need)

        def done(packet: av.Packet) -> bool:
            left.discard(packet.pts)
            return not left

        return copy_packets(self._container, stream, start_pts, done), left

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def piece_format(stream: av.VideoStream) -> str | None:
    """The container a piece of `stream` goes into: the first of CONTAINERS that takes its
    codec; None when none does (the whole film then goes to each worker)."""
    codec = stream.codec_context.name
    if codec not in _FORMATS:
        _FORMATS[codec] = None
        for fmt in CONTAINERS:
            try:
                with av.open(io.BytesIO(), "w", format=fmt) as out:
                    out.add_stream_from_template(stream)
            except (ValueError, av.error.FFmpegError):
                continue
            _FORMATS[codec] = fmt
            break
    return _FORMATS[codec]


_FORMATS: dict[str, str | None] = {}  # by codec name


def write_piece(stream: av.VideoStream, packets: Iterable[av.Packet]) -> bytes:
    """`packets` of `stream` (in its time base) as a piece: their timestamps kept."""
    fmt = piece_format(stream)
    if fmt is None:
        raise FacelabError(f"No container here holds a copy of {stream.codec_context.name} "
                           "packets.")
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=_KEEP_TS) as out:
        copy = out.add_stream_from_template(stream)
        copy.time_base = stream.time_base  # NUT may take a finer one (piece_index)
        for packet in packets:
            packet.stream = copy  # rescales its timestamps to the copy's time base
            out.mux(packet)
    return buf.getvalue()


def copy_packets(container: av.container.InputContainer, stream: av.VideoStream,
                 start_pts: int | None, done: Callable[[av.Packet], bool]) -> bytes | None:
    """A piece of `stream`'s packets as demuxed from here: from the key frame whose
    timestamp is `start_pts` (None: from the first packet) until `done(packet)` (given
    before the packet is muxed, in the stream's time base) says it was the last, or the
    stream ends. None when the key frame was not found (the demuxer landed past it)."""
    started = [start_pts is None]

    def packets() -> Iterator[av.Packet]:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if not started[0]:
                if packet.is_keyframe and packet.pts == start_pts:
                    started[0] = True
                elif packet.dts is not None and start_pts is not None and \
                        packet.dts > start_pts:
                    return  # landed past it
                else:
                    continue
            last = done(packet)
            yield packet
            if last:
                return

    data = write_piece(stream, packets())
    return data if started[0] else None


def piece_index(index: FrameIndex, piece: Path) -> FrameIndex:
    """The film's index as one for `piece`: its name and size (which `VideoFrames`
    checks), the key frames it holds, and the timestamps in its time base (NUT may keep
    them in a finer one: an exact multiple, checked)."""
    span = piece_span(piece.name)
    if span is None:
        raise FacelabError(f"{piece.name} is not a piece of a video.")
    try:
        with open_video(piece) as c:
            tb = c.streams.video[0].time_base
    except (av.error.FFmpegError, IndexError) as e:
        raise FacelabError(f"{piece.name} is not a readable piece of a video ({e}).") from None
    scale = Fraction(index.time_base) / Fraction(tb)
    if scale.denominator != 1:
        raise FacelabError(f"{piece.name}: its time base {tb} is not a divisor of the "
                           f"film's {index.time_base}.")
    m = scale.numerator
    keep = [j for j, k in enumerate(index.keyframes) if k in span]
    return FrameIndex([None if p is None else p * m for p in index.pts],
                      [index.keyframes[j] for j in keep], Fraction(tb),
                      index.width, index.height, piece.name, piece.stat().st_size,
                      index.truncated, [index.seek_back[j] * m for j in keep])
