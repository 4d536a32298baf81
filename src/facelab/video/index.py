"""Frame-exact random access to a video's frames by 0-based ordinal.

A video stays a video (no image per frame) and "frame n" is still exact anywhere: one decode
pass (`build_index`) records every frame's timestamp in output order and which frames are
keyframes; `VideoFrames` then finds frame n by seeking to a keyframe before it and decoding
on, and proves it found the right one. The ordinal is the one a full sequential decode
(`frames.decode_video`) gives, so it is never a timestamp guess.

How a frame is proven right after a seek: decoded frames are ignored until a keyframe the
index knows by a unique timestamp comes out (frames before it may be concealment garbage:
MPEG-1/2 P-frames or open-GOP B-frames whose reference was skipped); from that anchor on,
frames are counted and every timestamp must equal the index's. A seek that lands past the
target (MPEG program streams seek by dts and are imprecise), a stream whose timestamps are
missing or repeated, or any mismatch falls back to an earlier keyframe, finally to decoding
from the start of a freshly opened file, which is the sequential decode itself. A frame
that cannot be found that way is a FacelabError, never a wrong frame.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from facelab.errors import FacelabError
from facelab.video.frames import DecodeState, to_array
from facelab.video.index_json import FORMAT, MAX_TS, VERSION, Invalid, parse, runs
from facelab.video.probe import open_video

_DECODE_ERRORS = (av.error.InvalidDataError, av.error.EOFError, av.error.OSError)


@dataclass
class FrameIndex:
    """Every decoded frame of the first video stream, in output (presentation) order."""

    pts: list[int | None]   # each frame's timestamp in time_base (None: the decoder gave none)
    keyframes: list[int]    # ordinals of frames a decoder can start from after a seek
    time_base: Fraction
    width: int
    height: int
    name: str               # the file's name and byte size it was built from (identity check)
    size: int
    truncated: bool = False  # the file broke before its end; `pts` holds what decoded
    #: per keyframe, how far before its pts to seek (its packet's pts - dts): demuxers seek
    #: by dts, and MPEG program streams land a GOP late when asked for the pts
    seek_back: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.seek_back) != len(self.keyframes):
            self.seek_back = [0] * len(self.keyframes)

    def __len__(self) -> int:
        return len(self.pts)

    @property
    def span_s(self) -> float:
        """Seconds from the first frame with a timestamp to the last (0 without two)."""
        known = [p for p in self.pts if p is not None]
        return float((known[-1] - known[0]) * self.time_base) if len(known) > 1 else 0.0

    def check(self, path: Path) -> None:
        """Refuse a file that is not the one this index was built from (name and size)."""
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            raise FacelabError(f"{path} does not exist.")
        if path.name != self.name or size != self.size:
            raise FacelabError(
                f"{path.name} ({size:,} bytes) is not the video its frame index was built "
                f"from ({self.name}, {self.size:,} bytes); index it again.")

    def segments(self, start: int, stop: int, min_len: int,
                 max_len: int | None = None) -> list[range]:
        """[start, stop) split into ranges that each begin at a keyframe where possible and
        are at least `min_len` frames (the last too, unless [start, stop) is shorter): the
        unit of work a worker decodes alone. With `max_len`, a range that reaches it with
        no keyframe to cut at is cut there anyway (its worker then decodes from the
        keyframe before it)."""
        if not 0 <= start <= stop <= len(self) or min_len < 1 or (
                max_len is not None and max_len < min_len):
            raise ValueError(f"bad segment request {start}..{stop} of {len(self)}, "
                             f"min_len {min_len}, max_len {max_len}")
        cuts = [start]
        i = bisect.bisect_right(self.keyframes, start)
        while True:
            lo = cuts[-1] + min_len
            if lo >= stop:
                break
            i = bisect.bisect_left(self.keyframes, lo, i)
            key = self.keyframes[i] if i < len(self.keyframes) else stop
            hi = stop if max_len is None else cuts[-1] + max_len
            cut = key if key < hi else hi
            if cut > stop - min_len:
                break
            cuts.append(cut)
        cuts.append(stop)
        return [range(a, b) for a, b in pairwise(cuts) if b > a]

    def to_json(self) -> dict[str, Any]:
        """Compact: timestamps, keyframes and seek offsets as run lengths of their steps, so
        a constant-rate hour is a few lines and 90,000 irregular frames stay under 1 MB."""
        return {
            "format": FORMAT, "version": VERSION, "name": self.name, "size": self.size,
            "width": self.width, "height": self.height,
            "time_base": f"{self.time_base.numerator}/{self.time_base.denominator}",
            "frames": len(self.pts), "truncated": self.truncated,
            "pts": runs(self.pts), "keyframes": runs(self.keyframes),
            "seek_back": runs(self.seek_back, steps=False),
        }

    @classmethod
    def from_json(cls, d: Any, path: Path | None = None) -> FrameIndex:
        """Validate everything (the JSON is untrusted; `path` names it in the refusal)
        and build the index."""
        try:
            return cls(**parse(d))
        except Invalid as e:
            where = path.name if path is not None else "The frame index"
            raise FacelabError(f"{where} is invalid ({e}); delete it so facelab indexes "
                               "the video again.") from None


def _decode(container: av.container.InputContainer, stream: av.VideoStream,
            state: DecodeState) -> Iterator[tuple[av.VideoFrame, int | None]]:
    """`frames.decode_video`'s frames (the same demux-then-decode, threads, stop on a
    corrupt stream), each with its keyframe packet's dts when it is a keyframe."""
    key_dts: dict[int, int] = {}
    try:
        for packet in container.demux(stream):
            if packet.is_keyframe and packet.pts is not None and packet.dts is not None:
                key_dts[packet.pts] = packet.dts
            for frame in packet.decode():
                state.frames += 1
                dts = key_dts.pop(frame.pts, None) if frame.key_frame else None
                yield frame, dts
    except _DECODE_ERRORS as e:
        state.error = getattr(e, "strerror", None) or str(e)


