"""DeepFaceLab's labelling flow for mask polygons: which faces of a side are labelled, and
the editor's W (skip) and E (confirm) moves.

A side's faces for labelling live in three folders of `data_<side>/`: `aligned/` (where
extraction puts them and training and merging read them), `aligned_confirmed/` (E: the
mask is right) and `aligned_skipped/` (W: not worth a mask). Like DeepFaceLab's XSeg
editor, a confirmed or skipped face leaves `aligned/`, so training and merging no longer
see it until it is moved back (`undo`, or by hand). Every move goes through the aligned
faceset's write-ahead journal, under the `faces-<side>` lock: `undo` here, `facelab faceset
undo <side>` and a crash mid-move behave exactly as for a sort or a trash, and nothing is
ever deleted.

Face names come from untrusted requests (the studio's pages): `face_path` accepts only a
plain JPG name in one of the three folders, never a path that climbs out or a symlink.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from facelab import locks
from facelab.errors import FacelabError
from facelab.faces.faceimage import FaceMeta, read_meta
from facelab.faceset import ops
from facelab.faceset.folder import Faceset, list_faces, locked, resolve
from facelab.faceset.journal import Journal, Op, Phase, unique
from facelab.fsutil import clean_stale_parts
from facelab.progress import NULL, Reporter
from facelab.workspace import SIDES, Workspace

ALIGNED, CONFIRMED, SKIPPED = "aligned", "aligned_confirmed", "aligned_skipped"
FOLDERS = (ALIGNED, CONFIRMED, SKIPPED)  # where a side's faces can be labelled
_NAME = re.compile(r"[^/\\\x00-\x1f\x7f]{1,251}\.jpe?g", re.IGNORECASE)
_CACHE_LIMIT = 200_000

#: Serialises this process's polygon writes and label moves: the stage locks are
#: re-entrant within a process, so they do not keep a threaded server's requests apart.
GUARD = threading.RLock()


@dataclass(frozen=True)
class FaceInfo:
    """What a scan needs of a face's metadata (read once per file version, see `face_info`)."""

    source_filename: str
    face_index: int
    source_size: tuple[int, int]
    source_rect: tuple[int, int, int, int]
    polys: int  # how many mask polygons it carries


_INFO: dict[tuple[int, int, int, int], FaceInfo] = {}


def face_info(path: Path) -> FaceInfo:
    """`path`'s summary, cached in this process by (device, inode, mtime, size): a rename
    (sort, trash, skip) keeps the entry, a metadata write (a new file) reads it again, so a
    server scans a 10,000-face side once (≈ 2 ms a face on this CPU), then only changes."""
    key = _key(path)
    if (info := _INFO.get(key)) is None:
        info = noted(path, read_meta(path), key)
    return info


def noted(path: Path, meta: FaceMeta, key: tuple[int, int, int, int] | None = None
          ) -> FaceInfo:
    """Cache what `meta`, just written to or read from `path`, says (a rewrite within one
    timestamp tick could reuse a freed inode: our own writes never leave a stale entry)."""
    info = FaceInfo(meta.source_filename, meta.face_index, meta.source_size,
                    meta.source_rect, len(meta.mask_polys))
    if len(_INFO) >= _CACHE_LIMIT:
        _INFO.clear()
    _INFO[key or _key(path)] = info
    return info


def _key(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _side(side: str) -> str:
    if side not in SIDES:
        raise FacelabError(f"Unknown side '{side}': use src or dst.")
    return side


def face_path(ws: Workspace, side: str, face: str | Path) -> Path:
    """The face file named by `face`: a plain name (in `aligned/`), `folder/name` with
    folder one of FOLDERS, or an absolute path to such a file. Anything else is refused."""
    data = ws.frames_dir(_side(side))  # type: ignore[arg-type]
    if isinstance(face, Path) and face.is_absolute():
        folder, name = face.parent.name, face.name
        inside = face.parent.resolve() == (data / folder).resolve()
    else:
        parts = str(face).split("/")
        folder, name = [ALIGNED, *parts][-2:] if len(parts) <= 2 else ("", "")
        inside = len(parts) <= 2
    if not (inside and folder in FOLDERS and _NAME.fullmatch(name)
            and not name.startswith(".")):
        raise FacelabError(f"{str(face)[:200]!r} is not a face of data_{side} (give a JPG "
                           f"name in {', '.join(FOLDERS)}).")
    path = data / folder / name
    if path.is_symlink():
        raise FacelabError(f"data_{side}/{folder}/{name} is a link, not a face file.")
    if not path.is_file():
        raise FacelabError(f"data_{side}/{folder}/{name} does not exist.")
    return path


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Hold what guards writes to the face at `path`: this process's GUARD and, for a
    workspace side's face, its `faces-<side>` lock (the one extraction, sort and trash
    hold), else the folder's own faceset lock (as `facelab faceset --dir` takes)."""
    folder = Path(path).resolve().parent
    data = folder.parent
    with GUARD:
        if data.name in ("data_src", "data_dst") and folder.name in (*FOLDERS, "aligned_trash"):
            side = data.name.removeprefix("data_")
            lock = locks.stage(data.parent, f"faces-{side}",
                               f"data_{side}/aligned (the {side} faceset)", NULL)
        else:
            lock = locks.stage(folder, "faceset", f"the faceset {folder}", NULL)
        with lock:
            yield


