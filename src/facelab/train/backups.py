"""Backups on demand: copy the current save aside, list the copies, restore one.

The periodic backups of `checkpoint.save` and these share one format and one writer
(`NAME_backups/<iteration>/`, each a full save with its own manifest), so a backup made
here is also what a damaged save falls back to. A restore verifies the backup first, keeps
the save it replaces in a trash folder (nothing is deleted), and writes the backup through
the same commit path as a save, so a kill mid-restore leaves either the old or the restored
save loadable.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from facelab.errors import FacelabError
from facelab.train.checkpoint import (
    FILES,
    KEEP_MARK,
    _backups,
    _commit,
    _Damaged,
    _fsync_dir,
    _pending,
    _read_manifest,
    _read_set,
    _recover,
    _write_backup,
    check_name,
    exists,
    list_models,
)


def _root(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}_backups"


def list_backups(folder: Path, name: str) -> list[tuple[int, Path]]:
    """(iteration, folder) of each backup of `name`, oldest first; not verified."""
    return [(int(p.name), p) for p in reversed(_backups(_root(folder, name)))]


def _no_model(folder: Path, name: str) -> FacelabError:
    names = list_models(folder)
    have = f"its models: {', '.join(names)}" if names else "it holds no models"
    return FacelabError(f"There is no model named {name!r} in {folder} ({have}).")


def _current(folder: Path, name: str) -> tuple[dict[str, bytes], int]:
    """The verified current save and its iteration, or a one-line error."""
    check_name(name)
    if not exists(folder, name):
        raise _no_model(folder, name)
    try:
        blobs = _read_set(folder, name)
        iteration = _read_manifest(folder, name).get("iteration")
    except _Damaged as damage:
        raise FacelabError(
            f"The save of model {name!r} in {folder} is damaged ({damage}); "
            "restore one of its backups instead."
        ) from None
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise FacelabError(f"The save of model {name!r} in {folder} records no iteration.")
    return blobs, iteration


def backup(folder: Path, name: str) -> Path:
    """Copy the current verified save to `NAME_backups/<iteration>/` and return that folder.

    An intact backup of the same iteration is kept as is (it holds the same save). The
    folder is marked so that periodic backups (`keep_backups`) never prune it, and making it
    prunes nothing either: the user asked for this copy.
    """
    folder = Path(folder)
    blobs, iteration = _current(folder, name)
    final = _root(folder, name) / str(iteration)
    try:
        _read_set(final, name)  # an intact copy of this iteration is the same save
    except _Damaged:
        _write_backup(_root(folder, name), name, blobs, iteration, keep=0)
    (final / KEEP_MARK).touch()
    _fsync_dir(final)
    return final


def is_kept(path: Path) -> bool:
    """Whether a backup folder was made on request (periodic pruning leaves it alone)."""
    return (path / KEEP_MARK).exists()


def _find(folder: Path, name: str, which: str) -> tuple[int, Path]:
    """The backup that `which` (an iteration as listed, or the backup folder) names."""
    found = list_backups(folder, name)
    listed = ", ".join(str(it) for it, _ in found) or "none"
    key = Path(which.strip()).name if which.strip() else ""
    for it, path in found:
        if key.isdigit() and int(key) == it:
            return it, path
    raise FacelabError(
        f"Model {name!r} has no backup {which!r}; its backups (iterations): {listed}."
    )


def restore(folder: Path, name: str, which: str, trash: Path) -> int:
    """Make backup `which` the current save of `name`; return its iteration.

    The replaced save's files are copied into `trash` first (the commit then replaces them),
    so at every instant the folder holds a committed save: the old one or the restored one.
    """
    check_name(name)
    folder = Path(folder)
    if not exists(folder, name) and not list_backups(folder, name):
        raise _no_model(folder, name)
    iteration, path = _find(folder, name, which)
    try:
        blobs = _read_set(path, name)
    except _Damaged as damage:
        others = ", ".join(str(it) for it, _ in list_backups(folder, name) if it != iteration)
        raise FacelabError(
            f"Backup {iteration} of model {name!r} is damaged ({damage}); "
            f"other backups: {others or 'none'}."
        ) from None
    _recover(folder, name)  # finish a cut-short save, so what goes to the trash is whole
    old = [folder / f"{name}_{f}" for f in FILES] + [folder / f"{name}_manifest.json"]
    old += [_pending(folder, p.name) for p in old]
    kept = [p for p in old if p.is_file()]
    if kept:
        trash.mkdir(parents=True, exist_ok=True)
        for p in kept:
            shutil.copy2(p, trash / p.name)
    _commit(folder, name, blobs, iteration)
    return iteration
