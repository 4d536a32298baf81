"""Frame-exact access by ordinal (`facelab.video.index`): every frame `VideoFrames` returns,
by `read` or `frames`, in any order, is the one a full sequential decode gives at that
ordinal, for each container and codec facelab meets (H.264 with B-frames in mp4 and mkv,
MPEG-1/2 program streams with open GOPs, variable frame rate, missing and repeated
timestamps, a damaged file). Test clips are made here with PyAV; each frame carries its
number in big blocks, so a wrong frame is seen even apart from the reference decode."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

import facelab.video.index as index_module
from facelab.errors import FacelabError
from facelab.executor import ProcessExecutor
from facelab.video.frames import DecodeState, decode_video, to_array
from facelab.video.index import FrameIndex, VideoFrames, build_index
from facelab.video.probe import open_video

W, H, N = 128, 96, 72
X264 = {"preset": "ultrafast", "keyint": "12", "min-keyint": "12", "scenecut": "0"}


def image(n: int) -> np.ndarray:
    """Frame n (RGB): its number in 8 bits as black or white blocks over a moving ramp."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = (x * 2 + n * 3) % 256
    img[..., 1] = (y * 2 + n * 5) % 256
    img[..., 2] = 128
    for bit in range(8):
        r, c = divmod(bit, 4)
        img[8 + r * 40: 40 + r * 40, 6 + c * 30: 30 + c * 30] = 255 if n >> bit & 1 else 0
    return img


def number(bgr: np.ndarray) -> int:
    """The number `image` drew, read back from a decoded (lossy) frame."""
    bits = [bgr[24 + r * 40, 18 + c * 30].mean() > 128
            for r, c in (divmod(bit, 4) for bit in range(8))]
    return sum(1 << bit for bit, on in enumerate(bits) if on)


