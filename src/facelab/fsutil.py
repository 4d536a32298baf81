"""File-system helpers that keep the user's files safe.

Outputs are written under a temporary name beside their final path and renamed into place
when complete, so a crash never leaves a half-written file. Nothing is deleted: what is
removed moves to a trash folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def timestamp() -> str:
    """A sortable, file-name-safe local timestamp (unique within this process)."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{int(now * 1000) % 1000:03d}"


#: `temp_sibling`'s names: `.<stem>.part-<pid><ext>`
PART_NAME = re.compile(r"^\.(?P<stem>.+)\.part-(?P<pid>\d+)(?P<ext>\.[^./]*)?$")
_PID_MAX = 1 << 22  # Linux's ceiling; a larger number is no pid of ours (and os.kill overflows)


def temp_sibling(path: Path) -> Path:
    """A temporary name beside `path` that keeps its extension (muxers pick formats by it)."""
    return path.with_name(_part_name(path, str(os.getpid())))


def pid_alive(pid: int) -> bool:
    """The process runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc here, or it ended just now: kill() is the answer
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """A failed write() raises an OSError that names no file; name `path` (the output the
    user knows), so the one line the CLI prints for a full disk says where."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def clean_stale_parts(folder: Path, recursive: bool = False, *,
                      of: Path | None = None) -> list[Path]:
    """Remove the temporary files (`temp_sibling` names) that killed runs left in `folder`:
    those whose writer's pid is no longer alive. They are our own half-written outputs,
    never a user's file, so they are deleted, not trashed. `of`: only the temporaries of
    that one output (for folders that are the user's, not the workspace's). Returns what
    was removed."""
    if not folder.is_dir():
        return []
    removed = []
    for p in (folder.rglob(".*.part-*") if recursive else folder.glob(".*.part-*")):
        m = PART_NAME.match(p.name)
        if not m or not p.is_file() or (of is not None and p.name != _part_name(of, m["pid"])):
            continue
        pid = int(m["pid"])
        if 0 < pid <= _PID_MAX and pid != os.getpid() and not pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def _part_name(path: Path, pid: str) -> str:
    return f".{path.stem}.part-{pid}{path.suffix}"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to `path`, on failure remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with naming(path):
            yield tmp
            if tmp.exists():
                _fsync(tmp)
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def move_to_trash(paths: list[Path], trash_dir: Path, base: Path) -> int:
    """Move `paths` into `trash_dir`, keeping their layout relative to `base`. Returns count."""
    moved = 0
    for p in paths:
        if not p.exists():
            continue
        dest = trash_dir / p.relative_to(base)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # two removals in the same millisecond: never overwrite
            dest = dest.with_name(f"{dest.stem}.{timestamp()}{dest.suffix}")
        shutil.move(str(p), str(dest))
        moved += 1
    return moved
