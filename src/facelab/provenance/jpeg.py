"""XMP in JPEG: an APP1 segment that starts `http://ns.adobe.com/xap/1.0/\\0`, placed after
the leading APP0 (JFIF) / APP1 (Exif) segments as the XMP specification asks.

The segments are walked by `facelab.jpeg`: to read, through the scan data to its EOI; a
broken or cut-short file is an `UnreadableFile`.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from facelab.jpeg import EOI, SOS, JpegError, Segment, segments
from facelab.provenance.mark import Mark, UnreadableFile
from facelab.provenance.xmp import build_xmp, parse_xmp

XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\0"
APP0, APP1 = 0xE0, 0xE1


def _header(jpeg: bytes) -> tuple[list[Segment], int]:
    """The segments before the scan, and where the scan's SOS (or an early EOI) starts."""
    segs = []
    try:
        for seg in segments(jpeg):
            if seg.marker in (SOS, EOI):
                return segs, seg.start
            segs.append(seg)
    except JpegError as e:
        raise ValueError(str(e)) from None
    raise AssertionError("the header walk ends at SOS or EOI")  # pragma: no cover


def _is_xmp(seg: Segment) -> bool:
    return seg.marker == APP1 and seg.payload().startswith(XMP_HEADER)


def jpeg_bytes_with_mark(jpeg: bytes, mark: Mark) -> bytes:
    """`jpeg` with `mark` as its XMP (an XMP segment already there is replaced)."""
    payload = XMP_HEADER + build_xmp(mark)
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("XMP packet too large for one JPEG segment")
    ours = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    segs, scan = _header(jpeg)
    segs = [s for s in segs if not _is_xmp(s)]
    lead = 0
    while lead < len(segs) and segs[lead].marker in (APP0, APP1):
        lead += 1
    head = [jpeg[s.start:s.end] for s in segs[:lead]] + [ours] \
        + [jpeg[s.start:s.end] for s in segs[lead:]]
    return jpeg[:2] + b"".join(head) + jpeg[scan:]


def read_jpeg_xmp(f: BinaryIO, size: int, name: str) -> bytes | None:
    """The XMP packet of the JPEG open as `f` (at its start; the walker measures its size
    itself), read only once the whole file proves readable: its scan data ends in EOI."""
    del size
    found: bytes | None = None
    seen_scan = False
    try:
        for seg in segments(f, until_sos=False):
            if seg.marker == EOI:
                if not seen_scan:
                    raise UnreadableFile(f"{name} is a damaged JPEG: it holds no image data.")
                return found
            seen_scan = seen_scan or seg.marker == SOS
            if seg.marker == APP1 and found is None and not seen_scan:
                body = seg.payload()
                if body.startswith(XMP_HEADER):
                    found = body[len(XMP_HEADER):]
    except JpegError as e:
        raise UnreadableFile({
            "not-jpeg": f"{name} is not a JPEG file.",
            "truncated": f"{name} is a damaged JPEG: it is cut short.",
        }.get(e.kind, f"{name} is a damaged JPEG: its segment structure is broken.")) from None
    raise AssertionError("the walk ends at EOI")  # pragma: no cover


def jpeg_mark(f: BinaryIO, size: int, name: str) -> Mark | None:
    packet = read_jpeg_xmp(f, size, name)
    return parse_xmp(packet) if packet is not None else None
