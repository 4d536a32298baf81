"""Read DeepFaceLab aligned faces without ever executing pickle.

DeepFaceLab 2.0 stores `pickle.dumps(dict)` in one JPEG APP15 segment (so at most 65,533
bytes: DFL caps its xseg mask at 8 KiB to fit; it never splits the pickle); DeepFaceLab 1.0
PNGs carry the same pickle in a private `fcWp` chunk. A pickle is a program, and a faceset
downloaded from a forum can run anything when DeepFaceLab opens it. We read it in two steps:

1. `pickletools.genops` walks every opcode first (it executes nothing). It proves the stream
   complete, bounds every length the stream claims by the bytes actually present and every
   memo index by the opcode count (CPython's unpickler allocates a BINBYTES8 claim before
   reading it, and sizes its memo to the largest PUT index: a 5-byte LONG_BINPUT costs
   64 GB), caps the opcode count, and refuses persistent ids, extension codes and INST/OBJ.
2. A `pickle.Unpickler` whose `find_class` admits only the globals numpy's reduce protocol
   names (see `_ADMITTED`) and hands back our own stand-ins, never numpy's functions: arrays
   are rebuilt with `np.frombuffer` after checking dtype (bool/int/uint/float only), shape,
   element cap and byte count. Every stand-in refuses BUILD state it does not expect, so a
   pickle cannot set attributes on them.
The C unpickler was kept over a pure opcode interpreter because it is exact for every
protocol (0-5) at a fraction of the code, and with only these globals reachable it can build
nothing but containers, strings, numbers and our validated arrays.

faceswap faces (an iTXt `faceswap` chunk holding `str(dict)`) are not read; they are named in
the error so the user knows to re-extract them.
"""

from __future__ import annotations

import io
import itertools
import math
import pickle
import pickletools
import reprlib
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
from PIL import Image

from facelab.errors import FacelabError
from facelab.jpeg import SOI, JpegError, segments

MAX_FILE = 64 << 20  # an aligned face is well under a megabyte
MAX_PAYLOAD = 1 << 20  # a JPEG segment holds at most 64 KiB; 1.0 PNGs stay under ~70 KB
MAX_OPCODES = 200_000
MAX_ELEMENTS = 1 << 20  # elements in one array
MAX_MASK_SIDE = 4096
_DTYPES = {"b1", *(f"{k}{n}" for k, ns in (("i", "1248"), ("u", "1248"), ("f", "248")) for n in ns)}
_REFUSED_OPS = {"PERSID": "a persistent object", "BINPERSID": "a persistent object",
                "EXT1": "an extension code", "EXT2": "an extension code",
                "EXT4": "an extension code", "INST": "an instance", "OBJ": "an instance"}
# DeepFaceLab's face type names (FaceType.toString) and facelab's own, each with and without
# "_face", "-" or "_": every spelling the refusal message lists is one that is read
_FACE_TYPES = {"half": "half", "midfull": "mid-full", "full": "full", "whole": "whole-face",
               "head": "head"}
READABLE_FACE_TYPES = ("half_face, midfull_face, full_face, whole_face, head, or facelab's "
                       "half, mid-full, full, whole-face")
_ORDERS = ("<", ">", "|", "=")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_APP15 = 0xEF  # DeepFaceLab's pickle


class Poly(TypedDict):
    type: Literal["include", "exclude"]
    pts: list[list[float]]


@dataclass(eq=False)
class DflFace:
    """The metadata of one aligned face; the pixels are left to the image reader."""

    face_type: str  # facelab's name: half, mid-full, full, whole-face, head
    landmarks: np.ndarray  # 68×2 float64, in aligned-face pixels
    source_landmarks: np.ndarray | None = None  # 68×2 float64, in source-frame pixels
    image_to_face_mat: np.ndarray | None = None  # 2×3 float64, frame → face
    source_filename: str | None = None  # untrusted text: DFL writes a bare name; check it
    source_rect: tuple[int, int, int, int] | None = None  # left, top, right, bottom
    eyebrows_expand_mod: float = 1.0
    polys: list[Poly] = field(default_factory=list)  # includes first: DFL's drawing order
    xseg_mask: np.ndarray | None = None  # H×W uint8