def make(path: Path, codec: str, fmt: str, *, opts: dict[str, str] | None = None,
         bframes: int | None = None, pts: list[int] | None = None,
         time_base: Fraction | None = None,
         packet_pts: Callable[[int], int] | None = None) -> Path:
    """Encode N numbered frames; `pts` sets each frame's timestamp (VFR), `packet_pts`
    rewrites packet timestamps as they are muxed (repeated ones)."""
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=25, options=opts or {})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.gop_size = 12
        if time_base is not None:
            s.codec_context.time_base = time_base
        if bframes is not None:
            s.codec_context.max_b_frames = bframes

        def mux(packets: list[av.Packet]) -> None:
            for p in packets:
                if packet_pts is not None and p.pts is not None:
                    p.pts = p.dts = packet_pts(p.pts)
                out.mux(p)

        for i in range(N):
            frame = av.VideoFrame.from_ndarray(image(i), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            mux(s.encode(frame))
        mux(s.encode())
    return path


VFR_MS = [sum(40 + (j * 37) % 50 for j in range(i)) for i in range(N)]

CLIPS: dict[str, Callable[[Path], Path]] = {
    "mp4": lambda d: make(d / "h264.mp4", "libx264", "mp4", opts={**X264, "bf": "2"}),
    "mkv": lambda d: make(d / "h264.mkv", "libx264", "matroska", opts={**X264, "bf": "3"}),
    # open GOPs: the B-frames before each I-frame need the GOP before it
    "mpg2": lambda d: make(d / "mpeg2.mpg", "mpeg2video", "vob", bframes=2),
    "mpg1": lambda d: make(d / "mpeg1.mpg", "mpeg1video", "mpeg", bframes=2),
    "vfr": lambda d: make(d / "vfr.mkv", "libx264", "matroska", opts={**X264, "bf": "2"},
                          pts=VFR_MS, time_base=Fraction(1, 1000)),
    # repeated timestamps, one of them on the keyframe at 36
    "dup": lambda d: make(d / "dup.mkv", "mpeg4", "matroska", bframes=0,
                          time_base=Fraction(1, 25),
                          packet_pts=lambda p: p - 1 if p in (36, 37, 50) else p),
    # a raw H.264 stream: no frame has a timestamp
    "nopts": lambda d: make(d / "raw.h264", "libx264", "h264", opts={**X264, "bf": "2"}),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {name: build(d) for name, build in CLIPS.items()}


def reference(path: Path) -> list[np.ndarray]:
    """The frames of a full sequential decode, the ground truth of every ordinal."""
    with open_video(path) as c:
        return [to_array(f) for f in decode_video(c, DecodeState())]


@pytest.mark.parametrize("kind", list(CLIPS))
def test_every_frame_is_the_sequential_decodes(clips: dict[str, Path], kind: str) -> None:
    path = clips[kind]
    ref = reference(path)
    assert [number(f) for f in ref] == list(range(N))  # the clip can tell frames apart
    index = build_index(path)
    assert len(index) == N and not index.truncated
    assert index.keyframes[:3] == [0, 12, 24]
    with VideoFrames(path, index) as frames:
        order = list(range(N))
        random.Random(kind).shuffle(order)
        for i in order:  # random access, then backwards
            assert np.array_equal(frames.read(i), ref[i]), (kind, i)
        for i in reversed(range(N)):
            assert np.array_equal(frames.read(i), ref[i]), (kind, i)
        for wanted in (range(N), range(13, 40), range(11, 13), range(3, N, 7),
                       [0, 1, 23, 24, 25, 60, 71]):
            got = list(frames.frames(wanted))
            assert [i for i, _ in got] == list(wanted)
            for i, img in got:
                assert np.array_equal(img, ref[i]), (kind, i)


def test_timestamps_recorded(clips: dict[str, Path]) -> None:
    vfr = build_index(clips["vfr"])
    assert vfr.time_base == Fraction(1, 1000) and vfr.pts == VFR_MS
    assert vfr.span_s == pytest.approx(VFR_MS[-1] / 1000)
    assert (vfr.width, vfr.height, vfr.name) == (W, H, "vfr.mkv")
    assert build_index(clips["nopts"]).pts == [None] * N
    dup = build_index(clips["dup"]).pts
    assert len(set(dup)) == N - 2 and dup[35] == dup[36]


def decoded_frames(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the frames VideoFrames decodes (the real decoder, counted)."""
    count = [0]
    real = index_module._decode

    def counting(*args: Any) -> Any:
        for item in real(*args):
            count[0] += 1
            yield item

    monkeypatch.setattr(index_module, "_decode", counting)
    return count


@pytest.mark.parametrize("kind", ["mp4", "mkv", "vfr", "mpg2"])
def test_a_read_decodes_at_most_one_gop(clips: dict[str, Path], kind: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A read seeks to the keyframe before it, not one GOP earlier (mp4 and Matroska seek
    by pts, MPEG program streams by dts), and a sequential run decodes each frame once."""
    path = clips[kind]
    index = build_index(path)
    count = decoded_frames(monkeypatch)
    ref = reference(path)
    with VideoFrames(path, index) as frames:
        frames.read(0)
        for i in (70, 30, 47, 13, 59):
            count[0] = 0
            assert np.array_equal(frames.read(i), ref[i])
            # an MPEG-PS seek may land one GOP late and be retried a GOP earlier
            assert count[0] <= i % 12 + 1 + (26 if kind == "mpg2" else 3), (i, count[0])
        count[0] = 0
        assert sum(1 for _ in frames.frames(range(25, 60))) == 35
        assert count[0] <= 35 + (26 if kind == "mpg2" else 3)


def test_decoder_threads_do_not_change_frames(clips: dict[str, Path]) -> None:
    ref = reference(clips["mp4"])
    with VideoFrames(clips["mp4"], build_index(clips["mp4"]), threads=1) as frames:
        for i in (50, 5, 71, 12, 11):
            assert np.array_equal(frames.read(i), ref[i])


def test_build_index_hands_each_frame_once(clips: dict[str, Path]) -> None:
    ref = reference(clips["mpg2"])
    kept: list[int] = []
    counts: list[int] = []

    def keep(frame: av.VideoFrame, i: int) -> None:
        assert np.array_equal(to_array(frame), ref[i])
        kept.append(i)

    build_index(clips["mpg2"], on_frame=counts.append, keep=keep)
    assert kept == list(range(N)) and counts == list(range(1, N + 1))


def damaged(clip: Path, path: Path) -> Path:
    """`clip` with zeros over a tenth of its bytes, from the middle on."""
    data = bytearray(clip.read_bytes())
    mid = len(data) // 2
    data[mid: mid + len(data) // 10] = bytes(len(data) // 10)
    path.write_bytes(bytes(data))
    return path


def test_damaged_file_keeps_the_readable_frames(clips: dict[str, Path], tmp_path: Path
                                                ) -> None:
    path = damaged(clips["mp4"], tmp_path / "damaged.mp4")
    ref = reference(path)
    state = DecodeState()
    index = build_index(path, state=state)
    assert index.truncated and state.error and len(index) == len(ref)
    assert 12 < len(index) < N
    with VideoFrames(path, index) as frames:
        for i in (len(ref) - 1, 3, len(ref) // 2, 0):
            assert np.array_equal(frames.read(i), ref[i])
        with pytest.raises(FacelabError, match="has no frame"):
            frames.read(len(ref))


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(b"not a video" * 100)
    with pytest.raises(FacelabError, match=r"x\.mp4"):
        build_index(path)


def test_refuses_another_file(clips: dict[str, Path], tmp_path: Path) -> None:
    index = build_index(clips["mkv"])
    other = tmp_path / "h264.mkv"
    other.write_bytes(clips["mkv"].read_bytes() + b"\0")
    with pytest.raises(FacelabError, match="index it again"):
        VideoFrames(other, index)
    renamed = tmp_path / "renamed.mkv"
    renamed.write_bytes(clips["mkv"].read_bytes())
    with pytest.raises(FacelabError, match=r"renamed\.mkv"):
        VideoFrames(renamed, index)
    with pytest.raises(FacelabError, match="has no frame -1"):
        VideoFrames(clips["mkv"], index).read(-1)


# -- worker processes ----------------------------------------------------------------

_worker_frames: VideoFrames | None = None


def _init_worker(frames: VideoFrames) -> None:
    global _worker_frames
    _worker_frames = frames


def _digest_range(r: range) -> list[tuple[int, str]]:
    assert _worker_frames is not None
    return [(i, hashlib.blake2b(img.tobytes()).hexdigest())
            for i, img in _worker_frames.frames(r)]


def test_workers_decode_their_own_segments(clips: dict[str, Path]) -> None:
    path = clips["mpg2"]
    index = build_index(path)
    want = [(i, hashlib.blake2b(f.tobytes()).hexdigest()) for i, f in enumerate(reference(path))]
    frames = VideoFrames(path, index)
    frames.read(40)  # the parent's open decoder must not travel to the workers
    segments = index.segments(0, N, 20)
    with ProcessExecutor(2, init=_init_worker, initargs=(frames,)) as pool:
        got = [d for part in pool.map(_digest_range, segments) for d in part]
    assert got == want
    frames.close()


# -- segments --------------------------------------------------------------------------

def _index(frames: int, keyframes: list[int], **kw: Any) -> FrameIndex:
    return FrameIndex(pts=list(range(0, frames * 10, 10)), keyframes=keyframes,
                      time_base=Fraction(1, 250), width=W, height=H, name="v.mp4", size=1,
                      **kw)


def test_segments() -> None:
    index = _index(100, [0, 12, 24, 36, 48, 60, 72, 84, 96])
    segs = index.segments(0, 100, 20)
    assert segs == [range(0, 24), range(24, 48), range(48, 72), range(72, 100)]
    assert index.segments(5, 50, 10) == [range(5, 24), range(24, 36), range(36, 50)]
    assert index.segments(30, 31, 10) == [range(30, 31)]
    assert index.segments(7, 7, 10) == []
    sparse = _index(100, [0, 90])  # no keyframe where a cut is due: cut at max_len
    assert sparse.segments(0, 100, 10) == [range(0, 90), range(90, 100)]
    assert sparse.segments(0, 100, 10, max_len=40) == [
        range(0, 40), range(40, 80), range(80, 90), range(90, 100)]
    with pytest.raises(ValueError):
        index.segments(0, 101, 10)


# -- JSON --------------------------------------------------------------------------------

def test_json_round_trip_and_size(clips: dict[str, Path]) -> None:
    for kind in ("mp4", "vfr", "dup", "nopts"):
        index = build_index(clips[kind])
        assert FrameIndex.from_json(json.loads(json.dumps(index.to_json()))) == index
    # 90,000 frames at a variable rate, keyframes every 12 or 13: small
    rng = random.Random(0)
    pts = [0]
    for _ in range(89_999):
        pts.append(pts[-1] + rng.choice((1001, 1001, 1001, 2002, 1501)))
    keys = sorted({0, *range(0, 90_000, 12), *range(5, 90_000, 25)})
    big = _index(90_000, keys, seek_back=[1001] * len(keys))
    big.pts = pts
    text = json.dumps(big.to_json())
    assert len(text) < 1_000_000
    assert FrameIndex.from_json(json.loads(text)) == big
    cfr = json.dumps(_index(90_000, list(range(0, 90_000, 250))).to_json())
    assert len(cfr) < 300


def _bad(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    if value is KeyError:
        del d[key]
    else:
        d[key] = value
    return d


@pytest.mark.parametrize("key,value", [
    ("name", KeyError), ("version", 2), ("version", True), ("format", "x"),
    ("name", "../v.mp4"), ("name", ""), ("name", 5), ("size", -1), ("size", 1.5),
    ("width", True), ("height", 0), ("height", 70_000), ("time_base", "1/0"),
    ("time_base", "0.04"), ("time_base", "²/3"), ("time_base", None), ("frames", 0),
    ("frames", 11), ("frames", 10**9), ("truncated", "no"),
    ("pts", "0,10"), ("pts", [[10, 9]]), ("pts", [[0, 1], [10, 10]]),
    ("pts", [[10, 10**9]]), ("pts", [[10, 0], [10, 10]]), ("pts", [["10", 10]]),
    ("pts", [[2**62, 10]]), ("pts", [[2**61, 5], [2**61, 5]]),
    ("keyframes", [[0, 1], [12, 1]]), ("keyframes", [[0, 1], [0, 1]]),
    ("keyframes", [[-1, 1]]), ("keyframes", [[0, 1], [1, 10**7]]),
    ("keyframes", [[None, 1]]), ("seek_back", [[-1, 2]]), ("seek_back", [[0, 3]]),
    ("seek_back", [[0.5, 1]]),
])
def test_from_json_refuses(key: str, value: Any) -> None:
    good = _index(10, [0, 5], seek_back=[0, 0]).to_json()
    assert FrameIndex.from_json(good).keyframes == [0, 5]
    with pytest.raises(FacelabError) as e:
        FrameIndex.from_json(_bad(good, key, value))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("The frame index is invalid") and (
        key in msg or key in ("format", "version"))


def test_from_json_refuses_non_objects() -> None:
    for value in (None, [], "x", 3):
        with pytest.raises(FacelabError, match="not a JSON object"):
            FrameIndex.from_json(value)
    with pytest.raises(FacelabError, match=r"^frames_index\.json is invalid \(it is not"):
        FrameIndex.from_json([], Path("data_dst/frames_index.json"))


# -- real footage ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("clip", ["grid_b", "pexels"])
def test_real_footage(clip: str, request: pytest.FixtureRequest,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """GRID (MPEG-1 program stream) and Pexels (H.264 with B-frames, 72-frame GOPs):
    random reads and segments match the sequential decode, by digest (Pexels is 300 MB
    decoded), and a read decodes from the keyframe before it, no earlier (GRID seeks by
    dts: by pts it lands a GOP late and the retry decodes a GOP more)."""
    path: Path = request.getfixturevalue(clip)
    with open_video(path) as c:
        want = [hashlib.blake2b(to_array(f).tobytes()).digest()
                for f in decode_video(c, DecodeState())]
    index = build_index(path)
    assert len(index) == len(want) and not index.truncated
    n = len(want)
    count = decoded_frames(monkeypatch)
    with VideoFrames(path, index) as frames:
        for i in [*random.Random(0).sample(range(n), 25), n - 1, 0]:
            count[0] = 0
            assert hashlib.blake2b(frames.read(i).tobytes()).digest() == want[i], i
            key = max(k for k in index.keyframes if k <= i)
            assert count[0] <= i - key + 3, (i, count[0])
        for seg in index.segments(n // 3, n, n // 4):
            for i, img in frames.frames(seg):
                assert hashlib.blake2b(img.tobytes()).digest() == want[i], i
