"""Aligned-face files: a plain JPG that carries facelab's metadata inside it.

A faceset must stay self-contained, open in any viewer and survive renames, so the metadata
(landmarks, the face↔frame transform, masks...) travels inside the JPG as UTF-8 JSON, never
pickle: every file is untrusted. It lives in APP10 segments starting with ``FACELAB\\0``.
APP10 because the usual markers are taken (APP0 JFIF, APP1 Exif/XMP, APP2 ICC/MPF, APP11
JUMBF/C2PA, APP13 Photoshop, APP14 Adobe colour, APP15 DeepFaceLab's pickle) and APP10 is
nearly unused; the prefix tells ours from any stray use.

Each segment: ``FF EA``, length (u16), ``FACELAB\\0``, sequence number (u16, from 1), segment
count (u16), CRC-32 of the whole JSON (u32), then up to 65,517 bytes of it. They go after SOI
and any APP0/APP1 segments, before the quantisation tables, so the entropy-coded data stays
exactly what the encoder wrote and `update_meta` rewrites metadata without touching pixels.
The segments are walked by `facelab.jpeg`, the one JPEG segment parser. The record itself,
`FaceMeta`, and the validation of its JSON are `facemeta`'s; this module is the file side
(and re-exports `FaceMeta`, so callers import faces from here alone).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.facemeta import FaceMeta, PathLike
from facelab.fsutil import atomic_path
from facelab.jpeg import EOI, SOS, JpegError, segments

__all__ = ["FaceMeta", "encode_face", "has_meta", "read_face", "read_meta", "update_meta",
           "write_face"]  # FaceMeta re-exported: this module is the faces' one public import

PREFIX = b"FACELAB\0"
_HEAD = struct.Struct(">HHI")  # sequence (from 1), count, CRC-32 of the whole JSON
CHUNK = 0xFFFF - 2 - len(PREFIX) - _HEAD.size  # JSON bytes per segment
MAX_META = 16 << 20  # bytes of JSON: bounds the memory a hostile file can claim
MAX_SEGMENTS = -(-MAX_META // CHUNK)
MAX_HEADER_SEGMENTS = 4096  # real headers hold a dozen segments, ours at most MAX_SEGMENTS
_APP10, _APP15 = 0xEA, 0xEF
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (hold the size)


@dataclass
class _Header:
    segments: list[tuple[int, int, int, bool]]  # marker, start, end, is ours
    ours: list[bytes]  # facelab payloads after PREFIX, in file order
    sos: int  # offset of the first SOS marker: the scan data starts there
    dims: tuple[int, int]  # (width, height) from the frame header
    dfl: bool  # an APP15 segment, as DeepFaceLab writes


def _scan(src: bytes | BinaryIO, name: str) -> _Header:
    """Walk the segments before the first SOS; read only facelab's payloads and the SOF."""
    segs: list[tuple[int, int, int, bool]] = []
    ours: list[bytes] = []
    dims = None
    try:
        for seg in segments(src, max_segments=MAX_HEADER_SEGMENTS):
            if seg.marker == SOS:
                if dims is None:
                    raise FacelabError(f"{name} is damaged (it has no frame header).")
                return _Header(segs, ours, seg.start, dims, any(s[0] == _APP15 for s in segs))
            if seg.marker == EOI:
                raise FacelabError(f"{name} is damaged (it has no image data).")
            mine = False
            if seg.marker in _SOF:
                payload = seg.payload()
                if len(payload) < 5:
                    raise JpegError("malformed", "has a frame header under 5 bytes")
                dims = (int.from_bytes(payload[3:5], "big"), int.from_bytes(payload[1:3], "big"))
            elif seg.marker == _APP10:
                payload = seg.payload()
                if mine := payload.startswith(PREFIX):
                    if len(ours) >= MAX_SEGMENTS:
                        raise FacelabError(f"{name}'s facelab metadata is larger than 16 MiB.")
                    ours.append(payload[len(PREFIX):])
            segs.append((seg.marker, seg.start, seg.end, mine))
    except JpegError as e:
        raise FacelabError({
            "not-jpeg": f"{name} is not a JPEG image.",
            "truncated": f"{name} is truncated (it ends inside its JPEG headers).",
        }.get(e.kind, f"{name} is damaged (its JPEG headers are garbled).")) from None
    raise AssertionError("the header walk ends at SOS or EOI")  # pragma: no cover


def _meta(head: _Header, name: str) -> FaceMeta:
    """Join facelab's segments by sequence number, check them and parse the JSON."""
    if not head.ours:
        hint = "it looks like a DeepFaceLab face: import the faceset first" if head.dfl \
            else "was it extracted by facelab?"
        raise FacelabError(f"{name} carries no facelab metadata ({hint}).")

    def damaged(why: str) -> FacelabError:
        return FacelabError(f"{name}'s facelab metadata is damaged ({why}).")

    parts: dict[int, bytes] = {}
    first = None
    for p in head.ours:
        if len(p) < _HEAD.size:
            raise damaged("a segment is cut short")
        seq, count, crc = _HEAD.unpack_from(p)
        if not 1 <= seq <= count:
            raise damaged(f"a segment is numbered {seq} of {count}")
        if (first := first or (count, crc)) != (count, crc):
            raise damaged("its segments disagree")
        if seq in parts:
            raise damaged(f"segment {seq} of {count} appears twice")
        parts[seq] = p[_HEAD.size:]
    count, crc = first
    if missing := [i for i in range(1, count + 1) if i not in parts]:
        raise damaged(f"segment {missing[0]} of {count} is missing")
    data = b"".join(parts[i] for i in range(1, count + 1))
    if zlib.crc32(data) != crc:
        raise damaged("checksum mismatch")
    try:
        d = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, NaN, 5,000-digit numbers
        raise damaged("it is not valid JSON") from None
    return FaceMeta.from_json(d, name)