class _Refused(Exception):
    """Raised inside the unpickler; turned into a FacelabError naming the file."""


class _Stand:
    """Base of every object a pickle can reach from a global: BUILD is refused unless
    a subclass expects it (the default would let a pickle set attributes)."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise _Refused("attributes set on a numpy constructor")


class _Dtype(_Stand):
    __slots__ = ("dtype",)

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(code, str) or code not in _DTYPES or align:
            raise _Refused(f"an array of dtype {reprlib.repr(code)}")
        self.dtype = np.dtype(code)

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[1] in _ORDERS
                and all(s is None for s in (*state[2:5], *state[8:]))):
            raise _Refused("a structured or unusual dtype")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


class _Array(_Stand):
    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise _Refused("an array with unreadable state")
        self.array = _build(*state)


def _build(shape: Any, dtype: Any, fortran: Any, raw: Any) -> np.ndarray:
    """A fresh array from checked parts: numeric dtype, at most MAX_ELEMENTS, exact bytes."""
    if not isinstance(dtype, _Dtype):
        raise _Refused(f"an array of dtype {reprlib.repr(dtype)}")
    if not (isinstance(shape, tuple) and len(shape) <= 4
            and all(type(n) is int and n >= 0 for n in shape)):
        raise _Refused(f"an array of shape {reprlib.repr(shape)}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise _Refused(f"an array of {count} elements (at most {MAX_ELEMENTS})")
    if not isinstance(raw, bytes | bytearray) or len(raw) != count * dtype.dtype.itemsize:
        raise _Refused("an array whose data does not match its shape")
    flat = np.frombuffer(bytes(raw), dtype=dtype.dtype)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def _frombuffer(raw: Any, dtype: Any, shape: Any, order: Any) -> _Array:
    """Protocol 5 spells arrays as `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)`."""
    if order not in ("C", "F"):
        raise _Refused(f"an array in order {reprlib.repr(order)}")
    array = _Array()
    array.array = _build(shape, dtype, order == "F", raw)
    return array


class _Call(_Stand):
    """An admitted global: calling it runs our constructor, never the named one."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def _reconstruct(cls: Any, _shape: Any = None, _code: Any = None) -> _Array:
    if cls is not _NDARRAY:
        raise _Refused(f"an array of class {reprlib.repr(cls)}")
    return _Array()


