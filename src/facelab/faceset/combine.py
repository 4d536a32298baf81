"""`faceset combine DIR... --to src`: copy several facesets of one person into one, bytes
and metadata untouched; a name already taken gets `_1`, `_2`… Journaled: undo removes the
copies (only while they are still exact copies of originals that still exist). Holds the
target's lock; the folders read from are not locked (they are only read)."""

from __future__ import annotations

from pathlib import Path

from facelab.errors import FacelabError
from facelab.faces.faceimage import has_meta
from facelab.faceset.folder import Faceset, is_debug, locked
from facelab.faceset.journal import Journal, Op, Phase, file_hash, unique
from facelab.faceset.sort import rel
from facelab.progress import NULL, Reporter
from facelab.workspace import list_images


def combine(dirs: list[Path], fs: Faceset, reporter: Reporter = NULL) -> tuple[Op, int]:
    """Copy every facelab face of `dirs` into `fs`; the op and how many files were skipped
    (no facelab metadata)."""
    if not dirs:
        raise FacelabError("Name the faceset folders to combine.")
    for d in dirs:
        if not d.is_dir():
            raise FacelabError(f"{d} is not a folder.")
        if d.resolve() == fs.folder.resolve():
            raise FacelabError(f"{d} is the target faceset itself.")
    fs.folder.mkdir(parents=True, exist_ok=True)
    with locked(reporter, fs):
        return _combine(dirs, fs, reporter)


def _combine(dirs: list[Path], fs: Faceset, reporter: Reporter) -> tuple[Op, int]:
    journal = Journal(fs)
    journal.require_clear(fs.arg)
    phase, taken, skipped = Phase("copy"), set(), 0
    for d in dirs:
        for f in list_images(d):
            if is_debug(f) or not has_meta(f):
                skipped += 1
                continue
            dest = unique(fs.folder / f.name, taken)
            taken.add(dest.name)
            phase.steps.append([str(f.resolve()), rel(dest), file_hash(f)])
    if not phase.steps:
        raise FacelabError("No facelab faces in " + ", ".join(map(str, dirs)) + ".")
    return journal.run(f"combine {len(phase.steps)} faces", [phase], reporter), skipped
