"""Pieces of a video (`facelab.video.segment`): what a cluster worker decodes instead of the
whole film. Every frame read from the piece that holds it is the frame a sequential decode
of the whole film gives (test_video_index's clips: B-frames, open GOPs, VFR; and HEVC, and
ProRes, whose pieces go into QuickTime since NUT cannot hold it); a piece is smaller than
the film; a frame a piece lacks is an error, never a wrong frame. An index made in parts
(`video/index_cluster.py`) is the one a single decode pass makes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.video.index import VideoFrames, build_index
from facelab.video.index_cluster import Indexed, Part, index_in_parts, index_part, plan
from facelab.video.segment import Cutter, key_before, piece_index, piece_span
from facelab.video.source import VideoSource
from tests.test_video_index import CLIPS, H, N, W, damaged, image, make, number, reference


def _intra(path: Path, codec: str, fmt: str, pix: str) -> Path:
    """N numbered frames, every one a key frame (ProRes: NUT cannot hold it)."""
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = W, H, pix
        for i in range(N):
            for p in s.encode(av.VideoFrame.from_ndarray(image(i), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


MORE = {
    "hevc": lambda d: make(d / "hevc.mp4", "libx265", "mp4", opts={
        "x265-params": "keyint=12:min-keyint=12:scenecut=0:bframes=2:log-level=error"}),
    "prores": lambda d: _intra(d / "prores.mov", "prores_ks", "mov", "yuv422p10le"),
}
CUTTABLE = ["mp4", "mkv", "mpg2", "mpg1", "vfr", *MORE]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {name: build(d) for name, build in {**CLIPS, **MORE}.items()}


def runs() -> list[range]:
    """Runs as a stage cuts them (from key frames) and runs that start mid-GOP."""
    return [range(0, 24), range(24, 48), range(48, N), range(13, 40), range(30, 31),
            range(60, N), range(11, 13)]


@pytest.mark.parametrize("kind", CUTTABLE)
def test_pieces_give_the_sequential_decodes_frames(clips: dict[str, Path], kind: str,
                                                   tmp_path: Path) -> None:
    path = clips[kind]
    ref = reference(path)
    index = build_index(path)
    cutter = Cutter(path, index)
    assert cutter.usable()
    try:
        for run in runs():
            name, data = cutter.cut(list(run))
            span = piece_span(name)
            assert span is not None and span.start == key_before(index, run.start)
            assert span.stop == run.stop and len(data) < path.stat().st_size
            piece = tmp_path / name
            piece.write_bytes(data)
            with VideoFrames(piece, piece_index(index, piece), start=span.start) as frames:
                for i, image in frames.frames(list(run)):
                    assert number(image) == i and np.array_equal(image, ref[i]), (kind, i)
    finally:
        cutter.close()


@pytest.mark.parametrize("kind", ["dup", "nopts"])
def test_frames_without_timestamps_of_their_own_are_not_cut(clips: dict[str, Path],
                                                            kind: str) -> None:
    assert not Cutter(clips[kind], build_index(clips[kind])).usable()


def test_a_frame_the_piece_lacks_is_an_error(clips: dict[str, Path], tmp_path: Path) -> None:
    path = clips["mp4"]
    index = build_index(path)
    name, data = Cutter(path, index).cut(list(range(24, 30)))
    piece = tmp_path / name
    piece.write_bytes(data)
    with VideoFrames(piece, piece_index(index, piece), start=24) as frames:
        assert number(frames.read(29)) == 29
        with pytest.raises(FacelabError):
            frames.read(50)
        with pytest.raises(FacelabError):
            frames.read(3)


def test_a_worker_source_reads_the_piece_at_hand(clips: dict[str, Path],
                                                 tmp_path: Path) -> None:
    """A VideoSource given a folder of pieces (a cluster worker's) reads each run from the
    piece that holds it, and says so plainly when none does."""
    path = clips["mkv"]
    index = build_index(path)
    ref = reference(path)
    source = VideoSource(path, index, pieces=tmp_path)
    cutter = Cutter(path, index)
    for run in (range(12, 30), range(40, 50)):
        name, data = cutter.cut(list(run))
        (tmp_path / name).write_bytes(data)
        names = [f"{i + 1:05d}.png" for i in run]
        got = dict(source.frames(names))
        assert all(np.array_equal(got[n], ref[i]) for n, i in zip(names, run, strict=True))
        (tmp_path / name).unlink()  # as the worker does after the item
    cutter.close()
    with pytest.raises(FacelabError, match="No piece"):
        source.read("00070.png")
    source.close()


def _locally(parts: list[Part], piece: Callable[[Part], list[tuple[Path, bytes]]]
             ) -> Iterator[Indexed]:
    """The workers' side of a split index, run here: each part decoded from its piece."""
    for part in parts:
        [(path, data)] = piece(part)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        yield index_part(part)
        path.unlink()


@pytest.mark.parametrize("kind", [*CLIPS, *MORE])
def test_an_index_made_in_parts_is_the_sequential_one(clips: dict[str, Path], kind: str,
                                                      tmp_path: Path) -> None:
    """Split at key frames into parts of about 12 packets (open GOPs, B-frames, VFR; films
    without timestamps of their own are indexed in one pass): the same timestamps, key
    frames and seek offsets as one decode pass."""
    path = clips[kind]
    whole = build_index(path)
    spans = plan(path, 1, 12)
    if kind in ("nopts", "dup"):  # frames not told apart by their packets' timestamps
        assert spans is None
    else:
        assert spans is not None and len(spans) > 3
    got = index_in_parts(path, tmp_path / "pieces", _locally, max_part=12)
    assert got.to_json() == whole.to_json()


def test_a_damaged_film_indexed_in_parts_stops_where_one_pass_does(clips: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    path = damaged(clips["mp4"], tmp_path / "damaged.mp4")
    whole = build_index(path)
    assert whole.truncated
    got = index_in_parts(path, tmp_path / "pieces", _locally, max_part=12)
    assert got.to_json() == whole.to_json()
