"""The frame index's JSON form (`data_<side>/frames_index.json`): compact run lengths,
read back as untrusted data with every value checked before anything is expanded."""

from __future__ import annotations

import re
from fractions import Fraction
from itertools import pairwise
from typing import Any

FORMAT = "facelab-frame-index"
VERSION = 1
#: Refuse an index claiming more frames than this (about 46 hours at 60 fps): the run
#: lengths are checked against it before anything is expanded.
MAX_FRAMES = 10_000_000
MAX_TS = 2**62


class Invalid(Exception):
    """Why an index dict was refused: a clause from_json makes a sentence."""


def runs(values: list[int] | list[int | None], steps: bool = True) -> list[list[int | None]]:
    """[[step, count], ...]: each value is the previous known one plus `step` (from 0);
    a None value is a [None, count] run. With steps=False, runs of the values themselves."""
    runs: list[list[int | None]] = []
    prev = 0
    for v in values:
        step = None if v is None else (v - prev if steps else v)
        if v is not None:
            prev = v
        if runs and runs[-1][0] == step:  # None == None; 0 != None
            runs[-1][1] += 1  # type: ignore[operator]
        else:
            runs.append([step, 1])
    return runs


def _expand(v: Any, key: str, total: int | None, lo: int, hi: int, steps: bool = True,
            nulls: bool = False, of: str = "frames") -> list[Any]:
    """The values of `_runs`, each within [lo, hi]; the run counts are checked to sum to
    `total` (or at most MAX_FRAMES) before anything is expanded."""
    bad = Invalid(f"{key} must be a list of [step, count] runs")
    if not isinstance(v, list) or len(v) > MAX_FRAMES:
        raise bad
    count = 0
    for run in v:
        if not (isinstance(run, list) and len(run) == 2 and _is_int(run[1]) and run[1] >= 1
                and ((_is_int(run[0]) and abs(run[0]) < MAX_TS)
                     or (nulls and run[0] is None))):
            raise bad
        count += run[1]
        if count > MAX_FRAMES:
            raise Invalid(f"{key} holds more than {MAX_FRAMES:,} values")
    if total is not None and count != total:
        raise Invalid(f"{key} holds {count} values for {total} {of}")
    out: list[Any] = []
    prev = 0
    for step, n in v:
        if step is None:
            out.extend([None] * n)
        elif not steps:
            out.extend([step] * n)
        else:
            first = prev + step
            prev = first + step * (n - 1)
            if not lo <= first <= hi or not lo <= prev <= hi:
                raise Invalid(f"{key} must stay within {lo} to {hi}")
            out.extend(range(first, first + step * n, step) if step else [first] * n)
    if not steps and any(x is not None and not lo <= x <= hi for x in out):
        raise Invalid(f"{key} must stay within {lo} to {hi}")
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse(d: Any) -> dict[str, Any]:
    """The fields of a FrameIndex from its JSON form, every value checked; `Invalid`
    says why not."""
    if not isinstance(d, dict):
        raise Invalid("it is not a JSON object")
    keys = {"format", "version", "name", "size", "width", "height", "time_base", "frames",
            "truncated", "pts", "keyframes", "seek_back"}
    if missing := sorted(keys - d.keys()):
        raise Invalid(f"{missing[0]} is missing")
    if d["format"] != FORMAT or not _is_int(d["version"]) or d["version"] != VERSION:
        raise Invalid(f"it is not a version {VERSION} {FORMAT}")
    name = d["name"]
    if not isinstance(name, str) or len(name) > 255 or name in ("", ".", "..") or any(
            c in "/\\\x7f" or c < " " for c in name):
        raise Invalid("name must be a plain file name")
    for key, hi in (("size", MAX_TS), ("width", 1 << 16), ("height", 1 << 16),
                    ("frames", MAX_FRAMES)):
        if not _is_int(d[key]) or not (0 if key == "size" else 1) <= d[key] <= hi:
            raise Invalid(f"{key} must be an integer from {0 if key == 'size' else 1} "
                           f"to {hi:,}")
    if not isinstance(d["truncated"], bool):
        raise Invalid("truncated must be true or false")
    tb = d["time_base"]
    fraction = re.fullmatch(r"([1-9][0-9]{0,17})/([1-9][0-9]{0,17})", tb) \
        if isinstance(tb, str) else None
    if fraction is None:
        raise Invalid('time_base must be a fraction such as "1/90000"')
    num, den = fraction.groups()
    frames = d["frames"]
    pts = _expand(d["pts"], "pts", frames, -MAX_TS, MAX_TS, nulls=True)
    keyframes = _expand(d["keyframes"], "keyframes", None, 0, frames - 1)
    if any(b <= a for a, b in pairwise(keyframes)):
        raise Invalid("keyframes must be increasing")
    seek_back = _expand(d["seek_back"], "seek_back", len(keyframes), 0, MAX_TS, steps=False,
                        of="keyframes")
    return {"pts": pts, "keyframes": keyframes, "time_base": Fraction(int(num), int(den)),
            "width": d["width"], "height": d["height"], "name": name, "size": d["size"],
            "truncated": d["truncated"], "seek_back": seek_back}