def build_index(path: Path, on_frame: Callable[[int], None] | None = None,
                keep: Callable[[av.VideoFrame, int], None] | None = None,
                state: DecodeState | None = None) -> FrameIndex:
    """Index `path` in one decode pass (only decoding tells the exact frame count).

    `keep(frame, ordinal)` lets a caller use each decoded frame in the same pass;
    `on_frame(count)` reports the frames decoded so far. A file that breaks midway is
    indexed up to the break with `truncated` set (the reason in `state.error`); one that
    yields no frame at all is a FacelabError."""
    state = state if state is not None else DecodeState()
    size = path.stat().st_size if path.is_file() else 0
    pts: list[int | None] = []
    keyframes: list[int] = []
    seek_back: list[int] = []
    with open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        for frame, dts in _decode(container, stream, state):
            n = len(pts)
            if n == 0:
                width, height = frame.width, frame.height
            if frame.key_frame:
                keyframes.append(n)
                back = frame.pts - dts if frame.pts is not None and dts is not None else 0
                seek_back.append(min(max(back, 0), MAX_TS))
            pts.append(frame.pts)
            if keep is not None:
                keep(frame, n)
            if on_frame is not None:
                on_frame(n + 1)
        time_base = stream.time_base or Fraction(1, 1)
    if not pts:
        why = f" ({state.error})" if state.error else ""
        raise FacelabError(f"{path.name} holds no decodable video frame{why}.")
    return FrameIndex(pts=pts, keyframes=keyframes, time_base=time_base, width=width,
                      height=height, name=path.name, size=size,
                      truncated=state.error is not None, seek_back=seek_back)


class _Lookup:
    """Timestamp -> ordinal for timestamps that name exactly one frame."""

    def __init__(self, pts: list[int | None]) -> None:
        self._pts = pts
        self._sorted = all(b is not None and a is not None and b > a
                           for a, b in pairwise(pts)) and pts[0] is not None
        self._map: dict[int, int] = {}
        if not self._sorted:
            seen: dict[int, int] = {}
            for i, p in enumerate(pts):
                if p is not None:
                    seen[p] = -1 if p in seen else i
            self._map = {p: i for p, i in seen.items() if i >= 0}

    def __call__(self, ts: int | None) -> int | None:
        if ts is None:
            return None
        if not self._sorted:
            return self._map.get(ts)
        i = bisect.bisect_left(self._pts, ts)
        return i if i < len(self._pts) and self._pts[i] == ts else None


#: containers a forked child inherited from its parent: never freed there (their decoder
#: threads live only in the parent, and joining them could hang)
_INHERITED: list[av.container.InputContainer] = []


