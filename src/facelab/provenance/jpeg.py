"""XMP in JPEG: an APP1 segment that starts `http://ns.adobe.com/xap/1.0/\\0`, placed after
the leading APP0 (JFIF) / APP1 (Exif) segments as the XMP specification asks.

The header segments before the scan are walked and the scan is searched for its end; a
broken or cut-short file is an `UnreadableFile`.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from facelab.provenance.mark import Mark, UnreadableFile
from facelab.provenance.xmp import build_xmp, parse_xmp

XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\0"
APP0, APP1, SOS, EOI = 0xE0, 0xE1, 0xDA, 0xD9
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length


def _segments(jpeg: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The (marker, whole segment) list before the scan, and where the scan's SOS starts."""
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValueError("not JPEG data")
    pos, segs = 2, []
    while pos + 4 <= len(jpeg):
        if jpeg[pos] != 0xFF:
            raise ValueError("broken JPEG segment structure")
        marker = jpeg[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in _STANDALONE:
            segs.append((marker, jpeg[pos:pos + 2]))
            pos += 2
            continue
        if marker in (SOS, EOI):
            return segs, pos
        (length,) = struct.unpack(">H", jpeg[pos + 2:pos + 4])
        if length < 2 or pos + 2 + length > len(jpeg):
            raise ValueError("truncated JPEG data")
        segs.append((marker, jpeg[pos:pos + 2 + length]))
        pos += 2 + length
    raise ValueError("JPEG data without image data")


def _is_xmp(marker: int, seg: bytes) -> bool:
    return marker == APP1 and seg[4:4 + len(XMP_HEADER)] == XMP_HEADER


def jpeg_bytes_with_mark(jpeg: bytes, mark: Mark) -> bytes:
    """`jpeg` with `mark` as its XMP (an XMP segment already there is replaced)."""
    payload = XMP_HEADER + build_xmp(mark)
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("XMP packet too large for one JPEG segment")
    ours = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    segs, scan = _segments(jpeg)
    segs = [(m, s) for m, s in segs if not _is_xmp(m, s)]
    lead = 0
    while lead < len(segs) and segs[lead][0] in (APP0, APP1):
        lead += 1
    head = [s for _, s in segs[:lead]] + [ours] + [s for _, s in segs[lead:]]
    return b"\xff\xd8" + b"".join(head) + jpeg[scan:]


def read_jpeg_xmp(f: BinaryIO, size: int, name: str) -> bytes | None:
    """The XMP packet of the JPEG open as `f` (at its start, `size` bytes long)."""
    if f.read(2) != b"\xff\xd8":
        raise UnreadableFile(f"{name} is not a JPEG file.")
    found: bytes | None = None
    pos = 2
    while True:
        b = f.read(2)
        if len(b) < 2 or b[0] != 0xFF:
            raise UnreadableFile(f"{name} is a damaged JPEG: its segment structure is broken.")
        marker = b[1]
        while marker == 0xFF:  # fill bytes
            nxt = f.read(1)
            if not nxt:
                raise UnreadableFile(f"{name} is a damaged JPEG: it is cut short.")
            marker = nxt[0]
        if marker in _STANDALONE:
            continue
        if marker == SOS:
            if not _has_eoi(f):
                raise UnreadableFile(f"{name} is a damaged JPEG: it is cut short.")
            return found
        if marker == EOI:
            raise UnreadableFile(f"{name} is a damaged JPEG: it holds no image data.")
        raw = f.read(2)
        length = struct.unpack(">H", raw)[0] if len(raw) == 2 else 0
        pos = f.tell() + length - 2
        if length < 2 or pos > size:
            raise UnreadableFile(f"{name} is a damaged JPEG: it is cut short.")
        if marker == APP1 and found is None:
            body = f.read(length - 2)
            if body.startswith(XMP_HEADER):
                found = body[len(XMP_HEADER):]
        f.seek(pos)


def _has_eoi(f: BinaryIO) -> bool:
    """Whether the scan data ends: in scan data FF D9 can only be the EOI marker."""
    last = b""
    while chunk := f.read(1 << 20):
        if b"\xff\xd9" in last + chunk:
            return True
        last = chunk[-1:]
    return False


def jpeg_mark(f: BinaryIO, size: int, name: str) -> Mark | None:
    packet = read_jpeg_xmp(f, size, name)
    return parse_xmp(packet) if packet is not None else None
