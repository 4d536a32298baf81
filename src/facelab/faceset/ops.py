"""Journaled curation besides sorting: trash, restore, recover-names, undo; each holds the
faceset's lock (`folder.locked`)."""

from __future__ import annotations

from pathlib import Path

from facelab.errors import FacelabError
from facelab.faceset.features import load_features
from facelab.faceset.folder import Faceset, from_trash, locked
from facelab.faceset.journal import Journal, Op, Phase, unique
from facelab.faceset.sort import plan_renames, rel
from facelab.progress import NULL, Reporter


def _one_folder(files: list[Path], what: str) -> Path:
    if not files:
        raise FacelabError(f"Name the files to {what}.")
    for f in files:
        if not f.is_file():
            raise FacelabError(f"{f} is not a file.")
        if f.name.startswith("."):
            raise FacelabError(f"{f} is facelab's own bookkeeping, not a face.")
    parents = {f.resolve().parent for f in files}
    if len(parents) > 1:
        raise FacelabError(f"The files to {what} must be in one folder (got {len(parents)}).")
    return parents.pop()


def trash_files(files: list[Path], reporter: Reporter = NULL) -> Op:
    """Move faces of one faceset folder to its trash (journaled: undo brings them back)."""
    folder = _one_folder(files, "trash")
    fs = Faceset(folder, str(folder), f"--dir {folder}")
    with locked(reporter, fs):
        journal = Journal(fs)
        journal.require_clear(fs.arg)
        phase, taken = Phase("move"), set()
        for f in dict.fromkeys(p.resolve() for p in files):
            dest = unique(fs.trash / f.name, taken)
            taken.add(dest.name)
            phase.steps.append([rel(f), rel(dest)])
        return journal.run(f"trash {len(phase.steps)} files", [phase], reporter)


def restore_files(files: list[Path] | None, fs: Faceset | None = None,
                  reporter: Reporter = NULL) -> Op | None:
    """Move trashed faces back (`files` in a trash folder, or everything in `fs`'s trash);
    a name taken meanwhile gets a `_1` suffix. None when the trash is empty."""
    if files is None:
        assert fs is not None
    else:
        fs = from_trash(_one_folder(files, "restore"))
    with locked(reporter, fs):
        return _restore(files, fs, reporter)


def _restore(files: list[Path] | None, fs: Faceset, reporter: Reporter) -> Op | None:
    if files is None:
        files = sorted(p for p in fs.trash.iterdir() if p.is_file()) \
            if fs.trash.is_dir() else []
        if not files:
            return None
    journal = Journal(fs)
    journal.require_clear(fs.arg)
    phase, taken = Phase("move"), set()
    for f in files:
        dest = unique(fs.folder / f.name, taken)
        taken.add(dest.name)
        phase.steps.append([rel(f.resolve()), rel(dest)])
    return journal.run(f"restore {len(phase.steps)} files", [phase], reporter)


def recover_names(fs: Faceset, resume: bool = False, reporter: Reporter = NULL) -> Op | None:
    """Rename every face back to the name it had at extraction (two faces claiming one name:
    the second gets `_1`). None when every name is already right."""
    with locked(reporter, fs):
        return _recover_names(fs, resume, reporter)


def _recover_names(fs: Faceset, resume: bool, reporter: Reporter) -> Op | None:
    journal = Journal(fs)
    if resume:
        journal.resume(reporter)
    journal.require_clear(fs.arg)
    recs = load_features(fs, fs.require_faces(), (), reporter)
    targets: list[str | None] = []
    claimed: set[str] = set()
    for r in recs:  # names that stay put first, so a face already right keeps its name
        name = r["info"]["original_name"]
        if name is None or name == r.path.name:
            claimed.add(r.path.name)
    for r in recs:
        name = r["info"]["original_name"]
        if name is None or name == r.path.name:
            targets.append(None)
            continue
        base, cand, i = Path(name), name, 0
        while cand in claimed:
            i += 1
            cand = f"{base.stem}_{i}{base.suffix}"
        claimed.add(cand)
        targets.append(cand)
    phases = plan_renames(fs, recs, targets, [])
    if not phases[1].steps:
        return None
    return journal.run("recover-names", phases, reporter)


def undo(fs: Faceset, steps: int = 1, reporter: Reporter = NULL) -> list[Op]:
    """Undo the last `steps` operations (an interrupted one first)."""
    if steps < 1:
        raise FacelabError("--steps must be at least 1.")
    with locked(reporter, fs):
        done = Journal(fs).undo(steps, reporter)
    if not done:
        raise FacelabError(f"{fs.label} has nothing to undo.")
    return done


def resume(fs: Faceset, reporter: Reporter = NULL) -> Op | None:
    with locked(reporter, fs):
        return Journal(fs).resume(reporter)
