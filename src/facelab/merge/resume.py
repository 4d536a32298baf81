"""What each merged frame was made with: `data_dst/merged/merge.json`, read by a rerun.

A frame counts as done only when the record names it with the run's settings (model id,
merge options, precision) and its files are complete. The record never claims a frame for
settings it was not made with, wherever a run is killed: the frames a run is about to
(re)make leave the record before the first of them is written, and each comes back only
once its files are written and synced (the record is saved every few seconds and at the
end). One record for the whole folder could not say this: a re-merge with `--erode 5`
killed after 14 frames left 14 frames at erode 5 and 61 at the old settings, and the
rerun called all 75 done.

The file's top-level `model_id`, `options` and `precision` are the latest run's settings
(what `facelab eval` reports); `made_with` holds each settings set still in use under a
short key and `frames` maps each frame's name to its key. A frame (or segment) that frame
ranges (`merge/ranges.py`) give other options is recorded under its own settings, so
changing a range makes only its frames again. A file from before per-frame records says
nothing trustworthy per frame: its frames are made again once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from facelab.fsutil import read_json, write_json

STATE_FILE = "merge.json"
SAVE_EVERY_S = 2.0  # at most this much finished work is redone after a kill
_IEND = b"\0\0\0\0IEND\xaeB`\x82"  # the last chunk of every PNG


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable name for one settings set."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class MergeRecord:
    """The per-frame record of one merged folder, for a run with `settings`."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.path = folder / STATE_FILE
        self.settings = settings
        self.key = settings_key(settings)
        self.made: dict[str, dict[str, Any]] = {}  # key -> the settings it names
        self.frames: dict[str, str] = {}  # frame stem -> key
        self._saved = 0.0
        doc = _read(self.path)
        made, frames = doc.get("made_with"), doc.get("frames")
        if isinstance(made, dict) and isinstance(frames, dict):
            self.made = {k: v for k, v in made.items() if isinstance(v, dict)}
            self.frames = {s: k for s, k in frames.items() if isinstance(k, str) and k in self.made}

    def current(self, stem: str, settings: dict[str, Any] | None = None) -> bool:
        """The frame was made with this run's settings (or its own `settings`, where a
        frame range gives it other options)."""
        return self.frames.get(stem) == (self.key if settings is None
                                         else settings_key(settings))

    def forget(self, stems: list[str]) -> None:
        """These frames are about to be made again: until each is recorded, none counts."""
        for stem in stems:
            self.frames.pop(stem, None)

    def record(self, stem: str, settings: dict[str, Any] | None = None) -> None:
        """The frame's files are written and synced with this run's settings (or its own)."""
        if settings is None:
            self.frames[stem] = self.key
            return
        key = settings_key(settings)
        self.made[key] = settings
        self.frames[stem] = key

    def save(self, every: float = 0.0) -> None:
        """Write the record (atomically); with `every`, only if that long since the last."""
        now = time.monotonic()
        if every and now - self._saved < every:
            return
        used = set(self.frames.values())
        made = {k: v for k, v in self.made.items() if k in used}
        made[self.key] = self.settings
        self.made = made
        write_json(self.path, {**self.settings, "made_with": made,
                               "frames": dict(sorted(self.frames.items()))})
        self._saved = now


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = read_json(path)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def frame_done(frame: Path, out_dir: Path, mask_dir: Path | None, debug_dir: Path | None
               ) -> bool:
    """The frame's outputs are all there and complete (a PNG ends in its IEND chunk)."""
    stem = frame.stem
    return (complete_png(out_dir / f"{stem}.png")
            and (mask_dir is None or complete_png(mask_dir / f"{stem}.png"))
            and (debug_dir is None or (debug_dir / f"{stem}.jpg").exists()))


def complete_png(path: Path) -> bool:
    """The file ends in PNG's IEND chunk (an empty or cut file after a power cut does not)."""
    try:
        with path.open("rb") as f:
            f.seek(-len(_IEND), os.SEEK_END)
            return f.read() == _IEND
    except OSError:  # missing, or shorter than the chunk
        return False