class VideoFrames:
    """Frames of one video by 0-based ordinal; picklable (path + index: the container is
    opened lazily in the process that reads), so a pool worker can take it in its init
    args. `threads` is FFmpeg's decoder thread count (0: its own choice). One reader at
    a time: it holds one container and decoder. `start`: the ordinal of the file's first
    frame, for a piece of the video (`segment.py`) that begins at that key frame."""

    def __init__(self, path: Path, index: FrameIndex, threads: int = 0,
                 start: int = 0) -> None:
        self.path, self.index, self.threads, self.start = Path(path), index, threads, start
        index.check(self.path)
        self._reset()

    def _reset(self) -> None:
        self._container: av.container.InputContainer | None = None
        self._decoded: Iterator[tuple[av.VideoFrame, int | None]] | None = None
        self._pid = os.getpid()
        self._pos: int | None = None  # ordinal of the last frame out; None: not anchored

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "index": self.index, "threads": self.threads,
                "start": self.start}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __len__(self) -> int:
        return len(self.index)

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            if self._pid == os.getpid():
                self._container.close()
            else:
                _INHERITED.append(self._container)
        self._reset()

    def read(self, i: int) -> np.ndarray:
        """Frame `i` as BGR uint8."""
        return to_array(self._locate(i))

    def frames(self, numbers: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(ordinal, BGR image) for each of `numbers`, best ascending: decodes on while the
        next one is reachable that way, seeks only past a keyframe or backwards."""
        for n in numbers:
            yield n, to_array(self._locate(n))

    # -- decoding ----------------------------------------------------------------------

    def _open(self) -> None:
        if self._container is not None and self._pid == os.getpid():
            return
        self.close()
        self.index.check(self.path)
        self._lookup = lookup = _Lookup(self.index.pts)
        keys = self.index.keyframes
        known = [j for j, k in enumerate(keys) if lookup(self.index.pts[k]) == k]
        self._anchor_set = {keys[j] for j in known}  # keyframes a decode can anchor at
        self._anchors = [j for j in known if keys[j] > 0]  # to seek to (0: the start)
        self._anchor_ords = [keys[j] for j in self._anchors]
        self._max_gap = max(b - a for a, b in pairwise([0, *keys, len(self.index)]))
        self._restart()
        assert self._container is not None
        # seek to a keyframe's dts, not its pts: MPEG program and transport streams search
        # by dts and land past the keyframe given its pts, where mp4 and Matroska would
        # land a GOP early given its dts; learnt again from any seek that lands late
        self._by_dts = self._container.format.name in ("mpeg", "mpegts", "mpegvideo")

    def _restart(self) -> None:
        """Decode from the start of a freshly opened file: the sequential decode itself."""
        if self._container is None or self._decoded is not None:
            if self._container is not None:
                self._container.close()
            self._container = open_video(self.path)
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = self.threads
        self._decoded = _decode(self._container, self._stream, DecodeState())
        self._pos = -1 if self.start == 0 else None  # a piece: anchored at its key frame

    def _seek(self, anchor: int, by_dts: bool) -> bool:
        j = self._anchors[anchor]
        pts = self.index.pts[self.index.keyframes[j]]
        assert self._container is not None and pts is not None
        target = pts - (self.index.seek_back[j] if by_dts else 0)
        try:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            return False
        self._decoded = _decode(self._container, self._stream, DecodeState())
        self._pos = None
        return True

    def _locate(self, t: int) -> av.VideoFrame:
        n = len(self.index)
        if not 0 <= t < n:
            raise FacelabError(f"{self.path.name} has no frame {t} (it has {n}, from 0).")
        self._open()
        a = bisect.bisect_right(self._anchor_ords, t) - 1  # nearest anchor at or before t
        if self._pos is not None and self._pos < t and (
                a < 0 or self._anchor_ords[a] <= self._pos + 1) and (
                (frame := self._forward(t)) is not None):
            return frame  # decoding on: no keyframe to seek to between here and t
        tried = 0
        while a >= 0 and tried < 6:
            # by pts first unless this demuxer seeks by dts; a pts that lands past the
            # keyframe is retried at its dts (earlier), never the other way round
            back = self.index.seek_back[self._anchors[a]] > 0
            for by_dts in ((True,) if self._by_dts else (False, True)) if back else (False,):
                if self._seek(a, by_dts) and (frame := self._forward(t)) is not None:
                    self._by_dts = by_dts
                    return frame
            a -= 1 << tried  # a seek that landed past t: step back further each time
            tried += 1
        self._restart()
        if (frame := self._forward(t)) is None:
            raise FacelabError(
                f"Frame {t} of {self.path.name} could not be decoded again (the file is "
                "damaged there or changed since it was indexed).")
        return frame

    def _forward(self, t: int) -> av.VideoFrame | None:
        """Decode on to frame t; None when it cannot be proven (the decoder is then left
        unanchored). After a seek, frames count from the first keyframe known by its
        timestamp; each counted frame's timestamp must be the index's."""
        assert self._decoded is not None
        pts = self.index.pts
        untrusted = 0
        for frame, _dts in self._decoded:
            if self._pos is None:
                o = self._lookup(frame.pts)
                if o is not None and o > t:
                    break  # landed past the target
                if o is None or not frame.key_frame or o not in self._anchor_set:
                    untrusted += 1
                    if untrusted > self._max_gap + 32:
                        break
                    continue
            else:
                o = self._pos + 1
                if o >= len(pts) or frame.pts != pts[o]:
                    break  # not the frame the sequential decode gave here
            self._pos = o
            if o == t:
                return frame
        self._pos = None
        return None
