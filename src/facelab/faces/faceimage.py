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
The segments are walked by `facelab.jpeg`, the one JPEG segment parser.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.facetype import FaceType
from facelab.fsutil import atomic_path
from facelab.jpeg import EOI, SOS, JpegError, segments

FORMAT_VERSION = 1
FACE_TYPES = tuple(t.value for t in FaceType)  # half, mid-full, full, whole-face, head
PREFIX = b"FACELAB\0"
_HEAD = struct.Struct(">HHI")  # sequence (from 1), count, CRC-32 of the whole JSON
CHUNK = 0xFFFF - 2 - len(PREFIX) - _HEAD.size  # JSON bytes per segment
MAX_META = 16 << 20  # bytes of JSON: bounds the memory a hostile file can claim
MAX_SEGMENTS = -(-MAX_META // CHUNK)
MAX_HEADER_SEGMENTS = 4096  # real headers hold a dozen segments, ours at most MAX_SEGMENTS
MAX_SIDE = 4096  # face and mask side, pixels
MAX_MESH, MAX_POLYS, MAX_POLY_POINTS = 100_000, 1_000, 100_000  # the last over all polygons
MAX_COORD = 10_000_000  # |coordinate|, pixels
MAX_DEPTH = 32  # nesting of `extra`
_APP10, _APP15 = 0xEA, 0xEF
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (hold the size)
PathLike = str | os.PathLike[str]


@dataclass(kw_only=True, eq=False)
class FaceMeta:
    """What an aligned face knows about itself and its frame. Pixels and degrees.

    Reading is forward compatible: the fields from `mesh` on may be absent, and unknown
    top-level keys from a newer facelab are kept in `extra` (under their own names) so a
    rewrite by this version loses nothing; `to_json` always writes this version's layout.
    """

    version: int = FORMAT_VERSION
    face_type: str  # a FaceType value
    size: int  # side of the square face image
    landmarks: np.ndarray  # 68×2, face-image coordinates
    source_landmarks: np.ndarray  # 68×2, frame coordinates
    frame_to_face: np.ndarray  # 2×3 affine, frame px → face px
    source_filename: str  # a plain file name, never a path
    source_rect: tuple[int, int, int, int]  # detection box x0, y0, x1, y1 in the frame
    source_size: tuple[int, int]  # frame width, height
    face_index: int
    yaw: float
    pitch: float
    roll: float
    detector: str
    score: float
    mesh: np.ndarray | None = None  # N×3 dense mesh, face-image coordinates
    mask_polys: list[dict] = field(default_factory=list)  # {"type": include|exclude, "pts"}
    mask: np.ndarray | None = None  # uint8 H×W, stored as base64 PNG
    original_name: str | None = None  # name at extraction, so renames can be undone
    extra: dict = field(default_factory=dict)  # JSON values only

    def face_to_frame(self) -> np.ndarray:
        """The inverse 2×3 affine: face px → frame px (to paste a face back)."""
        m = np.asarray(self.frame_to_face, dtype=np.float64)
        inv = np.linalg.inv(m[:, :2])
        return np.hstack([inv, -inv @ m[:, 2:]])

    def __eq__(self, other: object) -> bool:  # arrays compare exactly, through their JSON
        if not isinstance(other, FaceMeta):
            return NotImplemented
        return (self.version, self.to_json()) == (other.version, other.to_json())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: arrays as nested lists, the mask as base64 PNG."""
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "mask_polys":
                v = [{"type": p["type"], "pts": _lists(p["pts"])} for p in v]
            elif f.name == "mask" and v is not None:
                v = _mask_png(v)
            elif isinstance(v, np.ndarray):
                v = _lists(v)
            d[f.name] = [_py(x) for x in v] if isinstance(v, tuple) else _py(v)
        return d | {"version": FORMAT_VERSION}

    @classmethod
    def from_json(cls, d: Any, path: PathLike | None = None) -> FaceMeta:
        """Validate everything (the data is untrusted) and build a FaceMeta."""
        try:
            return _parse(d)
        except _Invalid as e:
            where = f"{Path(path).name}'s facelab metadata" if path else "Face metadata"
            raise FacelabError(f"{where} is invalid ({e}).") from None


class _Invalid(Exception):
    """Why a metadata dict was refused: a clause that FaceMeta.from_json makes a sentence."""


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _lists(a: Any) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


def _mask_png(mask: np.ndarray) -> str:
    if not (isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.ndim == 2):
        raise ValueError("mask must be a uint8 H×W array")
    return base64.b64encode(cv2.imencode(".png", mask)[1].tobytes()).decode("ascii")


def _num(v: Any, key: str, lo: int, hi: int, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kinds) or not lo <= v <= hi:  # NaN fails too
        raise _Invalid(f"{key} must be {'an integer' if integer else 'a number'} "
                       f"from {lo} to {hi}")
    return v if integer else float(v)


def _ints(v: Any, key: str, n: int, lo: int, hi: int) -> tuple[int, ...]:
    if not isinstance(v, list) or len(v) != n:
        raise _Invalid(f"{key} must be a list of {n} integers")
    return tuple(_num(x, key, lo, hi, integer=True) for x in v)


def _points(v: Any, key: str, cols: int, lo: int, hi: int) -> np.ndarray:
    shape = f"{lo}×{cols}" if lo == hi else f"N×{cols} (N from {lo} to {hi})"
    bad = _Invalid(f"{key} must be {shape} finite numbers no larger than {MAX_COORD:,}")
    if not isinstance(v, list) or not lo <= len(v) <= hi:
        raise bad
    for row in v:  # strict types: numpy would quietly turn "1.5" and True into numbers
        if not isinstance(row, list) or len(row) != cols \
                or not all(type(x) is float or type(x) is int for x in row):
            raise bad
    try:
        a = np.array(v, dtype=np.float64).reshape(len(v), cols)
    except OverflowError:  # an integer beyond float range
        raise bad from None
    if not np.isfinite(a).all() or np.abs(a).max(initial=0) > MAX_COORD:
        raise bad
    return a


def _text(v: Any, key: str, name: bool = False) -> str:
    """A short string; a `name` must also be a plain file name (no path to climb out by)."""
    if not isinstance(v, str) or len(v) > (255 if name else 100) or (name and (
            v in ("", ".", "..") or any(c in "/\\\x7f" or c < " " for c in v))):
        raise _Invalid(f"{key} must be {'a plain file name' if name else 'a short string'}")
    return v


def _depth(v: Any, depth: int = 0) -> int:
    items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
    if depth > MAX_DEPTH:
        return depth
    return max((_depth(x, depth + 1) for x in items), default=depth)


def _polys(v: Any, key: str) -> list[dict]:
    if not isinstance(v, list) or len(v) > MAX_POLYS:
        raise _Invalid(f"{key} must be a list of at most {MAX_POLYS} polygons")
    out, total = [], 0
    for p in v:
        if not isinstance(p, dict) or set(p) != {"type", "pts"} \
                or p["type"] not in ("include", "exclude"):
            raise _Invalid(f'each of {key} must be {{"type": include|exclude, "pts": [...]}}')
        pts = _points(p["pts"], "a polygon's pts", 2, 3, max(3, MAX_POLY_POINTS - total))
        total += len(pts)
        out.append({"type": p["type"], "pts": pts.tolist()})
    return out


def _mask(v: Any, key: str) -> np.ndarray:
    bad = _Invalid(f"{key} must be a base64 8-bit grey PNG of at most {MAX_SIDE}² pixels")
    try:
        png = base64.b64decode(v, validate=True) if isinstance(v, str) else b""
    except (binascii.Error, ValueError):
        raise bad from None
    # Check the IHDR before decoding: a few bytes can claim a gigantic image.
    if len(png) < 33 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise bad
    w, h = struct.unpack(">II", png[16:24])
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE and png[24:26] == b"\x08\x00"):
        raise bad
    try:
        mask = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        raise bad from None
    if mask is None or mask.dtype != np.uint8 or mask.shape != (h, w):
        raise bad
    return mask


def _ok(v: Any, good: bool, why: str) -> Any:
    if not good:
        raise _Invalid(why)
    return v


def _matrix(v: Any, key: str) -> np.ndarray:
    m = _points(v, key, 3, 2, 2)
    return _ok(m, abs(np.linalg.det(m[:, :2])) > 1e-9, f"{key} must be invertible")


def _rect(v: Any, key: str) -> tuple[int, ...]:
    r = _ints(v, key, 4, -MAX_COORD, MAX_COORD)
    return _ok(r, r[0] < r[2] and r[1] < r[3], f"{key} must have x0 < x1 and y0 < y1")


_FIELDS: dict[str, Any] = {  # key → validator; the optional ones (null or absent) last
    "version": lambda v, k: _num(v, k, 1, 1_000_000, integer=True),
    "face_type": lambda v, k: _ok(v, v in FACE_TYPES, f"{k} must be one of "
                                  + ", ".join(FACE_TYPES)),
    "size": lambda v, k: _num(v, k, 16, MAX_SIDE, integer=True),
    "landmarks": lambda v, k: _points(v, k, 2, 68, 68),
    "source_landmarks": lambda v, k: _points(v, k, 2, 68, 68), "frame_to_face": _matrix,
    "source_filename": lambda v, k: _text(v, k, name=True), "source_rect": _rect,
    "source_size": lambda v, k: _ints(v, k, 2, 1, 65535),
    "face_index": lambda v, k: _num(v, k, 0, 9999, integer=True),
    **dict.fromkeys(("yaw", "pitch", "roll"), lambda v, k: _num(v, k, -360, 360)),
    "detector": _text, "score": lambda v, k: _num(v, k, -1_000_000, 1_000_000),
    "mesh": lambda v, k: _points(v, k, 3, 1, MAX_MESH), "mask_polys": _polys, "mask": _mask,
    "original_name": lambda v, k: _text(v, k, name=True),
    "extra": lambda v, k: _ok(v, isinstance(v, dict) and _depth(v) <= MAX_DEPTH,
                              f"{k} must be a JSON object nested at most {MAX_DEPTH} deep"),
}
_OPTIONAL = ("mesh", "mask_polys", "mask", "original_name", "extra")
assert list(_FIELDS) == [f.name for f in fields(FaceMeta)]


def _parse(d: Any) -> FaceMeta:
    if not isinstance(d, dict):
        raise _Invalid("it is not a JSON object")
    out = {}
    for key, check in _FIELDS.items():
        if d.get(key) is not None:
            out[key] = check(d[key], key)
        elif key not in _OPTIONAL:
            raise _Invalid(f"{key} is missing")
    unknown = {k: v for k, v in d.items() if k not in _FIELDS}  # from a newer version
    out["extra"] = _FIELDS["extra"](unknown | out.get("extra", {}), "extra")
    return FaceMeta(**out)


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
