"""Marked PNG and JPEG files: encode with OpenCV, add the XMP, write atomically; read back.

The file type is taken from its first bytes, not its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from facelab.fsutil import atomic_path
from facelab.provenance.jpeg import jpeg_bytes_with_mark, jpeg_mark
from facelab.provenance.mark import Mark, UnreadableFile, require_file
from facelab.provenance.png import SIGNATURE, png_bytes_with_mark, png_mark

MARKABLE = (".png", ".jpg", ".jpeg")


def image_type(head: bytes) -> str | None:
    """"png", "jpeg" or None, from a file's first 8 bytes."""
    if head.startswith(SIGNATURE):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def encode_marked(ext: str, image: np.ndarray, mark: Mark, params: Sequence[int] = ()) -> bytes:
    """`image` (BGR/BGRA uint8) encoded by OpenCV as `ext` (".png" or ".jpg") with `mark`."""
    ext = ext.lower()
    if ext not in MARKABLE:
        raise ValueError(f"{ext}: only PNG and JPEG carry a mark")
    ok, buf = cv2.imencode(ext, image, list(params))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {ext}")
    data = buf.tobytes()
    return png_bytes_with_mark(data, mark) if ext == ".png" else jpeg_bytes_with_mark(data, mark)


def write_marked(path: Path, image: np.ndarray, mark: Mark, params: Sequence[int] = ()) -> None:
    """Write `image` to `path` (type from its suffix) with `mark`, atomically."""
    data = encode_marked(path.suffix, image, mark, params)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_mark(path: Path) -> Mark | None:
    """The mark in a PNG or JPEG file, None when it has none. Raises `UnreadableFile` for a
    missing, damaged or other kind of file; never anything else on bad bytes."""
    path = Path(path)
    size = require_file(path)
    try:
        with path.open("rb") as f:
            kind = image_type(f.read(8))
            f.seek(0)
            if kind == "png":
                return png_mark(f, size, path.name)
            if kind == "jpeg":
                return jpeg_mark(f, size, path.name)
    except OSError as e:
        raise UnreadableFile(f"{path.name} cannot be read ({e.strerror or e}).") from e
    raise UnreadableFile(f"{path.name} is not a PNG or JPEG image.")
