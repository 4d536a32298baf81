"""The one JPEG segment walker: every reader of JPEG files goes through `segments`.

Aligned faces, DeepFaceLab facesets and images to verify all arrive from outside, so walking
their marker segments is security-relevant parsing of untrusted bytes. It lives here once,
so every caller agrees on the corner cases (fill bytes, markers without a length, RSTn,
cut-short and garbled files) and none can be driven into an IndexError, a huge allocation
or an endless loop.

Policy on bad input, the same for every caller: damage is a `JpegError` (a FacelabError,
one line, with a `kind` of "not-jpeg", "truncated" or "malformed"), never "absent" and
never another exception. Work is O(len(data)) with C-level searches and no recursion; no
read is larger than one segment (64 KiB) or one window of a file; at most `max_segments`
segments are walked.

The rules:

- The data starts with SOI (FF D8), which is not yielded. Another SOI is malformed.
- Any run of FF fill bytes may precede a marker; it belongs to the segment that follows
  (`start` includes it), so joining the segments' bytes rebuilds the file exactly.
- TEM (01) and RST0-RST7 (D0-D7) have no length: yielded with an empty body wherever they
  are (libjpeg skips them before a scan too). EOI (D9) has none either: yielded, then the
  walk ends.
- FF 00 outside entropy-coded data, or a byte other than FF where a marker must be, is
  malformed.
- Every other marker (the reserved 02-BF included) has a big-endian length that counts
  itself: below 2 is malformed; past the end of the data is truncated.
- SOS starts entropy-coded data. With `until_sos` (the default) it is yielded bare (its two
  marker bytes) and nothing after it is read, so metadata readers never touch pixels.
  Without, its header is yielded and the scan skipped: FF 00 (a stuffed FF), RSTn and fill
  bytes in it are data; any other marker ends it and is walked like a header segment (the
  DHT and SOS of a progressive JPEG's next scan...). From the first SOS on, whatever is not
  a marker counts as scan data (fill bytes too: a segment there starts at its marker's FF).
  The walk ends at EOI; data that ends first is truncated.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from facelab.errors import FacelabError

SOI = b"\xff\xd8"
TEM, SOS, EOI, SOI_MARKER = 0x01, 0xDA, 0xD9, 0xD8
RST = range(0xD0, 0xD8)
STANDALONE = frozenset({TEM, *RST})  # markers without a length (besides SOI and EOI)
MAX_SEGMENTS = 4096  # real files hold a few dozen; bounds the work a hostile file can ask for
_WINDOW = 1 << 16  # bytes a file is read in
_FILL = re.compile(rb"\xff*")
# In scan data, the FF of a marker: followed by anything but 00 (a stuffed FF), RSTn or fill,
# or by the end of the searched window. Starts with a literal, so the search runs at C speed.
_MARKER = re.compile(rb"\xff(?:[^\x00\xd0-\xd7\xff]|\Z)")

Kind = Literal["not-jpeg", "truncated", "malformed"]
Source = bytes | bytearray | memoryview | BinaryIO


class JpegError(FacelabError):
    """The data is not JPEG or its segment structure is damaged.

    `kind` is "not-jpeg", "truncated" (the data ends early) or "malformed"; `reason` is a
    verb phrase ("ends inside its headers") for callers that name the file in their own
    sentence.
    """

    def __init__(self, kind: Kind, reason: str) -> None:
        super().__init__(f"The JPEG data {reason}.")
        self.kind: Kind = kind
        self.reason = reason


class _Reader:
    """Bytes at offsets from the start of the data: in memory, or a seekable file read one
    window at a time (each byte is read O(1) times as the walk moves forward)."""

    def __init__(self, src: Source) -> None:
        self.f: BinaryIO | None = None
        self.at = 0  # offset of buf[0]
        if isinstance(src, bytes | bytearray | memoryview):
            self.buf: bytes | bytearray = bytes(src) if isinstance(src, memoryview) else src
            self.size = len(self.buf)
        else:
            self.f, self.buf = src, b""
            self.size = src.seek(0, io.SEEK_END)

    def _hold(self, pos: int, n: int) -> int:
        """Have [pos, pos + n) (clipped at the end) in the window; pos's index there."""
        if self.f is not None:
            n = max(0, min(n, self.size - pos))
            if not self.at <= pos <= pos + n <= self.at + len(self.buf):
                self.f.seek(pos)
                self.buf = self.f.read(max(0, min(max(n, _WINDOW), self.size - pos)))
                self.at = pos
        return pos - self.at

    def get(self, pos: int, n: int) -> bytes:
        """n bytes at pos; fewer only where the data ends."""
        i = self._hold(pos, n)
        return bytes(self.buf[i:i + n])

    def next_marker(self, pos: int) -> int:
        """In scan data: the offset of the first FF at or after pos that may be a marker's,
        by one C-level search per window: an FF followed by anything but 00, RSTn or FF, or
        one at the window's edge (the caller looks at it). The data's size if there is none."""
        while pos < self.size:
            i = self._hold(pos, 1)
            end = min(len(self.buf), i + _WINDOW)
            m = _MARKER.search(self.buf, i, end)
            if m:
                return self.at + m.start()
            if end <= i:  # nothing there: a file that shrank
                break
            pos = self.at + end
        return self.size

    def skip_fill(self, pos: int) -> int:
        """Offset of the first byte at or after pos that is not FF (the size if none)."""
        while pos < self.size:
            i = self._hold(pos, 1)
            m = _FILL.match(self.buf, i)
            j = m.end() if m else i
            if j < len(self.buf) or self.f is None or j == i:
                return self.at + j
            pos = self.at + j
        return pos


