"""Which folder a curation command works on, its trash, and which files in it are faces.

A workspace side means `data_<side>/aligned` with `data_<side>/aligned_trash` beside it; any
other folder `DIR` gets `DIR_trash` beside it. Hidden files (the journal, the feature cache,
temporaries) and our own debug overlays are never faces.

Every command that changes a faceset holds its lock (`locked`): a workspace side's is
`faces-<side>`, the lock face extraction holds too, so a sort never renames faces that an
extraction is writing; any other folder has its own, inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from facelab import locks
from facelab.errors import FacelabError
from facelab.fsutil import clean_stale_parts
from facelab.progress import Reporter
from facelab.workspace import SIDES, Workspace, list_images

#: What `add-debug` writes right after the JPEG SOI: a COM segment naming its author, so
#: `remove-debug` deletes only the overlays it wrote and the listing skips them.
DEBUG_MARK = b"facelab debug overlay v1"
DEBUG_HEAD = b"\xff\xd8\xff\xfe" + (len(DEBUG_MARK) + 2).to_bytes(2, "big") + DEBUG_MARK
DEBUG_SUFFIX = "_debug.jpg"


@dataclass(frozen=True)
class Faceset:
    """A faceset folder and the trash its removals move to (a sibling, same file system)."""

    folder: Path
    label: str  # how messages name it: "data_src/aligned" or the folder as given
    arg: str  # how a command names it: "src" or "--dir DIR" (for hints)

    @property
    def trash(self) -> Path:
        name = "aligned_trash" if self.folder.name == "aligned" else f"{self.folder.name}_trash"
        return self.folder.parent / name

    @property
    def root(self) -> Path:
        """Journal paths are relative to this (the folder's parent holds folder and trash)."""
        return self.folder.parent

    def faces(self) -> list[Path]:
        """The face images, by name; debug overlays excluded."""
        return [p for p in list_images(self.folder) if not is_debug(p)]

    def debug_files(self) -> list[Path]:
        return [p for p in list_images(self.folder) if is_debug(p)]

    def require_faces(self) -> list[Path]:
        if not self.folder.is_dir():
            raise FacelabError(f"{self.label} does not exist.")
        faces = self.faces()
        if not faces:
            raise FacelabError(f"{self.label} holds no faces.")
        return faces


def from_trash(trash: Path) -> Faceset:
    """The faceset a trash folder belongs to (`aligned_trash` → `aligned`, `X_trash` → X)."""
    if not trash.name.endswith("_trash"):
        raise FacelabError(f"{trash} is not a faceset trash folder (aligned_trash or *_trash).")
    folder = trash.with_name(trash.name.removesuffix("_trash"))
    return Faceset(folder, str(folder), f"--dir {folder}")


def list_faces(folder: Path) -> list[Path]:
    """The face JPGs of an aligned folder in name order, without add-debug's overlays (what
    training, merging and eval read: an overlay left beside the faces is no face)."""
    return [p for p in list_images(folder)
            if p.suffix.lower() in (".jpg", ".jpeg") and not is_debug(p)]


def is_debug(path: Path) -> bool:
    """Whether `path` is an overlay written by `add-debug` (checked by its marker)."""
    if not path.name.endswith(DEBUG_SUFFIX):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(len(DEBUG_HEAD)) == DEBUG_HEAD
    except OSError:
        return False


def resolve(ws: Workspace, side: str | None, folder: Path | None) -> Faceset:
    """The faceset named by `src|dst` in the workspace or by `--dir DIR` (exactly one)."""
    if folder is not None:
        if side is not None:
            raise FacelabError("Give src, dst or --dir DIR, not both.")
        if not folder.is_dir():
            raise FacelabError(f"{folder} is not a folder.")
        return Faceset(folder, str(folder), f"--dir {folder}")
    if side not in SIDES:
        raise FacelabError("Name the faceset: src, dst or --dir DIR." if side is None else
                           f"Unknown faceset '{side}': use src, dst or --dir DIR.")
    ws.require()
    return Faceset(ws.aligned_dir(side), f"data_{side}/aligned", side)  # type: ignore[arg-type]


JOURNAL_DIR = ".facelab-journal"  # journal.JOURNAL (journal imports this module)


def _lock_of(folder: Path) -> tuple[Path, str, str]:
    """(root, name, what) of the lock guarding `folder`."""
    path = folder.resolve()
    if path.name == "aligned" and path.parent.name in ("data_src", "data_dst"):
        side = path.parent.name.removeprefix("data_")
        return path.parent.parent, f"faces-{side}", f"data_{side}/aligned (the {side} faceset)"
    return path, "faceset", f"the faceset {folder}"


@contextlib.contextmanager
def locked(reporter: Reporter, *facesets: Faceset) -> Iterator[None]:
    """Hold the lock of each faceset for the block (one writer per faceset; refused in
    one line while another run holds one), then remove the temporary files a killed run
    left in them (its features cache, copies, journal plans)."""
    with contextlib.ExitStack() as stack:
        for fs in facesets:
            root, name, what = _lock_of(fs.folder)
            stack.enter_context(locks.stage(root, name, what, reporter))  # re-entrant
        for fs in facesets:
            clean_stale_parts(fs.folder)
            clean_stale_parts(fs.folder / JOURNAL_DIR, recursive=True)
            clean_stale_parts(fs.trash)
        yield
