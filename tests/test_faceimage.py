"""Aligned-face files: metadata inside a plain JPG, round trips, and hostile input."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facelab.errors import FacelabError
from facelab.faces.faceimage import (
    FaceMeta,
    encode_face,
    has_meta,
    read_face,
    read_meta,
    update_meta,
    write_face,
)
from tests.conftest import DATA

SIZE = 128
SEG_CHUNK = 65535 - 2 - 8 - 8  # JSON bytes per segment, as the format describes


def face_image(size: int = SIZE) -> np.ndarray:
    """A real face when the shared data is there, else a textured gradient."""
    path = DATA / "images" / "grace_hopper.jpg"
    img = cv2.imread(str(path)) if path.is_file() else None
    if img is None:
        y, x = np.mgrid[0:size, 0:size]
        img = np.dstack([x * 2, y * 2, (x * y) % 256]).astype(np.uint8)
    h, w = img.shape[:2]
    s = min(h, w)
    return cv2.resize(img[:s, :s], (size, size), interpolation=cv2.INTER_AREA)


def make_meta(size: int = SIZE, seed: int = 0, **kw) -> FaceMeta:
    rng = np.random.default_rng(seed)
    m = np.array([[0.5, 0.1, -100.0], [-0.1, 0.5, -40.0]])
    src = rng.uniform(200, 400, (68, 2))
    fields = dict(
        face_type="whole-face", size=size,
        landmarks=src @ m[:, :2].T + m[:, 2], source_landmarks=src, frame_to_face=m,
        source_filename="00012.png", source_rect=(190, 180, 420, 430), source_size=(640, 480),
        face_index=0, yaw=-12.5, pitch=3.25, roll=0.0, detector="blazeface", score=0.97,
        mask_polys=[{"type": "include", "pts": [[1.0, 2.0], [50.0, 2.0], [25.0, 60.0]]}],
        original_name="00012_0.jpg", extra={"note": ["ok", 1, None]},
    )
    fields.update(kw)
    return FaceMeta(**fields)


def write_faces(folder: Path, count: int) -> None:
    """`count` small faces in `folder`, each with metadata naming a different original
    (so sorting by original name reverses them)."""
    for i in range(count):
        write_face(folder / f"{i:05d}_0.jpg", face_image(64),
                   make_meta(64, seed=i, original_name=f"{9 - i:05d}_0.jpg"))


def app0_end(jpeg: bytes) -> int:
    """Offset just past SOI + APP0 of an OpenCV-encoded JPEG (where facelab inserts)."""
    assert jpeg[2:4] == b"\xff\xe0"
    return 4 + int.from_bytes(jpeg[4:6], "big")


def segment(chunk: bytes, seq: int, count: int, crc: int) -> bytes:
    body = b"FACELAB\0" + struct.pack(">HHI", seq, count, crc) + chunk
    return b"\xff\xea" + struct.pack(">H", len(body) + 2) + body


def with_payload(payload: bytes, order=None, drop=()) -> bytes:
    """A plain JPEG with `payload` hand-packed in facelab segments (independent of the module)."""
    plain = plain_jpeg()
    crc = zlib.crc32(payload)
    chunks = [payload[i:i + SEG_CHUNK] for i in range(0, len(payload), SEG_CHUNK)] or [b""]
    segs = [segment(c, i, len(chunks), crc) for i, c in enumerate(chunks, 1)]
    idx = [i for i in (order or range(len(segs))) if i not in drop]
    at = app0_end(plain)
    return plain[:at] + b"".join(segs[i] for i in idx) + plain[at:]


def plain_jpeg(size: int = SIZE) -> bytes:
    return cv2.imencode(".jpg", face_image(size), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def scan_data(jpeg: bytes) -> bytes:
    return jpeg[jpeg.index(b"\xff\xda"):]


def error_of(fn, path) -> str:
    with pytest.raises(FacelabError) as e:
        fn(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith("."), msg
    return msg


# --- round trips ------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    img, meta = face_image(), make_meta()
    path = tmp_path / "00012_0.jpg"
    write_face(path, img, meta)
    back, got = read_face(path)
    assert got == meta and read_meta(path) == meta
    np.testing.assert_allclose(got.landmarks, meta.landmarks)
    assert got.source_rect == (190, 180, 420, 430) and got.source_size == (640, 480)
    assert back.shape == img.shape and np.abs(back.astype(int) - img).mean() < 8  # JPEG loss
    np.testing.assert_array_equal(back, cv2.imdecode(np.frombuffer(plain_jpeg(), np.uint8), 1))
    assert has_meta(path)
    assert not list(tmp_path.glob(".*part*"))  # the atomic write left no temp file


def test_round_trip_numpy_scalars_and_float32(tmp_path):
    meta = make_meta(size=np.int64(SIZE), yaw=np.float32(1.5), landmarks=make_meta().landmarks
                     .astype(np.float32), source_rect=tuple(np.array([1, 2, 30, 40])))
    write_face(tmp_path / "f.jpg", face_image(), meta)
    got = read_meta(tmp_path / "f.jpg")
    assert got.yaw == 1.5 and got.size == SIZE and got.source_rect == (1, 2, 30, 40)
    np.testing.assert_allclose(got.landmarks, meta.landmarks)


def test_large_metadata_spans_several_segments(tmp_path):
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 256, (512, 512), dtype=np.uint8)  # noise: PNG cannot shrink it
    mesh = rng.uniform(0, SIZE, (478, 3))
    meta = make_meta(mask=mask, mesh=mesh)
    path = tmp_path / "big.jpg"
    write_face(path, face_image(), meta)
    data = path.read_bytes()
    assert data.count(b"FACELAB\0") > 5
    got = read_meta(path)
    assert got == meta and got.mask.dtype == np.uint8
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_allclose(got.mesh, mesh)


def test_jpeg_decodes_exactly_like_one_without_metadata():
    plain = plain_jpeg()
    ours = encode_face(face_image(), make_meta(mask=np.full((SIZE, SIZE), 255, np.uint8)))
    at = app0_end(plain)
    assert ours.startswith(plain[:at]) and ours.endswith(plain[at:])  # only segments added
    assert ours[at:at + 2] == b"\xff\xea"
    dec = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in (plain, ours)]
    np.testing.assert_array_equal(dec[0], dec[1])
    pil = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in (plain, ours)]
    np.testing.assert_array_equal(pil[0], pil[1])


def test_update_meta_keeps_pixel_bytes(tmp_path):
    path = tmp_path / "f.jpg"
    write_face(path, face_image(), make_meta())
    before = scan_data(path.read_bytes())
    big = make_meta(mask=np.random.default_rng(2).integers(0, 256, (400, 400), dtype=np.uint8),
                    face_index=3)
    update_meta(path, big)
    assert scan_data(path.read_bytes()) == before and read_meta(path) == big
    small = make_meta(mask_polys=[], extra={})
    update_meta(path, small)
    data = path.read_bytes()
    assert scan_data(data) == before and read_meta(path) == small
    assert data.count(b"FACELAB\0") == 1


def test_update_meta_adds_metadata_to_a_plain_jpeg(tmp_path):
    path = tmp_path / "plain.jpg"
    path.write_bytes(plain_jpeg())
    assert not has_meta(path)
    update_meta(path, make_meta())
    assert read_meta(path) == make_meta() and scan_data(path.read_bytes()) == scan_data(
        plain_jpeg())
    with pytest.raises(FacelabError, match="64×64"):
        update_meta(path, make_meta(size=64))


def test_face_to_frame_inverts_the_transform():
    meta = make_meta(frame_to_face=np.array([[0.8, -0.3, -150.0], [0.25, 0.9, -70.5]]))
    inv = meta.face_to_frame()
    assert inv.shape == (2, 3)
    np.testing.assert_allclose(inv, cv2.invertAffineTransform(meta.frame_to_face), atol=1e-12)
    pts = np.random.default_rng(3).uniform(-50, 700, (20, 2))
    face = pts @ meta.frame_to_face[:, :2].T + meta.frame_to_face[:, 2]
    np.testing.assert_allclose(face @ inv[:, :2].T + inv[:, 2], pts, atol=1e-9)


def test_read_meta_never_touches_scan_data(tmp_path):
    path = tmp_path / "f.jpg"
    write_face(path, face_image(), make_meta())
    data = path.read_bytes()
    sos = data.index(b"\xff\xda")
    path.write_bytes(data[:sos + 2] + os.urandom(64))  # scan header gone, scan garbage
    assert read_meta(path) == make_meta()
    assert "truncated" in error_of(read_face, path)


def test_metadata_survives_a_rename(tmp_path):
    path = tmp_path / "00012_0.jpg"
    write_face(path, face_image(), make_meta())
    moved = tmp_path / "sorted" / "0001.jpg"
    moved.parent.mkdir()
    os.replace(path, moved)
    assert read_meta(moved).original_name == "00012_0.jpg"


def test_unknown_keys_from_a_newer_version_land_in_extra():
    d = make_meta().to_json() | {"version": 2, "gaze": [1, 2]}
    meta = FaceMeta.from_json(d)
    assert meta.version == 2 and meta.extra == {"note": ["ok", 1, None], "gaze": [1, 2]}
    assert meta.to_json()["version"] == 1 and "gaze" not in meta.to_json()


def test_optional_fields_may_be_absent():
    d = make_meta().to_json()
    for k in ("mesh", "mask_polys", "mask", "original_name", "extra"):
        del d[k]
    meta = FaceMeta.from_json(d)
    assert meta.mesh is None and meta.mask_polys == [] and meta.extra == {}


@pytest.mark.parametrize("kw", [
    {"landmarks": np.full((68, 2), np.nan)}, {"face_type": "huge"}, {"size": 8},
    {"frame_to_face": np.zeros((2, 3))}, {"extra": {"a": np.zeros(2)}},
    {"source_filename": "../etc/passwd"}, {"mask": np.zeros((4, 4), np.float32)},
])
def test_writer_refuses_invalid_metadata(tmp_path, kw):
    with pytest.raises(ValueError, match="invalid face metadata"):
        write_face(tmp_path / "f.jpg", face_image(), make_meta(**kw))
    assert not list(tmp_path.iterdir())


def test_writer_refuses_a_wrong_image_size(tmp_path):
    with pytest.raises(ValueError, match="128×128×3"):
        encode_face(face_image(64), make_meta())


# --- every damaged or hostile file is one FacelabError ------------------------------------------


def good_json() -> dict:
    return make_meta().to_json()


def bad_json(**kw) -> bytes:
    return json.dumps(good_json() | kw).encode()


def png_header_claiming(w: int, h: int) -> str:
    """A PNG whose header claims w×h grey pixels and whose data is missing."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 4
    return base64.b64encode(png + b"\0" * 16).decode()


