"""`facelab sort`: reorder a faceset by a method, renaming to 00000.jpg, 00001.jpg, … (and
trashing what the method drops), through the journal so undo restores every name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from facelab.errors import FacelabError
from facelab.faceset import methods
from facelab.faceset.features import FaceRecord, load_features
from facelab.faceset.final import DEFAULT_TARGET
from facelab.faceset.folder import Faceset, locked
from facelab.faceset.journal import Journal, Op, Phase, unique
from facelab.progress import NULL, Reporter


@dataclass
class SortReport:
    method: str
    faces: int
    kept: int
    trashed: int
    moved: int  # files renamed or trashed (unchanged names are not touched)
    op: Op | None  # None when nothing had to move
    resumed: Op | None  # the interrupted operation --resume finished first


def rel(p: Path) -> str:
    """A path as the journal stores it: relative to the faceset's parent."""
    return f"{p.parent.name}/{p.name}"


def plan_renames(fs: Faceset, recs: list[FaceRecord], targets: list[str | None],
                 trash: list[int]) -> list[Phase]:
    """Phases that give recs[i] the name targets[i] (None: keep) and trash recs[trash].

    A face without an original name gets its current one recorded first, so a later
    recover-names can find it."""
    require_no_debug(fs)
    meta, first, second = Phase("meta"), Phase("move"), Phase("move")
    vacated: set[str] = set()
    taken_trash: set[str] = set()
    for i in trash:
        p = recs[i].path
        dest = unique(fs.trash / p.name, taken_trash)
        taken_trash.add(dest.name)
        first.steps.append([rel(p), rel(dest)])
        vacated.add(p.name)
    renames = [(r, t) for r, t in zip(recs, targets, strict=True)
               if t is not None and t != r.path.name]
    for k, (r, t) in enumerate(renames):
        if r["info"]["original_name"] is None:
            meta.steps.append([rel(r.path), r.path.name])
        tmp = fs.folder / f".facelab-tmp-{os.getpid()}-{k}{r.path.suffix.lower()}"
        first.steps.append([rel(r.path), rel(tmp)])
        second.steps.append([rel(tmp), rel(fs.folder / t)])
        vacated.add(r.path.name)
    finals = [t for _, t in renames]
    if len(set(finals)) != len(finals):
        raise AssertionError("two faces planned to the same name")  # a bug, not the user's
    for t in finals:
        if t not in vacated and (fs.folder / t).exists():
            raise FacelabError(f"{fs.label}/{t} is in the way of the new names and is not "
                               "a face: move it elsewhere first.")
    return [meta, first, second]


def require_no_debug(fs: Faceset) -> None:
    if debug := fs.debug_files():
        raise FacelabError(f"{fs.label} holds {len(debug)} debug overlays: run `facelab "
                           f"faceset remove-debug {fs.arg}` first (they would keep old names).")


def sequence_names(recs: list[FaceRecord], order: list[int]) -> list[str | None]:
    width = max(5, len(str(len(order) - 1)))
    names: list[str | None] = [None] * len(recs)
    for k, i in enumerate(order):
        names[i] = f"{k:0{width}d}{recs[i].path.suffix.lower()}"
    return names


def sort_faceset(fs: Faceset, by: str, target: int | None = None, resume: bool = False,
                 reporter: Reporter = NULL, jobs: int | None = None) -> SortReport:
    """Sort `fs` by method `by`; see `methods.METHODS` for the choices."""
    method = methods.get(by)
    if target is not None and by != "final":
        raise FacelabError("--target applies to --by final only.")
    if target is not None and target < 1:
        raise FacelabError("--target must be at least 1.")
    with locked(reporter, fs):
        return _sort(fs, by, method, target, resume, reporter, jobs)


def _sort(fs: Faceset, by: str, method: methods.Method, target: int | None, resume: bool,
          reporter: Reporter, jobs: int | None) -> SortReport:
    journal = Journal(fs)
    resumed = journal.resume(reporter) if resume else None
    journal.require_clear(fs.arg)
    files = fs.require_faces()
    require_no_debug(fs)
    if by == "final" and (n := target or DEFAULT_TARGET) >= len(files):
        raise FacelabError(f"{fs.label} holds {len(files)} faces, not more than --target "
                           f"{n}: nothing to select (choose a smaller --target).")
    recs = load_features(fs, files, method.features, reporter, jobs)
    sel = method.order(recs, methods.SortOptions(target))
    names = sequence_names(recs, sel.order) if sel.order is not None else [None] * len(recs)
    for i in sel.trash:
        names[i] = None
    phases = plan_renames(fs, recs, names, sel.trash)
    moved = len(phases[1].steps)
    op = journal.run(f"sort {by}", phases, reporter) if moved else None
    return SortReport(by, len(recs), len(recs) - len(sel.trash), len(sel.trash), moved, op,
                      resumed)