def _no_constant(s: str) -> Any:
    raise ValueError(f"{s} is not JSON")


def _payload(meta: FaceMeta) -> bytes:
    """Serialise `meta`, holding the writer to the reader's rules (a refusal is a bug)."""
    try:
        d = meta.to_json()
        FaceMeta.from_json(d)
        data = json.dumps(d, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()
    except (FacelabError, TypeError, ValueError, KeyError) as e:
        raise ValueError(f"refusing to write invalid face metadata: {e}") from e
    if len(data) > MAX_META:
        raise ValueError("refusing to write invalid face metadata: it is over 16 MiB")
    return data


def _with_meta(jpeg: bytes, payload: bytes, head: _Header) -> bytes:
    """`jpeg` with its facelab segments replaced by `payload`'s; every other byte kept."""
    crc, n = zlib.crc32(payload), max(1, -(-len(payload) // CHUNK))
    ours = [b"\xff\xea" + struct.pack(">H", 2 + len(PREFIX) + _HEAD.size + len(c)) + PREFIX
            + _HEAD.pack(i + 1, n, crc) + c
            for i, c in enumerate(payload[k * CHUNK:(k + 1) * CHUNK] for k in range(n))]
    keep = [(m, s, e) for m, s, e, mine in head.segments if not mine]
    at = next((i for i, (m, _, _) in enumerate(keep) if m not in (0xE0, 0xE1)), len(keep))
    return b"".join([jpeg[:2], *(jpeg[s:e] for _, s, e in keep[:at]), *ours,
                     *(jpeg[s:e] for _, s, e in keep[at:]), jpeg[head.sos:]])


def _open(path: Path, whole: bool) -> tuple[bytes, _Header]:
    """The file's header, and all its bytes when `whole` (else only the header is read)."""
    try:
        if whole:
            data = path.read_bytes()
            return data, _scan(data, path.name)
        with open(path, "rb") as f:
            return b"", _scan(f, path.name)
    except FileNotFoundError:
        raise FacelabError(f"{path.name} does not exist.") from None
    except IsADirectoryError:
        raise FacelabError(f"{path.name} is a folder, not a face image.") from None
    except OSError as e:
        raise FacelabError(f"{path.name} cannot be read ({e.strerror or e}).") from None


def _check_size(path: Path, head: _Header, meta: FaceMeta) -> None:
    if head.dims != (meta.size, meta.size):
        raise FacelabError(f"{path.name} is {head.dims[0]}×{head.dims[1]} pixels but the "
                           f"metadata describes a {meta.size}×{meta.size} face.")


def _write(path: Path, data: bytes) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise FacelabError(f"{path.name} cannot be written ({e.strerror or e}).") from None


def encode_face(image_bgr: np.ndarray, meta: FaceMeta, quality: int = 95) -> bytes:
    """JPG bytes of a size×size BGR face with `meta` inside."""
    payload = _payload(meta)
    img = np.asarray(image_bgr)
    if img.dtype != np.uint8 or img.shape != (meta.size, meta.size, 3):
        raise ValueError(f"face image must be uint8 {meta.size}×{meta.size}×3, "
                         f"got {img.dtype} {img.shape}")
    if not 1 <= quality <= 100:
        raise ValueError("JPEG quality must be from 1 to 100")
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the face as JPEG")
    jpeg = buf.tobytes()
    return _with_meta(jpeg, payload, _scan(jpeg, "encoded face"))


def write_face(path: PathLike, image_bgr: np.ndarray, meta: FaceMeta, quality: int = 95) -> None:
    """Write an aligned face atomically (a crash never leaves half a file)."""
    _write(Path(path), encode_face(image_bgr, meta, quality))


def read_meta(path: PathLike) -> FaceMeta:
    """The metadata alone: reads the headers up to the first SOS, never the pixels."""
    return _meta(_open(Path(path), whole=False)[1], Path(path).name)


def read_face(path: PathLike) -> tuple[np.ndarray, FaceMeta]:
    """The BGR face and its metadata; damaged or mismatched pixels are a FacelabError."""
    path = Path(path)
    data, head = _open(path, whole=True)
    meta = _meta(head, path.name)
    _check_size(path, head, meta)  # before decoding: the header could claim 60000² pixels
    try:  # the scan data must end in EOI (a cut-short file would decode half grey)
        for _ in segments(data, until_sos=False):
            pass
    except JpegError as e:
        if e.kind == "truncated":
            raise FacelabError(f"{path.name} is truncated (its image data ends early).") from None
        raise FacelabError(f"{path.name} is damaged (its pixels cannot be decoded).") from None
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
    if img is None or img.shape[:2] != (meta.size, meta.size):
        raise FacelabError(f"{path.name} is damaged (its pixels cannot be decoded).")
    return img, meta


def update_meta(path: PathLike, meta: FaceMeta) -> None:
    """Replace the metadata of a JPG in place, keeping its pixel bytes identical."""
    path = Path(path)
    data, head = _open(path, whole=True)
    _check_size(path, head, meta)
    _write(path, _with_meta(data, _payload(meta), head))


def has_meta(path: PathLike) -> bool:
    """Whether `path` is a JPEG holding facelab segments (read_meta may still find damage)."""
    try:
        return bool(_open(Path(path), whole=False)[1].ours)
    except FacelabError:
        return False
