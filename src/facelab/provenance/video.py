"""The mark in a video's container metadata, as tags that survive each output muxer.

Measured with PyAV 18 (FFmpeg 8): mp4 and mov keep custom keys only with
`movflags=+use_metadata_tags` (formats.py sets it); Matroska/WebM keep any key and read
it back upper-cased; AVI keeps only RIFF INFO tags, so there the mark is one JSON object
in `ISBJ` (read back as `subject`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import av
import av.error

from facelab.provenance.mark import Mark, UnreadableFile, require_file
from facelab.provenance.xmp import MAX_PACKET, parse_xmp

#: Mark field -> container tag.
TAGS = {
    "source_type": "digital_source_type",
    "tool": "synthetic_tool",
    "version": "synthetic_tool_version",
    "model_id": "synthetic_model",
    "created": "synthetic_created",
}
AVI_TAG = "ISBJ"  # RIFF INFO "subject": one of the few keys the avi muxer writes


def video_metadata(mark: Mark, muxer: str = "mp4") -> dict[str, str]:
    """Container tags carrying `mark` for `muxer` (an FFmpeg muxer name)."""
    tags = {key: getattr(mark, field) for field, key in TAGS.items() if getattr(mark, field)}
    if muxer == "avi":
        return {AVI_TAG: json.dumps(tags, ensure_ascii=False, sort_keys=True)}
    return tags


def tags_mark(meta: Mapping[str, str]) -> Mark | None:
    """The mark in one metadata dictionary, whichever way a muxer kept it."""
    low = {k.lower(): v for k, v in meta.items()}
    if low.get(TAGS["source_type"]):
        return Mark(**{field: low.get(key, "") for field, key in TAGS.items()})
    subject = low.get("subject", "")
    if subject.startswith("{") and len(subject) <= MAX_PACKET:
        try:
            inner = json.loads(subject)
        except ValueError:
            inner = None
        if isinstance(inner, dict) and all(isinstance(v, str) for v in inner.values()):
            found = tags_mark(inner)
            if found:
                return found
    xmp = low.get("xmp")
    return parse_xmp(xmp.encode()) if xmp else None


def container_marks(c: av.container.InputContainer) -> list[tuple[str, Mark]]:
    """(where, mark) for the container's metadata and each stream's."""
    found = []
    mark = tags_mark(c.metadata)
    if mark:
        found.append(("container metadata", mark))
    for s in c.streams:
        mark = tags_mark(s.metadata)
        if mark:
            found.append((f"stream {s.index} ({s.type}) metadata", mark))
    return found


def read_video_mark(path: Path) -> Mark | None:
    """The first mark in the video at `path`; `UnreadableFile` if FFmpeg cannot open it."""
    path = Path(path)
    require_file(path)
    try:
        with av.open(str(path)) as c:
            marks = container_marks(c)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise UnreadableFile(f"{path.name} is not a video FFmpeg can read.") from e
    return marks[0][1] if marks else None
