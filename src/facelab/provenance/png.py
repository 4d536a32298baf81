"""XMP in PNG: one uncompressed `iTXt` chunk with keyword `XML:com.adobe.xmp`, placed
before the first IDAT (where exiftool and Adobe put it), CRC computed as the format wants.

The reader walks the chunk headers and reads only iTXt bodies, so a large frame costs a few
seeks; a truncated or damaged structure is an `UnreadableFile`, never an exception of ours.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

from facelab.provenance.mark import Mark, UnreadableFile
from facelab.provenance.xmp import MAX_PACKET, build_xmp, parse_xmp

SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYWORD = b"XML:com.adobe.xmp"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _is_xmp(kind: bytes, data: bytes) -> bool:
    return kind == b"iTXt" and data.startswith(KEYWORD + b"\0")


def png_bytes_with_mark(png: bytes, mark: Mark) -> bytes:
    """`png` with `mark` as its XMP (an XMP chunk already there is replaced)."""
    if not png.startswith(SIGNATURE):
        raise ValueError("not PNG data")
    # keyword, compression flag 0 and method 0, empty language and translated keyword
    chunk = _chunk(b"iTXt", KEYWORD + b"\0\0\0\0\0" + build_xmp(mark))
    out, pos, placed = [SIGNATURE], len(SIGNATURE), False
    while pos + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        end = pos + 12 + length
        if end > len(png):
            raise ValueError("truncated PNG data")
        if kind == b"IDAT" and not placed:
            out.append(chunk)
            placed = True
        if not _is_xmp(kind, png[pos + 8:pos + 8 + min(length, len(KEYWORD) + 1)]):
            out.append(png[pos:end])
        pos = end
        if kind == b"IEND":
            break
    if not placed:
        raise ValueError("PNG data without IDAT")
    return b"".join(out)


def read_png_xmp(f: BinaryIO, size: int, name: str) -> bytes | None:
    """The XMP packet of the PNG open as `f` (at its start, `size` bytes long)."""
    if f.read(8) != SIGNATURE:
        raise UnreadableFile(f"{name} is not a PNG file.")
    found: bytes | None = None
    pos = 8
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise UnreadableFile(f"{name} is a damaged PNG: it ends before its IEND chunk.")
        length, kind = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF or not kind.isalpha():
            raise UnreadableFile(f"{name} is a damaged PNG: its chunk structure is broken.")
        pos += 12 + length
        if pos > size:
            raise UnreadableFile(f"{name} is a damaged PNG: it is cut short.")
        if kind == b"IEND":
            return found
        if kind == b"iTXt" and found is None and length <= MAX_PACKET + 64:
            body, crc = f.read(length), f.read(4)
            if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
                raise UnreadableFile(f"{name} is a damaged PNG: an iTXt chunk fails its CRC.")
            if _is_xmp(kind, body):
                found = _itxt_text(body)
        else:
            f.seek(pos)


def _itxt_text(body: bytes) -> bytes | None:
    """The text of an iTXt chunk, inflated if compressed (bounded); None if malformed."""
    kw_end = body.find(b"\0")
    if kw_end < 0 or len(body) < kw_end + 3:
        return None
    compressed, method = body[kw_end + 1], body[kw_end + 2]
    _lang, sep1, rest = body[kw_end + 3:].partition(b"\0")
    _translated, sep2, text = rest.partition(b"\0")
    if not (sep1 and sep2):
        return None
    if not compressed:
        return text
    if method != 0:
        return None
    try:
        out = zlib.decompressobj().decompress(text, MAX_PACKET + 1)
    except zlib.error:
        return None
    return out if len(out) <= MAX_PACKET else None


def png_mark(f: BinaryIO, size: int, name: str) -> Mark | None:
    packet = read_png_xmp(f, size, name)
    return parse_xmp(packet) if packet is not None else None
