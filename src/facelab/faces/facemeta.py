"""The aligned face's metadata record, `FaceMeta`, and its JSON form.

What an aligned face knows about itself and its frame (landmarks, the face↔frame
transform, pose, masks...), written as plain JSON and read back through one strict
validator: every file is untrusted, so `FaceMeta.from_json` checks each field's type,
shape and range (bounded sizes, finite numbers, plain file names) and refuses anything else
with one sentence. How the JSON travels inside a JPG is `faceimage`'s business; this module
knows nothing about files.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import struct
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.facetype import FaceType

FORMAT_VERSION = 1
FACE_TYPES = tuple(t.value for t in FaceType)  # half, mid-full, full, whole-face, head
MAX_SIDE = 4096  # face and mask side, pixels
MAX_MESH, MAX_POLYS, MAX_POLY_POINTS = 100_000, 1_000, 100_000  # the last over all polygons
MAX_COORD = 10_000_000  # |coordinate|, pixels
MAX_DEPTH = 32  # nesting of `extra`
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
    # strict types: numpy would quietly turn "1.5" and True into numbers (one pass over the
    # values at C speed: a 478-point mesh is checked in a tenth of a millisecond)
    if not all(type(row) is list and len(row) == cols for row in v) \
            or not set(map(type, itertools.chain.from_iterable(v))) <= {float, int}:
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


def parse_polys(value: Any, size: int | None = None) -> list[dict]:
    """Mask polygons from untrusted input (a studio request), checked by the reader's own
    rules; with the face's `size`, every point must also lie within one face side of the
    face (-size … 2·size: what an editor can place). One sentence on refusal."""
    try:
        polys = _polys(value, "the polygons")
        if size is not None and any(not all(-size <= c <= 2 * size for xy in p["pts"]
                                            for c in xy) for p in polys):
            raise _Invalid(f"every point must lie from {-size} to {2 * size}, within one "
                           f"face side of the {size}×{size} face")
    except _Invalid as e:
        raise FacelabError(f"The mask polygons are invalid ({e}).") from None
    return polys


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
