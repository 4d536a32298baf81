"""File-system helpers that keep the user's files safe.

Outputs are written under a temporary name beside their final path and renamed into place
when complete, so a crash never leaves a half-written file. Nothing is deleted: what is
removed moves to a trash folder.
"""

from __future__ import annotations

import contextlib
import json
import os
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


def temp_sibling(path: Path) -> Path:
    """A temporary name beside `path` that keeps its extension (muxers pick formats by it)."""
    return path.with_name(f".{path.stem}.part-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to `path`, on failure remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
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
