"""DeepFaceLab faceset metadata: read real-layout files, refuse anything that is not data.

Pickles are only ever *written* here (pickle.dumps); every read goes through facelab.
"""

from __future__ import annotations

import builtins
import os
import pickle
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facelab.errors import FacelabError
from facelab.faces import dfl
from facelab.faces.dfl import find_dfl_payload, is_dfl_file, read_dfl

from .conftest import DATA

RNG = np.random.default_rng(7)
LANDMARKS = (RNG.random((68, 2)) * 256).astype(np.float32)
SOURCE_LM = (RNG.random((68, 2)) * 1000).astype(np.float32)
MAT = RNG.random((2, 3))


def face_image() -> np.ndarray:
    src = DATA / "images" / "grace_hopper.jpg"
    img = cv2.imread(str(src)) if src.is_file() else None
    if img is None:  # a gradient keeps the tests running without the data folder
        ramp = np.linspace(0, 255, 256, dtype=np.uint8)
        img = np.dstack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)),
                         np.full((256, 256), 90, np.uint8)])
    return cv2.resize(img, (256, 256))


def mask_png() -> np.ndarray:
    mask = np.zeros((64, 64), np.uint8)
    cv2.circle(mask, (32, 32), 20, 255, -1)
    ok, buf = cv2.imencode(".png", mask)
    assert ok
    return buf  # what DFL stores: cv2.imencode's N×1 uint8 array


def dfl_dict(landmarks_as_list: bool = True) -> dict:
    """Laid out as DeepFaceLab 2.0's extractor and XSeg editor write it."""
    return {
        "face_type": "whole_face",
        "landmarks": LANDMARKS.tolist() if landmarks_as_list else LANDMARKS,
        "eyebrows_expand_mod": 1.0,
        "source_filename": "00042.png",
        "source_rect": np.array([10, 20, 310, 330]),
        "source_landmarks": SOURCE_LM.tolist(),
        "image_to_face_mat": MAT,
        "seg_ie_polys": {"polys": [
            {"type": 0, "pts": np.float32([[1, 2], [30, 4], [5, 60]])},
            {"type": 1, "pts": np.float32([[0, 0], [100, 0], [100, 100], [0, 100]])},
        ]},
        "xseg_mask": mask_png(),
    }


