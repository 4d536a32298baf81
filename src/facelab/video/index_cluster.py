"""A video's frame index (`index.py`) made by a cluster's workers, each decoding a part of
the film, so that the driver only demuxes (reads packets; decodes nothing).

The driver reads the packets' timestamps and key-frame flags, and splits the film at key
frames into parts, several per worker (`plan`). Part j's piece (`pieces`) runs from its
key frame through the next part's key frame and the packets after it that show before it
(an open GOP's leading frames, which belong to part j); the first part starts at the
film's first packet, as a sequential decode does. A worker decodes its piece
and keeps the frames whose timestamps fall in its part's span, [its key frame's, the next
one's). Joined in order, the parts' frames are the sequential decode's: the test compares
the result with `build_index` on every kind of clip it knows. A film whose packets lack
timestamps, or whose frames come out of order, is indexed here instead (the local pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import av.error

from facelab.errors import FacelabError
from facelab.video.frames import DecodeState
from facelab.video.index import MAX_TS, FrameIndex, _decode, build_index
from facelab.video.probe import open_video
from facelab.video.segment import SUFFIX as PIECE
from facelab.video.segment import write_piece

MAX_PART = 2000  # packets: more parts than workers, but each one's start amortised


@dataclass(frozen=True)
class Part:
    """One worker's share: its piece (where the worker finds it) and the span of
    timestamps whose frames are its own (None: open-ended)."""

    piece: Path
    lo: int | None
    hi: int | None
    time_base: Fraction  # the film's


@dataclass(frozen=True)
class Indexed:
    """A part's frames: timestamps in output order, which are key frames, the first
    frame's size, and the error that stopped the decode, if any."""

    pts: list[int]
    keyframes: list[int]
    size: tuple[int, int]
    error: str | None