@dataclass(frozen=True, slots=True)
class Segment:
    """One marker segment: offsets into the data, from its start."""

    marker: int  # the byte after FF
    start: int  # first byte: fill before the marker included (before the first scan)
    body: int  # first byte after the marker and its length field
    end: int  # one past the last byte
    reader: _Reader = field(repr=False, compare=False)

    def payload(self) -> bytes:
        """The bytes after the length field (at most 65,533)."""
        data = self.reader.get(self.body, self.end - self.body)
        if len(data) < self.end - self.body:  # a file that shrank while it was read
            raise JpegError("truncated", "ends inside a segment")
        return data


def segments(src: Source, *, until_sos: bool = True,
             max_segments: int = MAX_SEGMENTS) -> Iterator[Segment]:
    """The marker segments after SOI, in order, each within the data; see the module doc.

    `src` is bytes or a seekable binary file holding the JPEG from its offset 0 (a file is
    read in windows, so a header walk never reads the pixels). Raises `JpegError` on damage,
    lazily: a caller that stops early never sees damage further on.
    """
    r = _Reader(src)
    if r.get(0, 2) != SOI:
        raise JpegError("not-jpeg", "does not start with FF D8")
    pos, count, in_scan = 2, 0, False
    while True:
        if in_scan:
            pos = _end_of_scan(r, pos)
        start = pos
        at, marker = _marker(r, pos, in_scan)
        count += 1
        if count > max_segments:
            raise JpegError("malformed", f"has more than {max_segments} segments")
        if marker in STANDALONE or marker == EOI or (marker == SOS and until_sos):
            yield Segment(marker, start, at + 2, at + 2, r)
            if marker in (EOI, SOS):
                return
            pos = at + 2
            continue
        if marker in (0x00, SOI_MARKER):
            what = "a stuffed FF 00" if marker == 0 else "a second SOI"
            raise JpegError("malformed", f"has {what} at offset {at} where a marker must be")
        raw = r.get(at + 2, 2)
        if len(raw) < 2:
            raise _cut(in_scan)
        length = int.from_bytes(raw, "big")
        if length < 2:
            raise JpegError("malformed", f"has a segment length below 2 at offset {at}")
        if at + 2 + length > r.size:
            raise _cut(in_scan)
        yield Segment(marker, start, at + 4, at + 2 + length, r)
        pos = at + 2 + length
        in_scan = in_scan or marker == SOS


def _cut(in_scan: bool) -> JpegError:
    return JpegError("truncated", f"ends inside its {'image data' if in_scan else 'headers'}")


def _marker(r: _Reader, pos: int, in_scan: bool) -> tuple[int, int]:
    """(offset of the marker's FF, marker byte) for the marker at pos, after any fill."""
    b = r.get(pos, 1)
    if not b:
        raise _cut(in_scan)
    if b[0] != 0xFF:
        raise JpegError("malformed", f"has byte {b[0]:02X} at offset {pos} where a marker "
                                     "must be")
    after = r.skip_fill(pos + 1)
    code = r.get(after, 1)
    if not code:
        raise _cut(in_scan)
    return after - 1, code[0]


def _end_of_scan(r: _Reader, pos: int) -> int:
    """Offset of the FF of the first marker at or after pos in entropy-coded data."""
    while True:
        pos = r.next_marker(pos)
        after = r.skip_fill(pos)
        code = r.get(after, 1)
        if after == pos or not code:  # no FF left, or FFs up to the end
            raise _cut(True)
        if code[0] != 0 and code[0] not in RST:  # FF 00 and RSTn belong to the scan
            return after - 1
        pos = after + 1