def multi_payload() -> bytes:
    """Valid metadata that needs three segments."""
    mask = np.random.default_rng(4).integers(0, 256, (340, 340), dtype=np.uint8)
    d = make_meta(mask=mask).to_json()
    payload = json.dumps(d).encode()
    assert 2 * SEG_CHUNK < len(payload) <= 3 * SEG_CHUNK
    return payload


def truncate_inside_segment() -> bytes:
    data = with_payload(json.dumps(good_json()).encode())
    return data[:app0_end(data) + 100]


def flip_json_byte() -> bytes:
    data = bytearray(with_payload(json.dumps(good_json()).encode()))
    data[app0_end(data) + 40] ^= 0x20
    return bytes(data)


def dfl_like() -> bytes:
    plain = plain_jpeg()
    at = app0_end(plain)
    seg = b"\xff\xef" + struct.pack(">H", 12) + b"\x80\x04}q\x00."
    return plain[:at] + seg + b"\0\0\0\0" + plain[at:]


def digits(n: int) -> bytes:
    s = json.dumps(good_json())
    return s.replace('"size": 128', '"size": ' + "9" * n).encode()


CASES = {
    "empty": (lambda: b"", "not a JPEG"),
    "text": (lambda: b"hello, world\n" * 10, "not a JPEG"),
    "png": (lambda: cv2.imencode(".png", face_image())[1].tobytes(), "not a JPEG"),
    "soi only": (lambda: b"\xff\xd8", "truncated"),
    "garbled marker": (lambda: b"\xff\xd8\x12\x34" + b"\0" * 50, "garbled"),
    "bad length": (lambda: b"\xff\xd8\xff\xe0\x00\x01" + b"\0" * 50, "garbled"),
    "eoi before scan": (lambda: b"\xff\xd8\xff\xd9", "no image data"),
    "no frame header": (lambda: b"\xff\xd8\xff\xda\x00\x02", "no frame header"),
    "plain jpeg": (plain_jpeg, "no facelab metadata"),
    "deepfacelab": (dfl_like, "DeepFaceLab"),
    "cut in segment": (truncate_inside_segment, "truncated"),
    "cut in header": (lambda: plain_jpeg()[:300], "truncated"),
    "segment missing": (lambda: with_payload(multi_payload(), drop=(1,)),
                        "segment 2 of 3 is missing"),
    "segment twice": (lambda: with_payload(multi_payload(), order=[0, 1, 1, 2]), "twice"),
    "bad sequence": (lambda: _crafted(segment(b"{}", 2, 1, 0)), "numbered 2 of 1"),
    "segments disagree": (lambda: _crafted(segment(b"{", 1, 2, 7) + segment(b"}", 2, 2, 8)),
                          "disagree"),
    "short segment": (lambda: _crafted(b"\xff\xea\x00\x0cFACELAB\0\x00\x01"), "cut short"),
    "checksum": (flip_json_byte, "checksum"),
    "not utf-8": (lambda: with_payload(b'{"a": "\xff\xfe"}'), "not valid JSON"),
    "not json": (lambda: with_payload(b"{nope"), "not valid JSON"),
    "empty payload": (lambda: with_payload(b""), "not valid JSON"),
    "json list": (lambda: with_payload(b"[1, 2]"), "not a JSON object"),
    "NaN": (lambda: bad_json(yaw=float("nan")), "not valid JSON"),
    "1e999": (lambda: json.dumps(good_json()).replace('"yaw": -12.5', '"yaw": 1e999').encode(),
              "yaw"),
    "huge int": (lambda: digits(5000), "not valid JSON"),
    "big int": (lambda: digits(40), "size"),
    "deep nesting": (lambda: json.dumps(good_json())[:-1].encode() + b', "x": '
                     + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON"),
    "deep extra": (lambda: bad_json(extra={"a": json.loads("[" * 50 + "]" * 50)}), "extra"),
    "missing key": (lambda: json.dumps({k: v for k, v in good_json().items()
                                        if k != "landmarks"}).encode(), "landmarks is missing"),
    "bool size": (lambda: bad_json(size=True), "size"),
    "str number": (lambda: bad_json(yaw="1.5"), "yaw"),
    "float index": (lambda: bad_json(face_index=1.0), "face_index"),
    "face type": (lambda: bad_json(face_type="nose"), "face_type"),
    "landmarks 67": (lambda: bad_json(landmarks=[[0, 0]] * 67), "landmarks"),
    "landmarks str": (lambda: bad_json(landmarks=[["1", 2]] * 68), "landmarks"),
    "landmarks bool": (lambda: bad_json(source_landmarks=[[True, 2]] * 68), "source_landmarks"),
    "landmarks flat": (lambda: bad_json(landmarks=[0.0] * 136), "landmarks"),
    "coord huge": (lambda: bad_json(landmarks=[[1e300, 0]] * 68), "landmarks"),
    "coord int overflow": (lambda: bad_json(landmarks=[[10**400, 0]] * 68),
                           "landmarks"),
    "matrix 3x3": (lambda: bad_json(frame_to_face=[[1, 0, 0]] * 3), "frame_to_face"),
    "matrix singular": (lambda: bad_json(frame_to_face=[[1, 2, 0], [2, 4, 0]]), "invertible"),
    "mesh gigantic": (lambda: bad_json(mesh=[[0, 0, 0]] * 100_001), "mesh"),
    "mesh 2 cols": (lambda: bad_json(mesh=[[0, 0]] * 10), "mesh"),
    "rect": (lambda: bad_json(source_rect=[10, 10, 5, 20]), "source_rect"),
    "rect short": (lambda: bad_json(source_rect=[10, 10, 5]), "source_rect"),
    "source size": (lambda: bad_json(source_size=[0, 480]), "source_size"),
    "path name": (lambda: bad_json(source_filename="../../x.png"), "source_filename"),
    "name nul": (lambda: bad_json(original_name="a\u0000b.jpg"), "original_name"),
    "detector": (lambda: bad_json(detector=["x"]), "detector"),
    "angle": (lambda: bad_json(roll=720), "roll"),
    "polys dict": (lambda: bad_json(mask_polys={"type": "include"}), "mask_polys"),
    "poly type": (lambda: bad_json(mask_polys=[{"type": 1, "pts": [[0, 0]] * 3}]), "mask_polys"),
    "poly keys": (lambda: bad_json(mask_polys=[{"type": "include"}]), "mask_polys"),
    "poly pts": (lambda: bad_json(mask_polys=[{"type": "exclude", "pts": [[0, 0]] * 2}]), "pts"),
    "poly too many": (lambda: bad_json(mask_polys=[{"type": "exclude", "pts": [[0, 0]] * 3}]
                                       * 1001), "mask_polys"),
    "mask not b64": (lambda: bad_json(mask="@@@"), "mask"),
    "mask not png": (lambda: bad_json(mask="aGVsbG8gd29ybGQ="), "mask"),
    "mask bomb": (lambda: bad_json(mask=png_header_claiming(100_000, 100_000)), "mask"),
    "mask broken png": (lambda: bad_json(mask=png_header_claiming(64, 64)), "mask"),
    "mask colour": (lambda: bad_json(mask=base64.b64encode(
        cv2.imencode(".png", face_image(16))[1].tobytes()).decode()), "mask"),
    "extra list": (lambda: bad_json(extra=[1]), "extra"),
    "deep unknown key": (lambda: bad_json(future=json.loads("[" * 50 + "]" * 50)), "extra"),
    "version 0": (lambda: bad_json(version=0), "version"),
}


def _crafted(segs: bytes) -> bytes:
    plain = plain_jpeg()
    at = app0_end(plain)
    return plain[:at] + segs + plain[at:]


def _as_file(tmp_path: Path, make) -> Path:
    data = make()
    if data.startswith(b"{"):  # a bare payload: pack it into a valid JPEG
        data = with_payload(data)
    path = tmp_path / "00012_0.jpg"
    path.write_bytes(data)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_damaged_files_give_one_clear_error(tmp_path, case):
    make, words = CASES[case]
    path = _as_file(tmp_path, make)
    msg = error_of(read_meta, path)
    assert words.lower() in msg.lower(), msg
    assert msg.startswith("00012_0.jpg"), msg
    assert error_of(read_face, path) == msg  # the full reader says the same
    if words in ("not a JPEG", "no facelab metadata", "DeepFaceLab"):
        assert not has_meta(path)


def test_missing_file_and_folder(tmp_path):
    assert "does not exist" in error_of(read_meta, tmp_path / "nope.jpg")
    assert "does not exist" in error_of(read_face, tmp_path / "nope.jpg")
    assert "folder" in error_of(read_meta, tmp_path)
    assert not has_meta(tmp_path / "nope.jpg") and not has_meta(tmp_path)


def test_pixels_that_disagree_with_metadata(tmp_path):
    path = tmp_path / "f.jpg"
    path.write_bytes(encode_face(face_image(), make_meta()))
    data = path.read_bytes()
    sof = data.index(b"\xff\xc0")
    path.write_bytes(data[:sof + 5] + struct.pack(">HH", 60000, 60000) + data[sof + 9:])
    assert "60000×60000" in error_of(read_face, path)  # refused before decoding
    assert read_meta(path) == make_meta()


def test_from_json_names_the_file():
    with pytest.raises(FacelabError, match=r"^a\.jpg's facelab metadata is invalid \(size"):
        FaceMeta.from_json(good_json() | {"size": "big"}, "dir/a.jpg")
    with pytest.raises(FacelabError, match=r"^Face metadata is invalid"):
        FaceMeta.from_json([])


# --- fuzz --------------------------------------------------------------------------------------

_FUZZ_BASE = encode_face(face_image(16), make_meta(size=16, mesh=np.zeros((5, 3))), 80)
_HEADER_LEN = _FUZZ_BASE.index(b"\xff\xda")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=4),
    max_leaves=20,
)
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, _HEADER_LEN + 40), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, len(_FUZZ_BASE)), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, _HEADER_LEN + 40), st.integers(0, 255)),
    st.tuples(st.just("key"), st.sampled_from(sorted(good_json())), st.just(0)),
    st.tuples(st.just("json"), st.just(0), st.just(0)),
    st.tuples(st.just("text"), st.integers(0, 10**6), st.integers(1, 255)),  # past the CRC
    st.tuples(st.just("bytes"), st.binary(max_size=64), st.just(0)),
)
_GOOD_TEXT = json.dumps(good_json()).encode()