def plan(path: Path, workers: int = 1, max_part: int = MAX_PART
         ) -> list[tuple[int | None, int | None]] | None:
    """The parts' spans [lo, hi) in timestamps, cut at key-frame packets into parts of
    about a quarter of each worker's share (at most `max_part` packets: several parts per
    worker keep them all busy to the end); None when the film cannot be split (a packet
    without a timestamp of its own: index it in one pass)."""
    keys: list[tuple[int, int]] = []  # (packet number, pts) of each key-frame packet
    seen: set[int] = set()
    with open_video(path) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None or packet.pts in seen:
                    return None  # frames not told apart by their timestamps
                if packet.is_keyframe:
                    keys.append((len(seen), packet.pts))
                seen.add(packet.pts)
        except av.error.FFmpegError:
            pass  # a broken tail: the last part's decode finds where it breaks
    size = min(max_part, max(1, len(seen) // (4 * max(1, workers))))
    cuts: list[int] = []
    last = 0
    for number, pts in keys[1:]:
        if number - last >= size:
            cuts.append(pts)
            last = number
    if not cuts:
        return [(None, None)]
    return [(None, cuts[0]), *pairwise(cuts), (cuts[-1], None)]


Packet = tuple[bytes, int | None, int | None, bool, int]  # data, pts, dts, key, duration


def pieces(path: Path, spans: list[tuple[int | None, int | None]],
           key_dts: dict[int, int]) -> Iterator[bytes]:
    """Each part's piece in turn, in one forward pass of the demuxer (no seek: MPEG
    program streams seek imprecisely): from its key frame (the film's first packet for
    the first part) through the next part's key frame and the packets after it until one
    shows after that key frame. `key_dts` gets each key-frame packet's dts by its pts
    (a NUT piece keeps no dts: the seek offsets are the film's)."""
    with open_video(path) as container:
        stream = container.streams.video[0]
        j, cur, nxt, past = 0, [], None, False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                rec = (bytes(packet), packet.pts, packet.dts, packet.is_keyframe,
                       packet.duration or 0)
                if packet.is_keyframe and packet.pts is not None and packet.dts is not None:
                    key_dts[packet.pts] = packet.dts
                hi = spans[j][1] if j < len(spans) else None
                if nxt is not None:
                    nxt.append(rec)
                elif hi is not None and packet.is_keyframe and packet.pts == hi:
                    nxt, past = [rec], True
                cur.append(rec)
                if past and packet.pts is not None and hi is not None and packet.pts > hi:
                    yield _piece(stream, cur)
                    j, cur, nxt, past = j + 1, nxt or [], None, False
        except av.error.FFmpegError:
            pass  # a broken tail: the last part's decode stops where the sequential one does
        yield _piece(stream, cur)
        if nxt is not None:  # the film ended before a packet that shows after its key
            yield _piece(stream, nxt)


def _piece(stream: av.VideoStream, packets: list[Packet]) -> bytes:
    """The recorded packets as a piece (`segment.write_piece`: timestamps kept)."""

    def rebuilt() -> Iterator[av.Packet]:
        for data, pts, dts, key, duration in packets:
            p = av.Packet(data)
            p.pts, p.dts, p.duration, p.is_keyframe = pts, dts, duration, key
            p.time_base = stream.time_base
            yield p

    try:
        return write_piece(stream, rebuilt())
    except (av.error.FFmpegError, FacelabError):
        raise _Unsplittable from None  # timestamps or a codec no piece container takes


def index_part(part: Part) -> Indexed:
    """Decode a part's piece: the frames whose timestamps fall in its span (a worker)."""
    state = DecodeState()
    pts: list[int] = []
    keys: list[int] = []
    size = (0, 0)
    with open_video(part.piece) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        m = Fraction(part.time_base) / Fraction(stream.time_base)
        if m.denominator != 1:
            raise FacelabError(f"{part.piece.name}: its time base {stream.time_base} is not a "
                               f"divisor of the film's {part.time_base}.")
        for frame, _ in _decode(container, stream, state):
            if frame.pts is None:
                raise FacelabError("a frame without a timestamp")
            t = frame.pts // m.numerator
            if (part.lo is not None and t < part.lo) or (part.hi is not None and t >= part.hi):
                continue
            if not pts:
                size = (frame.width, frame.height)
            if frame.key_frame:
                keys.append(len(pts))
            pts.append(t)
    return Indexed(pts, keys, size, state.error)


Mapper = Callable[[list[Part], Callable[[Part], list[tuple[Path, bytes]]]],
                  Iterator[Indexed]]


def build_index_on_cluster(address: str, root: Path, path: Path,
                           on_frame: Callable[[int], None] | None = None,
                           max_part: int = MAX_PART) -> FrameIndex:
    """`build_index(path)` with the decoding done by the cluster at `address` (the
    pieces staged under `root`, the workspace)."""
    from facelab.cluster.ray_executor import RayExecutor, cluster_cpus
    from facelab.cluster.stages import PIECES

    def on_ray(parts: list[Part], piece: Callable[[Part], list[tuple[Path, bytes]]]
               ) -> Iterator[Indexed]:
        with RayExecutor(address, root, workers=cluster_cpus(address),
                         item_inputs=piece) as ex:
            yield from ex.map(index_part, parts)

    return index_in_parts(path, root / PIECES, on_ray, on_frame, cluster_cpus(address),
                          max_part)


def index_in_parts(path: Path, folder: Path, mapper: Mapper,
                   on_frame: Callable[[int], None] | None = None,
                   workers: int = 1, max_part: int = MAX_PART) -> FrameIndex:
    """The index of `path` from its parts, decoded by `mapper(parts, piece)` (in the
    parts' order; `piece(part)` gives the file a part's worker reads at `part.piece`);
    the local pass when the film cannot be split or its parts do not join up as a
    sequential decode would."""
    spans = plan(path, workers, max_part)
    if spans is None or len(spans) < 2:
        return build_index(path, on_frame=on_frame)
    with open_video(path) as probe:
        tb = probe.streams.video[0].time_base or Fraction(1, 1)
    parts = [Part(folder / f"index-{k}{PIECE}", lo, hi, tb) for k, (lo, hi) in enumerate(spans)]
    key_dts: dict[int, int] = {}
    cut = pieces(path, spans, key_dts)

    def piece(part: Part) -> list[tuple[Path, bytes]]:  # asked for in the parts' order
        return [(part.piece, next(cut))]

    pts: list[int | None] = []
    keys: list[int] = []
    back: list[int] = []
    size, error = (0, 0), None
    results = mapper(parts, piece)
    try:
        for got in results:
            if not pts:
                size = got.size
            if pts and got.pts and got.pts[0] <= (pts[-1] or 0):
                raise _Unsplittable
            for k in got.keyframes:
                t = got.pts[k]
                keys.append(len(pts) + k)
                back.append(min(max(t - key_dts.pop(t, t), 0), MAX_TS))
            pts += got.pts
            if on_frame is not None:
                on_frame(len(pts))
            if got.error is not None:
                error = got.error  # the sequential decode stops there too
                break
    except _Unsplittable:
        return build_index(path, on_frame=on_frame)
    finally:
        getattr(results, "close", lambda: None)()
        cut.close()
    if not pts:
        raise FacelabError(f"{path.name} holds no decodable video frame.")
    return FrameIndex(pts=pts, keyframes=keys, time_base=tb, width=size[0], height=size[1],
                      name=path.name, size=path.stat().st_size, truncated=error is not None,
                      seek_back=back)


class _Unsplittable(Exception):
    """The parts did not join up: index in one local pass."""