def jpeg_with_app15(payload: bytes, image: np.ndarray | None = None) -> bytes:
    """A JPEG with `payload` in an APP15 segment after the last APPn, as DFLJPG.dump does."""
    ok, buf = cv2.imencode(".jpg", face_image() if image is None else image,
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    data = buf.tobytes()
    pos = 2
    while 0xE0 <= data[pos + 1] <= 0xEF:
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    assert len(payload) + 2 <= 0xFFFF
    return data[:pos] + b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload + data[pos:]


def png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    ok, buf = cv2.imencode(".png", face_image())
    assert ok
    data = buf.tobytes()
    assert data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"
    chunk = struct.pack(">I", len(payload)) + kind + payload
    chunk += struct.pack(">I", zlib.crc32(kind + payload))
    return data[:-12] + chunk + data[-12:]


def write(tmp_path: Path, data: bytes, name: str = "face.jpg") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def check_face(face: dfl.DflFace) -> None:
    assert face.face_type == "whole-face"
    assert face.landmarks.dtype == np.float64 and face.landmarks.shape == (68, 2)
    np.testing.assert_array_equal(face.landmarks, LANDMARKS.astype(np.float64))
    np.testing.assert_array_equal(face.source_landmarks, SOURCE_LM.astype(np.float64))
    np.testing.assert_array_equal(face.image_to_face_mat, MAT)
    assert face.source_filename == "00042.png"
    assert face.source_rect == (10, 20, 310, 330)
    assert face.eyebrows_expand_mod == 1.0
    assert [p["type"] for p in face.polys] == ["include", "exclude"]  # DFL draws includes first
    assert face.polys[0]["pts"] == [[0, 0], [100, 0], [100, 100], [0, 100]]
    assert face.polys[1]["pts"] == [[1, 2], [30, 4], [5, 60]]
    expected = np.zeros((64, 64), np.uint8)
    cv2.circle(expected, (32, 32), 20, 255, -1)
    assert face.xseg_mask is not None
    np.testing.assert_array_equal(face.xseg_mask, expected)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("as_list", [True, False])
def test_jpeg_round_trip(tmp_path: Path, protocol: int, as_list: bool) -> None:
    payload = pickle.dumps(dfl_dict(as_list), protocol=protocol)
    path = write(tmp_path, jpeg_with_app15(payload))
    assert find_dfl_payload(path.read_bytes()) == payload
    assert is_dfl_file(path)
    check_face(read_dfl(path))
    assert cv2.imread(str(path)) is not None  # still a valid JPEG


def test_numpy2_module_names_are_admitted(tmp_path: Path) -> None:
    payload = pickle.dumps(dfl_dict(False), protocol=3)
    renamed = payload.replace(b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n")
    assert renamed != payload
    check_face(read_dfl(write(tmp_path, jpeg_with_app15(renamed))))


def test_dfl1_png_with_fcwp_chunk_and_old_poly_list(tmp_path: Path) -> None:
    meta = dfl_dict()
    del meta["seg_ie_polys"], meta["xseg_mask"], meta["eyebrows_expand_mod"]
    meta |= {"face_type": "midfull_face", "pitch_yaw_roll": (np.float32(0.1), 0.2, 0.3),
             "ie_polys": [(0, [[1.0, 1.0], [2.0, 2.0], [3.0, 1.0]]), (1, [[5.0, 5.0]])],
             "fanseg_mask": None}
    path = write(tmp_path, png_with_chunk(b"fcWp", pickle.dumps(meta, protocol=3)), "f.png")
    assert is_dfl_file(path)
    face = read_dfl(path)
    assert face.face_type == "mid-full"
    np.testing.assert_array_equal(face.landmarks, LANDMARKS.astype(np.float64))
    assert face.polys == [{"type": "include", "pts": [[5.0, 5.0]]},
                          {"type": "exclude", "pts": [[1.0, 1.0], [2.0, 2.0], [3.0, 1.0]]}]
    assert face.xseg_mask is None and face.eyebrows_expand_mod == 1.0


class Opens:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


class Shell:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class Evals:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.target)!r}, 'w')",))


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("evil", [Opens, Shell, Evals])
def test_code_in_the_pickle_is_refused_and_not_run(tmp_path: Path, evil: type,
                                                    protocol: int) -> None:
    target = tmp_path / "pwned"
    meta = dfl_dict() | {"source_filename": evil(target)}
    path = write(tmp_path, jpeg_with_app15(pickle.dumps(meta, protocol=protocol)))
    assert is_dfl_file(path)  # the container is fine; its contents are not
    with pytest.raises(FacelabError) as info:
        read_dfl(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: DeepFaceLab metadata asks for ")
    assert message.endswith("; refused (not plain data).")
    assert ("system" in message) if evil is Shell else (evil.__name__[:4].lower() in message)
    assert not target.exists()


def refusal(tmp_path: Path, payload: bytes) -> str:
    with pytest.raises(FacelabError) as info:
        read_dfl(write(tmp_path, jpeg_with_app15(payload)))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_object_dtype_array_is_refused(tmp_path: Path) -> None:
    meta = dfl_dict() | {"landmarks": np.array([1, "a", None], dtype=object)}
    message = refusal(tmp_path, pickle.dumps(meta, protocol=4))
    assert "asks for an array of dtype 'O8'" in message and "refused" in message


class ClaimsArray:
    """Pickles as numpy's own reduce would, with a shape and data of our choosing."""

    def __init__(self, shape: tuple, raw: bytes, code: str = "f8") -> None:
        self.state = (1, shape, np.dtype(code), False, raw)

    def __reduce__(self):
        return (np.core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.state)


def test_huge_claimed_array_is_refused_without_allocating(tmp_path: Path) -> None:
    meta = dfl_dict() | {"landmarks": ClaimsArray((10**6, 10**6), b"\0" * 16)}
    tracemalloc.start()
    try:
        message = refusal(tmp_path, pickle.dumps(meta, protocol=4))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "an array of 1000000000000 elements" in message
    assert peak < 20 << 20


def test_array_whose_data_does_not_match_its_shape_is_refused(tmp_path: Path) -> None:
    meta = dfl_dict() | {"landmarks": ClaimsArray((68, 2), b"\0" * 16)}
    assert "does not match its shape" in refusal(tmp_path, pickle.dumps(meta, protocol=4))


def test_huge_length_claim_in_the_opcode_stream(tmp_path: Path) -> None:
    # BINBYTES8 claiming a terabyte: CPython's unpickler would allocate it before reading
    payload = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc."
    assert "corrupt or truncated" in refusal(tmp_path, payload)


def test_huge_memo_index_is_refused_before_cpython_sizes_its_memo(tmp_path: Path) -> None:
    # LONG_BINPUT 4e9: CPython's unpickler would grow its memo to ~64 GB first
    payload = b"\x80\x04N" + b"r" + (4_000_000_000).to_bytes(4, "little") + b"0}."
    tracemalloc.start()
    try:
        message = refusal(tmp_path, payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "corrupt or truncated (ValueError)" in message
    assert peak < 20 << 20


def test_persistent_id_is_refused(tmp_path: Path) -> None:
    payload = b"\x80\x02X\x03\x00\x00\x00abcQ."  # BINPERSID
    assert "asks for a persistent object" in refusal(tmp_path, payload)


def test_admitted_globals_cannot_be_given_attributes(tmp_path: Path) -> None:
    # BUILD on the stand-in for numpy.dtype, trying to replace its constructor
    payload = b"\x80\x02cnumpy\ndtype\nN}X\x02\x00\x00\x00fnK\x01s\x86b."
    assert "attributes set on a numpy constructor" in refusal(tmp_path, payload)
    check_face(read_dfl(write(tmp_path, jpeg_with_app15(pickle.dumps(dfl_dict())))))


def test_reconstruct_of_another_class_is_refused(tmp_path: Path) -> None:
    payload = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nK\x01\x85R."
    assert "asks for an array of class 1" in refusal(tmp_path, payload)


def test_truncated_pickle(tmp_path: Path) -> None:
    payload = pickle.dumps(dfl_dict(), protocol=4)
    message = refusal(tmp_path, payload[: len(payload) // 2])
    assert message == f"{tmp_path / 'face.jpg'}: DeepFaceLab metadata is corrupt or truncated " \
                      "(ValueError)."


def test_plain_jpeg_is_not_a_dfl_face(tmp_path: Path) -> None:
    path = write(tmp_path, cv2.imencode(".jpg", face_image())[1].tobytes())
    assert not is_dfl_file(path)
    with pytest.raises(FacelabError, match="not a DeepFaceLab aligned face"):
        read_dfl(path)


def test_faceswap_png_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, png_with_chunk(b"iTXt", b"faceswap\x00\x00\x00\x00\x00{}"), "f.png")
    with pytest.raises(FacelabError, match="a faceswap face, which facelab does not read"):
        read_dfl(path)


def test_missing_file_and_bad_fields(tmp_path: Path) -> None:
    with pytest.raises(FacelabError, match="no such file"):
        read_dfl(tmp_path / "absent.jpg")
    assert not is_dfl_file(tmp_path / "absent.jpg")
    for change, words in [({"face_type": "mark_only"}, "face type 'mark_only' is not"),
                          ({"landmarks": [[1.0, 2.0]] * 67}, "'landmarks' is not 68×2"),
                          ({"landmarks": None}, "has no landmarks"),
                          ({"xseg_mask": b"not an image"}, "xseg mask is not a readable"),
                          ({"seg_ie_polys": {"polys": [{"type": 3, "pts": []}]}}, "polygons")]:
        meta = dfl_dict() | change
        assert words in refusal(tmp_path, pickle.dumps(meta, protocol=4))
    with pytest.raises(FacelabError, match="not a dictionary"):
        read_dfl(write(tmp_path, jpeg_with_app15(pickle.dumps([1, 2]))))


VALID = {p: pickle.dumps(dfl_dict(), protocol=p) for p in (2, 4)}  # BINPUT vs MEMOIZE
FUZZ_IMAGE = np.full((32, 32, 3), 128, np.uint8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protocol=st.sampled_from([2, 4]),
       edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255),
                                st.sampled_from(["set", "insert", "delete"])),
                      min_size=1, max_size=6),
       cut=st.integers(1, 1 << 16))
@pytest.mark.slow
def test_fuzzed_payloads_fail_cleanly(protocol: int, edits: list[tuple[int, int, str]],
                                      cut: int) -> None:
    valid = VALID[protocol]
    data = bytearray(valid[:cut] if cut < len(valid) // 4 else valid)
    for pos, value, how in edits:
        pos %= max(len(data), 1)
        if how == "set" and data:
            data[pos] = value
        elif how == "insert":
            data.insert(pos, value)
        elif data:
            del data[pos]
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), jpeg_with_app15(bytes(data), FUZZ_IMAGE))
        try:
            face = read_dfl(path)
        except FacelabError as e:
            assert "\n" not in str(e)
        else:
            assert face.landmarks.shape == (68, 2)