def _scalar(dtype: Any, raw: Any) -> int | float | bool:
    return _build((), dtype, False, raw).item()  # a numpy scalar becomes a Python number


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """Protocols 0-2 spell bytes as `_codecs.encode(str, 'latin1')`."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused("_codecs.encode with other arguments")
    return text.encode("latin1")


_NDARRAY = _Stand()  # stands for numpy.ndarray, only ever passed to _reconstruct
_ADMITTED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Call(_Dtype),
    ("_codecs", "encode"): _Call(_latin1),
    ("__builtin__", "bytes"): _Call(lambda: b""),  # protocol 2's empty bytes
    ("builtins", "bytes"): _Call(lambda: b""),
    **{(f"{core}.{module}", name): _Call(fn) for core in ("numpy.core", "numpy._core")
       for module, name, fn in (("multiarray", "_reconstruct", _reconstruct),
                                ("multiarray", "scalar", _scalar),
                                ("numeric", "_frombuffer", _frombuffer))},
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ADMITTED:
            raise _Refused(f"{module}.{name}")
        return _ADMITTED[module, name]

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent object")


def _unpickle(payload: bytes, label: object) -> dict[str, Any]:
    """The metadata dict, or FacelabError: never runs code the pickle names."""
    def refuse(what: str) -> FacelabError:
        return FacelabError(f"{label}: DeepFaceLab metadata asks for {what}; "
                            "refused (not plain data).")

    if len(payload) > MAX_PAYLOAD:
        raise FacelabError(f"{label}: DeepFaceLab metadata is {len(payload)} bytes; "
                           f"more than {MAX_PAYLOAD} is refused.")
    try:
        with warnings.catch_warnings():  # Python 2 STRING escapes warn; they are only data
            warnings.simplefilter("ignore")
            ops = list(itertools.islice(pickletools.genops(payload), MAX_OPCODES + 1))
        if len(ops) > MAX_OPCODES:
            raise FacelabError(f"{label}: DeepFaceLab metadata is too complex to read.")
        for op, arg, _pos in ops:
            if op.name in _REFUSED_OPS:
                raise refuse(_REFUSED_OPS[op.name])
            if op.name == "GLOBAL" and tuple(str(arg).split(" ", 1)) not in _ADMITTED:
                raise refuse(str(arg).replace(" ", "."))
            if op.name.endswith("PUT") and not 0 <= int(arg) <= len(ops):
                raise ValueError("memo index")  # CPython would size its memo to it
        result = _Unpickler(io.BytesIO(payload)).load()
    except _Refused as e:
        raise refuse(str(e)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OverflowError, MemoryError, UnicodeError, struct.error) as e:
        raise FacelabError(f"{label}: DeepFaceLab metadata is corrupt or truncated "
                           f"({type(e).__name__}).") from None
    if not isinstance(result, dict):
        raise FacelabError(f"{label}: DeepFaceLab metadata is not a dictionary.")
    return result


def find_dfl_payload(data: bytes) -> bytes | None:
    """The pickled metadata in a JPEG's APP15 segment or a PNG's `fcWp` chunk, else None.

    A JPEG damaged before the segment (cut short inside it included) raises `JpegError`,
    so the reader reports the damage rather than a missing segment."""
    if data[:2] == SOI:
        for seg in segments(data):  # metadata segments all come before the scan
            if seg.marker == _APP15:
                return seg.payload()
        return None
    if data[:8] == PNG_SIGNATURE:
        pos = 8
        while pos + 8 <= len(data):
            size, kind = struct.unpack(">I4s", data[pos:pos + 8])
            if kind == b"fcWp":
                return data[pos + 8:pos + 8 + size]
            if kind == b"IEND":
                return None
            pos += 12 + size
    return None


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_FILE:
            raise FacelabError(f"{path}: too large for an aligned face.")
        return path.read_bytes()
    except FileNotFoundError:
        raise FacelabError(f"{path}: no such file.") from None
    except OSError as e:
        raise FacelabError(f"{path}: cannot be read ({e.strerror}).") from None


def is_dfl_file(path: Path) -> bool:
    """True if the file carries DeepFaceLab metadata (unread and unchecked)."""
    try:
        return find_dfl_payload(_read(Path(path))) is not None
    except FacelabError:
        return False


def _numbers(value: Any) -> np.ndarray | None:
    """Finite float64 from a list or a rebuilt array; None for anything else."""
    try:
        arr = np.array(value.array if isinstance(value, _Array) else value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if np.isfinite(arr).all() else None


def _matrix(meta: dict[str, Any], key: str, shape: tuple[int, ...], label: object,
            ) -> np.ndarray | None:
    if meta.get(key) is None:
        return None
    arr = _numbers(meta[key])
    if arr is None or arr.shape != shape:
        size = "×".join(map(str, shape))
        raise FacelabError(f"{label}: DeepFaceLab {key!r} is not {size} finite numbers.")
    return arr


def _polys(value: Any, label: object) -> list[Poly]:
    """DFL 2.0's {'polys': [{'type', 'pts'}]} or the older [(type, pts)], includes first."""
    if isinstance(value, dict):
        value = value.get("polys", [])
    polys: list[Poly] = []
    try:
        for p in value or []:
            kind, pts = (p["type"], p["pts"]) if isinstance(p, dict) else p
            arr = _numbers(pts)
            if arr is not None and arr.size == 0:
                arr = arr.reshape(0, 2)
            if kind not in (0, 1) or arr is None or arr.ndim != 2 or arr.shape[1] != 2:
                raise ValueError
            polys.append(Poly(type="include" if kind == 1 else "exclude", pts=arr.tolist()))
    except (TypeError, ValueError, KeyError):
        raise FacelabError(f"{label}: DeepFaceLab mask polygons are malformed.") from None
    return sorted(polys, key=lambda p: p["type"] != "include")