def skip(ws: Workspace, side: str, face: str | Path, reporter: Reporter = NULL) -> Path:
    """W: move the face to `data_<side>/aligned_skipped/` (journaled); its new path."""
    return _move(ws, side, face, SKIPPED, "skip", reporter)


def confirm(ws: Workspace, side: str, face: str | Path, reporter: Reporter = NULL) -> Path:
    """E: move the face to `data_<side>/aligned_confirmed/` (journaled); its new path."""
    return _move(ws, side, face, CONFIRMED, "confirm", reporter)


def _move(ws: Workspace, side: str, face: str | Path, folder: str, verb: str,
          reporter: Reporter) -> Path:
    fs = _faceset(ws, side)
    with GUARD, locked(reporter, fs):
        path = face_path(ws, side, face)  # inside the lock: another run may have moved it
        if path.parent.name == folder:
            return path
        clean_stale_parts(fs.root / folder)
        journal = Journal(fs)
        journal.require_clear(fs.arg)
        dest = unique(fs.root / folder / path.name, set())  # a taken name gets `_1`
        journal.run(f"{verb} {path.name}", [Phase("move", [[_rel(path), _rel(dest)]])],
                    reporter)
        return dest


def undo(ws: Workspace, side: str, steps: int = 1, reporter: Reporter = NULL) -> list[Op]:
    """Undo the side's last `steps` journaled operations (a skip, a confirm, a sort...)."""
    with GUARD:
        return ops.undo(_faceset(ws, side), steps, reporter)


def undo_label(ws: Workspace, side: str, reporter: Reporter = NULL) -> Op:
    """Undo the side's last journaled operation if it is a skip or a confirm (the mask
    editor's undo), else refuse: a sort or a trash is undone where it was made."""
    fs = _faceset(ws, side)
    with GUARD, locked(reporter, fs):
        journal = Journal(fs)
        last = next((op for op in reversed(journal.ops()) if op.state != "undone"), None)
        if last is None:
            raise FacelabError(f"{fs.label} has nothing to undo.")
        if not last.command.startswith(("skip ", "confirm ")):
            raise FacelabError(f"The last change of {fs.label} is `{last.command}`, not a "
                               f"skip or confirm: undo it with `facelab faceset undo {side}`.")
        return journal.undo(1, reporter)[0]


def labelled_faces(ws: Workspace, side: str, folders: tuple[str, ...] = FOLDERS
                   ) -> list[Path]:
    """The faces of `folders` (default: aligned, confirmed and skipped) that carry mask
    polygons, folder by folder in name order. A damaged face is a FacelabError; scanning
    takes no lock (a face moved meanwhile is passed over)."""
    data = ws.frames_dir(_side(side))  # type: ignore[arg-type]
    if bad := [f for f in folders if f not in FOLDERS]:
        raise FacelabError(f"{bad[0]!r} is not a labelling folder (use {', '.join(FOLDERS)}).")
    out = []
    for p in (p for f in folders for p in list_faces(data / f)):
        try:
            if face_info(p).polys:
                out.append(p)
        except FileNotFoundError:  # moved since the listing (a sort running meanwhile)
            continue
    return out


def _faceset(ws: Workspace, side: str) -> Faceset:
    return resolve(ws, _side(side), None)


def _rel(p: Path) -> str:
    """A path as the journal stores it: relative to `data_<side>/`."""
    return f"{p.parent.name}/{p.name}"
