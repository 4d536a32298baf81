"""Time strings of DeepFaceLab's cut dialog: `HH:MM:SS.mmm` (shorter forms accepted)."""

from __future__ import annotations

import re

from facelab.errors import FacelabError

_TC = re.compile(r"^(?:(?:(\d+):)?(\d{1,2}):)?(\d+(?:\.\d+)?)$")


def parse_timecode(text: str) -> float:
    """Seconds from `HH:MM:SS.mmm`, `MM:SS.mmm` or `SS.mmm`."""
    m = _TC.match(text.strip())
    if not m:
        raise FacelabError(
            f"Cannot read time {text!r}: write it as HH:MM:SS.mmm, e.g. 00:01:02.500."
        )
    hours, minutes, seconds = m.groups()
    if minutes is not None and int(minutes) >= 60 and hours is not None:
        raise FacelabError(f"Cannot read time {text!r}: minutes must be below 60.")
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def format_timecode(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"
