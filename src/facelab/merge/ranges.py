"""Merge options by frame range: `data_dst/merge.json`, set by the studio, read by merge.

DeepFaceLab's interactive merger keeps settings per frame; here a list of frame ranges
(first and last frame number as in the frame names, inclusive) each carries the merge
options it changes from the run's own (the CLI flags): `{"ranges": [{"first": 10, "last":
40, "options": {"erode": 30, "color": "mkl"}}]}`. One file for both outputs, beside dst's
frames rather than in merged/ or merged_video/ (those hold a run's per-frame record, which a
merge rewrites; the ranges are the user's settings and outlive any one output). A frame in
a range is merged with its options and recorded with them (`merge/resume.py`), so a changed
range redoes only its own frames, or the segments that hold them.

The file is untrusted input (a hand edit, another program): it is read with limits and
every value is checked against the options' own declarations; anything wrong is refused in
one sentence naming the file and the range. Ranges never overlap; `set_range` cuts the
ranges a new one covers, as the studio does when the user changes a span.
"""

from __future__ import annotations

import dataclasses
import json
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.fsutil import write_json
from facelab.merge.options import MergeOptions
from facelab.options import OptionSpec, specs
from facelab.workspace import Workspace

RANGES_FILE = "merge.json"  # in data_dst/
MAX_BYTES = 4 << 20  # a file of real ranges is kilobytes
MAX_RANGES = 100_000
MAX_FRAME = 10**9
#: per-run options a range cannot change: export_alpha writes merged_mask/ for every frame
RUN_ONLY = ("export_alpha",)


@dataclass(frozen=True)
class Range:
    """Frames `first`..`last` (inclusive, numbered as their names) merged with `options`
    (MergeOptions field → value) in place of the run's."""

    first: int
    last: int
    options: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "options": dict(self.options)}


def ranges_path(ws: Workspace) -> Path:
    return ws.frames_dir("dst") / RANGES_FILE


def _where(ws: Workspace) -> str:
    return str(ranges_path(ws).relative_to(ws.root))


def load_ranges(ws: Workspace) -> list[Range]:
    """The workspace's ranges, sorted; none when the file is absent. FacelabError (one
    sentence) when it is unreadable or malformed."""
    path = ranges_path(ws)
    where = _where(ws)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise _bad(where, f"is larger than {MAX_BYTES >> 20} MB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(where, f"cannot be read ({type(e).__name__})") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise _bad(where, f"is not valid JSON ({e})") from None
    return parse_ranges(doc, where)


def save_ranges(ws: Workspace, ranges: list[Range]) -> None:
    """Check `ranges` and write them (atomically: a reader sees the old file or the new)."""
    checked = parse_ranges({"ranges": [r.to_json() for r in ranges]}, _where(ws))
    write_json(ranges_path(ws), {"ranges": [r.to_json() for r in checked]})


def options_for(frame_number: int | None, base: MergeOptions, ranges: list[Range]
                ) -> MergeOptions:
    """The options frame `frame_number` is merged with: `base` changed by its range's."""
    r = range_of(frame_number, ranges)
    return base if r is None or not r.options else dataclasses.replace(base, **r.options)


def range_of(frame_number: int | None, ranges: list[Range]) -> Range | None:
    """The range holding the frame (`ranges` sorted and apart, as loaded), or None."""
    if frame_number is None:
        return None
    i = bisect_right(ranges, frame_number, key=lambda r: r.first) - 1
    return ranges[i] if i >= 0 and ranges[i].last >= frame_number else None


def set_range(ranges: list[Range], first: int, last: int, options: Mapping[str, Any]
              ) -> list[Range]:
    """`ranges` with frames `first`..`last` given `options` (empty: the run's own): the
    ranges it overlaps are cut around it, the rest kept. Checked like a loaded file."""
    kept: list[Range] = []
    for r in ranges:
        if r.last < first or r.first > last:
            kept.append(r)
            continue
        if r.first < first:
            kept.append(Range(r.first, first - 1, r.options))
        if r.last > last:
            kept.append(Range(last + 1, r.last, r.options))
    if options:
        kept.append(Range(first, last, dict(options)))
    return parse_ranges({"ranges": [r.to_json() for r in kept]}, "the merge ranges")


def parse_ranges(doc: Any, where: str = "the merge ranges") -> list[Range]:
    """Untrusted JSON (a file, a request body) → sorted, non-overlapping ranges, every
    option checked against its declaration; FacelabError naming `where` and the range."""
    if not isinstance(doc, dict) or set(doc) - {"ranges"}:
        raise _bad(where, 'must be an object {"ranges": [...]} and nothing else')
    items = doc.get("ranges", [])
    if not isinstance(items, list):
        raise _bad(where, 'must hold a list in "ranges"')
    if len(items) > MAX_RANGES:
        raise _bad(where, f"holds more than {MAX_RANGES} ranges")
    by_name = {s.name: s for s in specs(MergeOptions)}
    out = [_parse_one(item, i, by_name, where) for i, item in enumerate(items)]
    out.sort(key=lambda r: r.first)
    for a, b in pairwise(out):
        if b.first <= a.last:
            raise _bad(where, f"has ranges {a.first}-{a.last} and {b.first}-{b.last} that "
                       "overlap")
    return out


def _parse_one(item: Any, i: int, by_name: dict[str, OptionSpec], where: str) -> Range:
    if not isinstance(item, dict) or set(item) - {"first", "last", "options"}:
        raise _bad(where, f'range {i + 1} must be an object with "first", "last" and '
                   '"options"')
    first, last = item.get("first"), item.get("last")
    if not all(_frame(v) for v in (first, last)) or first > last:
        raise _bad(where, f"range {i + 1} needs frame numbers first ≤ last (0 to "
                   f"{MAX_FRAME}), not {_short(first)} and {_short(last)}")
    options = item.get("options", {})
    if not isinstance(options, dict):
        raise _bad(where, f"range {first}-{last}: \"options\" must be an object")
    for name, value in options.items():
        spec = by_name.get(name)
        if spec is None or name in RUN_ONLY:
            allowed = ", ".join(s for s in by_name if s not in RUN_ONLY)
            raise _bad(where, f"range {first}-{last}: {name!r} is not an option a range can "
                       f"set (one of {allowed})")
        try:
            if not isinstance(value, bool | int | float | str) or len(repr(value)) > 40:
                allowed = spec.constraint() or "true or false"
                raise FacelabError(f"{spec.flag} must be {allowed}.")
            if spec.base is bool and not isinstance(value, bool):
                raise FacelabError(f"{spec.flag} must be true or false, not {value!r}.")
            spec.check(value)
        except FacelabError as e:
            raise _bad(where, f"range {first}-{last}: {str(e).rstrip('.')}") from None
    return Range(first, last, dict(options))


def _frame(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_FRAME


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 24 else text[:20] + "…"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _bad(where: str, what: str) -> FacelabError:
    """The refusal of a file (with what to do) or of a request body (`where` names it)."""
    if where.endswith(RANGES_FILE):
        return FacelabError(f"{where} {what}; fix it in the studio's merge page, delete it "
                            "or merge with --ignore-ranges.")
    return FacelabError(f"{where}: {what}.")
