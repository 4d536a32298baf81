"""Reading frames that may be damaged, without a word on the terminal.

A frame in data_<side>/ can be cut short (a full disk, an interrupted copy) or not an image
at all. Handed to OpenCV, such a file makes OpenCV print `[ WARN ]` lines and libpng or
libjpeg print their own (`libpng error: …`) from C to file descriptor 2, past Python. So a
frame's bytes are walked first: a PNG's chunks with their CRCs up to IEND, a JPEG's
segments up to EOI (`jpeg.segments`). A damaged file raises `UnreadableFrame` (with a short
reason) and never reaches a decoder. What passes is decoded with OpenCV's log turned down,
and in a worker process with fd 2 sent to /dev/null as well: damage the walk cannot see (a
bad deflate stream under good CRCs) still makes libpng speak, and a worker has nothing else
to say on fd 2 (its errors travel back to the parent as exceptions). The parent's own decode
(the one-process path: a few frames, or CUDA) cannot silence fd 2, which its progress bar
shares; there only a file damaged under intact checksums (crafted, in practice: a random
bit flip fails a PNG chunk's CRC) still gets libpng's or libjpeg's line, and is skipped like
any other. Checking costs ≈ 3 ms for a 1080p PNG (its decode ≈ 50 ms).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.mediapipe_runtime import quiet_stderr
from facelab.jpeg import JpegError, segments

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OPENCV_LOG_FATAL = 1  # cv2.setLogLevel: 0 silent, 1 fatal, 2 error, 3 warning (its default)
_MAX_CHUNK = (1 << 31) - 1  # PNG's limit on a chunk's length


class UnreadableFrame(FacelabError):
    """A frame file that cannot be decoded; `reason` says why in a few words."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} cannot be read: {reason}.")
        self.reason = reason


def quiet_opencv() -> None:
    """Keep OpenCV's own log lines (`[ WARN:0@…] … imdecode_ …`) off the terminal: every
    failure that matters reaches the caller as an exception or a None image anyway."""
    cv2.setLogLevel(OPENCV_LOG_FATAL)


def png_damage(data: bytes | memoryview) -> str | None:
    """Why PNG `data` is damaged (cut short, a chunk's CRC wrong, no IEND), or None."""
    view = memoryview(data)
    if bytes(view[:8]) != PNG_SIGNATURE:
        return "not a PNG file"
    pos, size = 8, len(view)
    while True:
        if pos + 12 > size:
            return "the file is cut short"
        length = int.from_bytes(view[pos:pos + 4], "big")
        kind = bytes(view[pos + 4:pos + 8])
        end = pos + 12 + length
        if length > _MAX_CHUNK or end > size:
            return "the file is cut short" if length <= _MAX_CHUNK else "damaged chunk header"
        if zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(view[end - 4:end], "big"):
            return f"damaged data (a {kind.decode('latin-1')!r} chunk fails its checksum)"
        if kind == b"IEND":
            return None
        pos = end


def jpeg_damage(data: bytes) -> str | None:
    """Why JPEG `data` is damaged (cut short, markers garbled), or None."""
    try:
        for _ in segments(data, until_sos=False):
            pass
    except JpegError as e:
        return "the file is cut short" if e.kind == "truncated" else f"the JPEG data {e.reason}"
    return None


def damage(data: bytes, suffix: str) -> str | None:
    """Why a frame's bytes cannot be an image of its kind, or None when they may be."""
    if not data:
        return "the file is empty"
    if data.startswith(PNG_SIGNATURE):
        return png_damage(data)
    if data.startswith(b"\xff\xd8"):
        return jpeg_damage(data)
    if suffix.lower() in (".png", ".jpg", ".jpeg"):
        return f"not a {'PNG' if suffix.lower() == '.png' else 'JPEG'} image"
    return None  # another format: the decoder decides


def read_frame(path: Path, silence_fd2: bool = False) -> np.ndarray:
    """The frame at `path` as BGR, the pixels `video.frames.read_image` gives; a damaged or
    unreadable file raises UnreadableFrame without anything printed. `silence_fd2`: send
    fd 2 to /dev/null around the decode (worker processes only)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UnreadableFrame(path.name, e.strerror or type(e).__name__) from None
    why = damage(data, path.suffix)
    if why is not None:
        raise UnreadableFrame(path.name, why)
    buffer = np.frombuffer(data, dtype=np.uint8)
    if silence_fd2:
        with quiet_stderr():
            image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    else:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableFrame(path.name, "not an image OpenCV can decode")
    return image