def _mask(value: Any, label: object) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, _Array) and value.array is not None and value.array.dtype == np.uint8:
        value = value.array.tobytes()  # DFL stores cv2.imencode's N×1 uint8 buffer
    if not isinstance(value, bytes | bytearray):
        raise FacelabError(f"{label}: the DeepFaceLab xseg mask is not an encoded image.")
    try:
        with Image.open(io.BytesIO(value), formats=["PNG", "JPEG"]) as im:
            if max(im.size) > MAX_MASK_SIDE:
                raise ValueError(f"{im.size}")
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError, EOFError, struct.error,
            Image.DecompressionBombError):
        raise FacelabError(f"{label}: the DeepFaceLab xseg mask is not a readable image.") from None


def face_type_of(name: str) -> str | None:
    """facelab's face type for a DeepFaceLab (`full_face`, `midfull_face`) or facelab
    (`full`, `mid-full`) name, any case; None for one facelab cannot use (`mark_only`,
    `head_no_align`, ...)."""
    key = name.strip().lower().replace("-", "_")
    key = key.removesuffix("_face").replace("_", "")
    return _FACE_TYPES.get(key)


def read_dfl(path: Path) -> DflFace:
    """The metadata of a DeepFaceLab aligned face (JPEG, or 1.0 PNG); pixels are not read."""
    path = Path(path)
    data = _read(path)
    try:
        payload = find_dfl_payload(data)
    except JpegError as e:
        raise FacelabError(f"{path}: a damaged JPEG (it {e.reason}).") from None
    if payload is None:
        if data[:8] == PNG_SIGNATURE and b"iTXtfaceswap\x00" in data:
            raise FacelabError(f"{path}: a faceswap face, which facelab does not read; "
                               "extract the faces again with facelab.")
        raise FacelabError(f"{path}: not a DeepFaceLab aligned face (no metadata segment).")
    meta = _unpickle(payload, path)

    face_type = meta.get("face_type", "full_face")
    ours = face_type_of(face_type) if isinstance(face_type, str) else None
    if ours is None:
        raise FacelabError(f"{path}: DeepFaceLab face type {reprlib.repr(face_type)} is not "
                           f"one facelab reads ({READABLE_FACE_TYPES}).")
    if meta.get("landmarks") is None:
        raise FacelabError(f"{path}: DeepFaceLab metadata has no landmarks.")
    rect = _matrix(meta, "source_rect", (4,), path)
    name = meta.get("source_filename")
    brows = meta.get("eyebrows_expand_mod")
    brows = 1.0 if brows is None else brows
    if not isinstance(name, str | None):
        raise FacelabError(f"{path}: DeepFaceLab 'source_filename' is not text.")
    if type(brows) not in (int, float) or not math.isfinite(brows):
        raise FacelabError(f"{path}: DeepFaceLab 'eyebrows_expand_mod' is not a number.")
    return DflFace(
        face_type=ours,
        landmarks=_matrix(meta, "landmarks", (68, 2), path),  # type: ignore[arg-type]
        source_landmarks=_matrix(meta, "source_landmarks", (68, 2), path),
        image_to_face_mat=_matrix(meta, "image_to_face_mat", (2, 3), path),
        source_filename=name,
        source_rect=None if rect is None else (int(rect[0]), int(rect[1]), int(rect[2]),
                                               int(rect[3])),
        eyebrows_expand_mod=float(brows),
        polys=_polys(meta.get("seg_ie_polys", meta.get("ie_polys")), path),
        xseg_mask=_mask(meta.get("xseg_mask"), path),
    )
