"""A side's frames by name, whether they lie in a folder as images or in the video itself.

`video extract dst` keeps dst in its video by default (`frames.json` format `video`): it
decodes the video once to record every frame's timestamp and the key frames
(`frames_index.json`, `video/index.py`), and every later stage reads frames from the video
by number. `--frames png|jpg` writes image files as DeepFaceLab does, for those who edit
frames by hand. Either way a frame keeps the name it has always had (`00042.png`: number
and the name faces.json, the aligned faces, merged/ and merge.json key on), so nothing
downstream knows which it reads.

A `FrameSource` is picklable: a pool worker takes it in its init arguments and opens the
video itself. `chunks` cuts a list of frames into the units one worker reads alone: for a
video, runs that start at a key frame (a worker decodes only its own frames); for images,
single frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import FacelabError
from facelab.fsutil import read_json
from facelab.video.frames import frame_name, read_image
from facelab.video.index import FrameIndex, VideoFrames
from facelab.video.segment import SUFFIX as PIECE
from facelab.video.segment import piece_index, piece_span
from facelab.workspace import Side, Workspace, list_images

MANIFEST = "frames.json"
INDEX = "frames_index.json"
VIDEO_FORMAT = "video"  # frames.json's format when the frames stay in the video
#: a video chunk's least length: long enough that the seek to its key frame is amortised
MIN_CHUNK = 16


def frame_number(name: str) -> int | None:
    stem = Path(name).stem
    return int(stem) if stem.isdigit() else None


def kept_as_video(ws: Workspace, side: Side) -> bool:
    """Whether `video extract <side>` kept the frames in the video (no image per frame)."""
    manifest = ws.frames_dir(side) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return read_json(manifest).get("settings", {}).get("format") == VIDEO_FORMAT
    except (ValueError, OSError, AttributeError):
        return False


@dataclass
class FolderFrames:
    """Frames as image files in a folder; `reader` decodes one (default `read_image`)."""

    folder: Path
    names: list[str]
    reader: Callable[[Path], np.ndarray] = read_image
    kind: str = "folder"

    def __len__(self) -> int:
        return len(self.names)

    def path(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str) -> np.ndarray:
        return self.reader(self.folder / name)

    def frames(self, names: Iterable[str]) -> Iterator[tuple[str, np.ndarray]]:
        for name in names:
            yield name, self.read(name)

    def chunks(self, names: list[str], min_len: int = 1) -> list[list[str]]:
        step = max(1, min_len)
        return _tail_joined([names[i:i + step] for i in range(0, len(names), step)], step)

    def with_reader(self, reader: Callable[[Path], np.ndarray]) -> FolderFrames:
        return FolderFrames(self.folder, self.names, reader)

    def close(self) -> None:
        pass


@dataclass
class VideoSource:
    """Frames of a video by name: `00001.png` is the decoded frame 0 (`first` is 1).
    `pieces`: on a cluster worker, the folder where the pieces of the video that hold
    the frames at hand lie (`segment.py`), in place of the whole video."""

    video: Path
    index: FrameIndex
    first: int = 1
    kind: str = "video"
    pieces: Path | None = None
    _reader: VideoFrames | None = field(default=None, repr=False, compare=False)

    @property
    def names(self) -> list[str]:
        return [frame_name(self.first + i, "png") for i in range(len(self.index))]

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:  # the open decoder stays in its process
        return {**self.__dict__, "_reader": None}

    def ordinal(self, name: str) -> int:
        """The 0-based frame of the video that `name` is (a clear error for none)."""
        n = frame_number(name)
        if n is None or not 0 <= n - self.first < len(self.index):
            raise FacelabError(f"{self.video.name} has no frame {name} "
                               f"(it holds {len(self.index)}).")
        return n - self.first

    def _frames(self, ordinals: list[int]) -> VideoFrames:
        if self.pieces is not None:
            return self._piece(ordinals)
        if self._reader is None:
            self._reader = VideoFrames(self.video, self.index)
        return self._reader

    def _piece(self, ordinals: list[int]) -> VideoFrames:
        """The reader of the piece that holds `ordinals` (the one open, if it does)."""
        lo, hi = min(ordinals), max(ordinals)
        if self._reader is not None and self._reader.path.is_file():
            span = piece_span(self._reader.path.name)
            if span is not None and lo in span and hi in span:
                return self._reader
        assert self.pieces is not None
        for path in sorted(self.pieces.glob(f"*{PIECE}")):
            span = piece_span(path.name)
            if span is not None and lo in span and hi in span:
                self.close()
                self._reader = VideoFrames(path, piece_index(self.index, path),
                                           start=span.start)
                return self._reader
        raise FacelabError(f"No piece of {self.video.name} holds frames {lo}..{hi} here.")

    def read(self, name: str) -> np.ndarray:
        i = self.ordinal(name)
        return self._frames([i]).read(i)

    def frames(self, names: Iterable[str]) -> Iterator[tuple[str, np.ndarray]]:
        wanted = sorted((self.ordinal(n), n) for n in names)
        if not wanted:
            return
        by_ordinal = dict(wanted)
        ordinals = [i for i, _ in wanted]
        for i, image in self._frames(ordinals).frames(ordinals):
            yield by_ordinal[i], image

    def chunks(self, names: list[str], min_len: int = MIN_CHUNK) -> list[list[str]]:
        """`names` (ascending) in runs that each start at a key frame where the video has
        one and hold at least `min_len` frames (the last may hold fewer)."""
        if not names:
            return []
        ordinals = [self.ordinal(n) for n in names]
        key = set(self.index.keyframes)
        out: list[list[str]] = [[]]
        for i, name in zip(ordinals, names, strict=True):
            current = out[-1]
            if current and len(current) >= min_len and (
                    i in key or i != self.ordinal(current[-1]) + 1):
                out.append(current := [])
            current.append(name)
        return _tail_joined(out, min_len)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


FrameSource = FolderFrames | VideoSource


def _tail_joined(runs: list[list[str]], min_len: int) -> list[list[str]]:
    """A last run shorter than `min_len` joins the one before it."""
    if len(runs) > 1 and len(runs[-1]) < min_len:
        runs[-2].extend(runs.pop())
    return runs


def kept_video(ws: Workspace, side: Side) -> tuple[Path, dict[str, Any]]:
    """The video a side's frames are kept in, and its manifest record; a clear error when
    it is gone or changed since `video extract`."""
    manifest = read_json(ws.frames_dir(side) / MANIFEST)
    records = manifest.get("inputs") or []
    if len(records) != 1 or not records[0].get("complete"):
        raise FacelabError(f"`facelab video extract {side}` did not finish: run it again.")
    rec = records[0]
    video = Path(rec["path"]) if rec.get("path") else ws.root / str(rec["name"])
    if not video.is_absolute():
        video = ws.root / video
    if not video.is_file():
        raise FacelabError(f"{video} is gone, and with it the {side} frames (kept in the "
                           f"video): put it back, or extract again with --force.")
    if video.stat().st_size != rec.get("size"):
        raise FacelabError(f"{video.name} changed since `facelab video extract {side}`: "
                           "extract again with --force.")
    return video, rec


def open_frames(ws: Workspace, side: Side) -> FrameSource:
    """The side's frames, from its folder or its kept video; empty when none were
    extracted."""
    folder = ws.frames_dir(side)
    if not kept_as_video(ws, side):
        return FolderFrames(folder, [p.name for p in list_images(folder) if p.is_file()])
    video, rec = kept_video(ws, side)
    try:
        index = FrameIndex.from_json(read_json(folder / INDEX), folder / INDEX)
    except (OSError, ValueError) as e:
        raise FacelabError(f"{folder / INDEX} is missing or damaged ({e}): run `facelab "
                           f"video extract {side} --force`.") from None
    return VideoSource(video, index, int(rec.get("first", 1)))