def _check(path: Path) -> None:
    for fn in (read_meta, read_face):
        try:
            out = fn(path)
        except FacelabError as e:
            assert "\n" not in str(e)
        else:
            meta = out if isinstance(out, FaceMeta) else out[1]
            assert meta.size >= 16
    has_meta(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@pytest.mark.slow
@given(muts=st.lists(mutation, min_size=1, max_size=3), value=json_values)
def test_fuzz_only_facelab_errors(tmp_path, muts, value):
    data = bytearray(_FUZZ_BASE)
    for kind, a, b in muts:
        if kind == "flip" and a < len(data):
            data[a] ^= b
        elif kind == "cut":
            del data[a:]
        elif kind == "insert":
            data[a:a] = bytes([b])
        elif kind == "key":
            data = bytearray(with_payload(json.dumps(good_json() | {a: value}).encode()))
        elif kind == "json":
            data = bytearray(with_payload(json.dumps(value).encode()))
        elif kind == "text":  # a corrupt JSON text under a correct checksum
            text = bytearray(_GOOD_TEXT)
            text[a % len(text)] ^= b
            data = bytearray(with_payload(bytes(text)))
        elif kind == "bytes":
            data = bytearray(with_payload(a))
    path = tmp_path / "fuzz.jpg"
    path.write_bytes(bytes(data))
    _check(path)
