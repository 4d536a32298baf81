"""The one JPEG segment walker (`facelab.jpeg`) and the readers built on it, fuzzed.

Every reader of untrusted JPEG files (aligned-face metadata, DeepFaceLab's APP15 pickle,
the provenance XMP) walks segments through `segments`; these tests hold the walker to its
documented policy (segments within bounds, or one `JpegError`, in bounded work) and every
caller to "a result, absent, or one FacelabError line", with the corner cases (RSTn, TEM,
fill bytes) read the same way by all of them.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import struct
import tempfile
import tracemalloc
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facelab import jpeg
from facelab.errors import FacelabError
from facelab.faces.dfl import find_dfl_payload, read_dfl
from facelab.faces.faceimage import (
    FaceMeta,
    encode_face,
    has_meta,
    read_face,
    read_meta,
    update_meta,
)
from facelab.jpeg import EOI, SOS, STANDALONE, JpegError, segments
from facelab.provenance import Mark, UnreadableFile, jpeg_bytes_with_mark, read_mark
from facelab.provenance.jpeg import read_jpeg_xmp
from facelab.provenance.xmp import parse_xmp

SIZE = 32
FUZZ = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def noise(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Noise, so the entropy-coded data holds many stuffed FF 00 pairs."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def encode(*params: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", noise(), [cv2.IMWRITE_JPEG_QUALITY, 90, *params])
    assert ok
    return buf.tobytes()


def make_meta() -> FaceMeta:
    src = np.random.default_rng(1).uniform(100, 200, (68, 2))
    m = np.array([[0.2, 0.0, -20.0], [0.0, 0.2, -20.0]])
    return FaceMeta(face_type="full", size=SIZE, landmarks=src @ m[:, :2].T + m[:, 2],
                    source_landmarks=src, frame_to_face=m, source_filename="00001.png",
                    source_rect=(90, 90, 210, 210), source_size=(320, 240), face_index=0,
                    yaw=1.0, pitch=2.0, roll=3.0, detector="test", score=0.9)


def header_ends(data: bytes) -> list[int]:
    """Where each header segment of a clean JPEG ends, SOI's first (independent of the
    module: no fill bytes or standalone markers in the files it is used on)."""
    ends, pos = [2], 2
    while data[pos + 1] != SOS:
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        ends.append(pos)
    return ends


def app15(payload: bytes) -> bytes:
    return b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload


MARK = Mark.synthetic("quick96:ab12cd34")
DFL_PAYLOAD = pickle.dumps({"face_type": "full_face",
                            "landmarks": [[float(i), float(i % 7)] for i in range(68)]}, 4)
PLAIN = encode()
RESTARTS = encode(cv2.IMWRITE_JPEG_RST_INTERVAL, 1)  # RSTn inside the scan data
PROGRESSIVE = encode(cv2.IMWRITE_JPEG_PROGRESSIVE, 1)  # DHT and SOS between scans
FACE = encode_face(noise(), make_meta())  # a real aligned face, as faceimage writes it
MARKED = jpeg_bytes_with_mark(FACE, MARK)
_SOS_AT = header_ends(MARKED)[-1]
EVERYTHING = MARKED[:_SOS_AT] + app15(DFL_PAYLOAD) + MARKED[_SOS_AT:]  # facelab + XMP + DeepFaceLab
BASES = {"plain": PLAIN, "restarts": RESTARTS, "progressive": PROGRESSIVE, "face": FACE,
         "everything": EVERYTHING}


# --- the walker's contract -----------------------------------------------------------------


def walk(src: bytes | io.BytesIO, until_sos: bool) -> tuple[list[tuple], str | None]:
    """The walk as (marker, start, body, end, payload) tuples, and the error kind that
    ended it (None when it ended normally). Any other exception fails the test."""
    out: list[tuple] = []
    try:
        for s in segments(src, until_sos=until_sos):
            out.append((s.marker, s.start, s.body, s.end, s.payload()))
    except JpegError as e:
        msg = str(e)
        assert e.kind in ("not-jpeg", "truncated", "malformed")
        assert "\n" not in msg and msg.startswith("The JPEG data ") and msg.endswith("."), msg
        return out, e.kind
    return out, None


def check(data: bytes, until_sos: bool) -> tuple[list[tuple], str | None]:
    """Walk `data` from memory and as a file (tiny read windows too) and check the result
    against the documented rules."""
    segs, err = walk(data, until_sos)
    for window in (3, 64, 1 << 16):
        with mock.patch.object(jpeg, "_WINDOW", window):
            assert walk(io.BytesIO(data), until_sos) == (segs, err)
    prev, scanning = 2, False
    for i, (marker, start, body, end, payload) in enumerate(segs):
        last = i == len(segs) - 1
        assert marker not in (0x00, 0xD8, 0xFF)
        assert start == prev or (scanning and start > prev)
        assert start < body <= end <= len(data) and payload == data[body:end]
        bare = marker in STANDALONE or marker == EOI or (marker == SOS and until_sos)
        at = body - (2 if bare else 4)  # the marker's FF
        assert data[at:at + 2] == bytes([0xFF, marker]) and set(data[start:at]) <= {0xFF}
        if bare:
            assert body == end
        else:
            assert int.from_bytes(data[body - 2:body], "big") == end - body + 2
        if marker == EOI or (marker == SOS and until_sos):
            assert last
        scanning = scanning or marker == SOS
        prev = end
    if err is None:
        assert segs and segs[-1][0] in ((SOS, EOI) if until_sos else (EOI,))
    return segs, err


@pytest.mark.parametrize("name", BASES)
def test_real_files_walk_to_the_end(name):
    data = BASES[name]
    head, err = check(data, until_sos=True)
    assert err is None and head[-1][0] == SOS
    assert [s[3] for s in head[:-1]] == header_ends(data)[1:]
    full, err = check(data, until_sos=False)
    assert err is None and full[-1][3] == len(data)  # EOI is the last two bytes
    scans = [s for s in full if s[0] == SOS]
    assert len(scans) > 1 if name == "progressive" else len(scans) == 1
    if name == "restarts":
        assert any(data.count(bytes([0xFF, m])) for m in jpeg.RST)


@FUZZ
@given(data=st.binary(max_size=400), soi=st.booleans(), until_sos=st.booleans())
def test_arbitrary_bytes(data, soi, until_sos):
    check((jpeg.SOI if soi else b"") + data, until_sos)


@FUZZ
@given(name=st.sampled_from(sorted(BASES)), cut=st.integers(0, 1 << 16))
def test_every_truncation_is_truncated(name, cut):
    data = BASES[name]
    cut %= len(data)
    short = data[:cut]
    sos = header_ends(data)[-1]
    want = "not-jpeg" if cut < 2 else "truncated"
    assert check(short, until_sos=True)[1] == (None if cut >= sos + 2 else want)
    assert check(short, until_sos=False)[1] == want  # EOI is gone


@FUZZ
@given(name=st.sampled_from(sorted(BASES)), which=st.integers(0, 100),
       length=st.integers(0, 0xFFFF), until_sos=st.booleans())
def test_garbage_lengths(name, which, length, until_sos):
    data = bytearray(BASES[name])
    ends = header_ends(bytes(data))
    at = ends[which % len(ends)]  # a segment's marker (SOS's too)
    data[at + 2:at + 4] = length.to_bytes(2, "big")
    _, err = check(bytes(data), until_sos)
    if length < 2 and (at != ends[-1] or not until_sos):
        assert err == "malformed"


HEADER_INSERTS = [(b"\xff\xd0", 1), (b"\xff\xd7", 1), (b"\xff\x01", 1), (b"\xff", 0),
                  (b"\xff" * 40, 0), (b"\xff\xd3\xff", 1)]  # (bytes, standalone markers)


@FUZZ
@given(name=st.sampled_from(sorted(BASES)),
       header=st.lists(st.tuples(st.integers(0, 100), st.sampled_from(HEADER_INSERTS)),
                       max_size=6),
       scan=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0xD0, 0xD7)), max_size=6))
def test_inserted_rst_tem_and_fill_change_nothing(name, header, scan):
    """RSTn, TEM and fill between header segments, and RSTn in scan data, are skipped the
    same way: the segments and their payloads stay what they were."""
    data = BASES[name]
    ends = header_ends(data)
    full, _ = walk(data, until_sos=False)
    in_scan = [p for i, s in enumerate(full) if s[0] == SOS
               for p in range(s[3], full[i + 1][1]) if data[p - 1] != 0xFF]  # not in FF xx
    inserts = {ends[i % len(ends)]: ins for i, ins in header}
    inserts |= {in_scan[i % len(in_scan)]: (bytes([0xFF, m]), 0) for i, m in scan}
    for pos in sorted(inserts, reverse=True):
        data = data[:pos] + inserts[pos][0] + data[pos:]

    for until_sos in (True, False):
        before, _ = walk(BASES[name], until_sos)
        after, err = check(data, until_sos)
        assert err is None
        assert [(m, p) for m, _, _, _, p in after if m not in STANDALONE] \
            == [(m, p) for m, _, _, _, p in before]
        assert sum(m in STANDALONE for m, *_ in after) == sum(n for _, n in inserts.values())


@pytest.mark.parametrize("data, kind", [
    (jpeg.SOI + b"\xff" * (5 << 20), "truncated"),  # megabytes of fill
    (jpeg.SOI + b"\xff\xfe\x00\x02" * 5000, "malformed"),  # more segments than MAX_SEGMENTS
    (jpeg.SOI + b"\xff\xd0" * 5000, "malformed"),
    (jpeg.SOI + b"\xff\xe1\xff\xff" + b"\0" * 100, "truncated"),  # claims 64 KiB
    (jpeg.SOI + b"\xff\xda\x00\x02" + b"\xff\x00" * (1 << 20), "truncated"),  # scan, no EOI
    (jpeg.SOI + b"\xff\xda\x00\x02" + b"\xff\xd1" * (1 << 20), "truncated"),
    (jpeg.SOI + b"\xff\xda\x00\x02" + b"\xff\xff\x00" * (1 << 20) + b"\xff\xd9", None),
    (jpeg.SOI + b"\xff\xda\x00\x02" + b"\x00" * (5 << 20), "truncated"),
    (jpeg.SOI + b"\xff\xda\x00\x02" + b"\xff" * (5 << 20), "truncated"),
    (jpeg.SOI + b"\xff\xda\x00\x02" + (b"\xff" * 5000 + b"\x00") * 200 + b"\xff\xd9", None),
], ids=["fill", "segments", "standalone", "claim", "stuffed", "restarts", "fill-stuffed",
        "zeros", "scan-fill", "fill-runs"])
def test_hostile_shapes_take_bounded_work_and_memory(data, kind):
    """Megabytes of hostile shapes walk in C-level searches and a bounded window."""
    for src in (data, io.BytesIO(data)):
        if len(data) < 1 << 20:  # many segments: tracing would only slow the walk
            assert walk(src, until_sos=False)[1] == kind
            continue
        tracemalloc.start()
        try:
            _, err = walk(src, until_sos=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert err == kind
        assert peak < 1 << 20  # no copy of the data, no allocation a length claims


# --- every caller reads the same structure ---------------------------------------------------


def _with_standalone(data: bytes) -> bytes:
    """`data` with RSTn, TEM and fill bytes before every header segment and the SOS."""
    ends = header_ends(data)
    extras = [b"\xff\xd0", b"\xff\x01\xff\xff", b"\xff\xd7\xff\xd5", b"\xff\xff\xff"]
    for n, pos in enumerate(reversed(ends)):
        data = data[:pos] + extras[n % len(extras)] + data[pos:]
    return data


def _callers(path: Path) -> dict[str, object]:
    """What each reader makes of the file: its result, or the message of its error."""
    def run(fn, *args):
        try:
            return fn(*args)
        except FacelabError as e:
            assert "\n" not in str(e)
            return e

    data = path.read_bytes()
    return {
        "read_meta": run(read_meta, path), "read_face": run(read_face, path),
        "has_meta": has_meta(path), "find_dfl_payload": run(find_dfl_payload, data),
        "read_dfl": run(read_dfl, path),
        "read_jpeg_xmp": run(read_jpeg_xmp, io.BytesIO(data), len(data), path.name),
        "read_mark": run(read_mark, path),
    }


def test_rst_tem_and_fill_before_the_scan_are_read_alike_by_every_caller(tmp_path):
    """The known disagreement: faceimage refused RSTn in a header that dfl and provenance
    skipped. Now all three skip it (as libjpeg does) and find the same segments."""
    path = tmp_path / "f.jpg"
    odd = _with_standalone(EVERYTHING)
    path.write_bytes(odd)
    got = _callers(path)
    assert got["read_meta"] == make_meta() and got["has_meta"]
    image, meta = got["read_face"]
    assert meta == make_meta()
    assert np.array_equal(image, cv2.imdecode(np.frombuffer(FACE, np.uint8), cv2.IMREAD_COLOR))
    assert got["find_dfl_payload"] == DFL_PAYLOAD
    assert got["read_dfl"].face_type == "full"
    assert parse_xmp(got["read_jpeg_xmp"]) == MARK and got["read_mark"] == MARK

    # the writers move only their own segment and keep every other byte, these markers too
    def others(data: bytes, drop) -> list[tuple[int, bytes]]:
        return [(s.marker, data[s.start:s.end]) for s in segments(data, until_sos=False)
                if not drop(s)]

    def ours(s) -> bool:
        return s.marker == 0xEA and s.payload().startswith(b"FACELAB\0")

    def xmp(s) -> bool:
        return s.marker == 0xE1 and s.payload().startswith(b"http://ns.adobe.com/xap/1.0/\0")

    update_meta(path, make_meta())
    assert others(path.read_bytes(), ours) == others(odd, ours)
    assert read_meta(path) == make_meta()
    remarked = jpeg_bytes_with_mark(odd, MARK)
    assert others(remarked, xmp) == others(odd, xmp)
    assert parse_xmp(read_jpeg_xmp(io.BytesIO(remarked), len(remarked), "x.jpg")) == MARK


@pytest.mark.parametrize("insert, kind, words", [
    (b"\xff\xd8", "malformed", "garbled"),  # a second SOI
    (b"\xff\x00", "malformed", "garbled"),  # a stuffed FF outside scan data
    (b"\x12", "malformed", "garbled"),  # not a marker
    (b"\xff\xe5\x00\x01", "malformed", "garbled"),  # length below 2
    (b"\xff\xe5\xff\xff", "truncated", "truncated"),  # runs past the end
])
def test_damage_before_every_callers_segment_is_one_error_for_all(tmp_path, insert, kind,
                                                                   words):
    at = header_ends(EVERYTHING)[1]  # after APP0: before ours, the XMP and DeepFaceLab's
    data = EVERYTHING[:at] + insert + EVERYTHING[at:]
    if kind == "truncated":
        data = EVERYTHING[:at] + insert + EVERYTHING[at:at + 1000]
    assert walk(data, until_sos=True)[1] == kind
    path = tmp_path / "f.jpg"
    path.write_bytes(data)
    got = _callers(path)
    assert words in str(got["read_meta"]) and str(got["read_face"]) == str(got["read_meta"])
    assert not got["has_meta"]
    for key in ("find_dfl_payload", "read_dfl"):
        assert isinstance(got[key], JpegError if key == "find_dfl_payload" else FacelabError)
    assert "a damaged JPEG" in str(got["read_dfl"])
    for key in ("read_jpeg_xmp", "read_mark"):
        assert isinstance(got[key], UnreadableFile)
        assert ("cut short" if kind == "truncated" else "structure is broken") in str(got[key])


def test_xmp_reader_walks_scans_with_restarts_and_progressive_ones():
    for data in (RESTARTS, PROGRESSIVE):
        marked = jpeg_bytes_with_mark(data, MARK)
        assert parse_xmp(read_jpeg_xmp(io.BytesIO(marked), len(marked), "x.jpg")) == MARK
        assert read_jpeg_xmp(io.BytesIO(data), len(data), "x.jpg") is None
        with pytest.raises(UnreadableFile, match="cut short"):
            read_jpeg_xmp(io.BytesIO(marked[:-2]), len(marked) - 2, "x.jpg")


# --- every caller, fuzzed ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_dir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 16), st.just(b"")),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.sampled_from(
        [b"\xff", b"\xff\xd0", b"\xff\x01", b"\xff\xd8", b"\xff\x00", b"\xff\xd9", b"\xff\xda",
         b"\xff\xe1\xff\xff", b"\xff\xef\x00\x01", b"\x00"])),
    st.tuples(st.just("bytes"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("length"), st.integers(0, 100), st.integers(0, 0xFFFF)),
)


@FUZZ
@given(name=st.sampled_from(sorted(BASES)), muts=st.lists(mutation, min_size=1, max_size=3))
def test_every_caller_fails_cleanly_on_fuzzed_files(fuzz_dir, name, muts):
    data = bytearray(BASES[name])
    ends = header_ends(BASES[name])
    for kind, a, b in muts:
        pos = a % (len(data) + 1)
        if kind == "flip" and pos < len(data):
            data[pos] ^= b
        elif kind == "cut":
            del data[pos:]
        elif kind in ("insert", "bytes"):
            data[pos:pos] = b
        elif kind == "length":
            at = ends[a % len(ends)]
            data[at + 2:at + 4] = b.to_bytes(2, "big")
    path = fuzz_dir / "f.jpg"
    path.write_bytes(bytes(data))
    got = _callers(path)  # any exception but FacelabError fails the test
    for key in ("read_jpeg_xmp", "read_mark"):
        assert not isinstance(got[key], FacelabError) or isinstance(got[key], UnreadableFile)
    assert isinstance(got["find_dfl_payload"], bytes | None | JpegError)
    assert isinstance(got["read_jpeg_xmp"], bytes | None | UnreadableFile)
    with contextlib.suppress(ValueError):  # the writer (for our own data): ValueError if bad
        jpeg_bytes_with_mark(bytes(data), MARK)
