"""One writer per model and per workspace stage: advisory lock files.

Two `facelab train` runs on one model would both resume and save over each other; two
`extract src` runs would interleave their faces. Each stage therefore holds a lock while it
writes: `<workspace>/.locks/<name>.lock`, locked with `flock` and holding the holder's pid,
host, command and start time (for the refusal message). The kernel releases an `flock`
when its process dies, however it dies, so a lock left by a killed run is stale by
construction: the next run simply takes it (and says whose it was). Locks are re-entrant
within a thread, so `swap` can hold a stage's lock while calling the stage; another thread of
the same process (the studio's request handlers) is refused as another process would be.

Lock names: `model-<name>` (train), `merge`, `faces-<side>` (extract, sort, faceset edits),
`video-<side>` (video extract, denoise), `assemble`. The studio's jobs take the same locks,
so a CLI run and a studio job on one workspace refuse each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.progress import Reporter

LOCKS = ".locks"

_held: dict[Path, tuple[int, int, int]] = {}  # lock path -> (fd, depth, owning thread)
_guard = threading.Lock()


class Busy(FacelabError):
    """Another live process holds the lock."""


def lock_path(root: Path, name: str) -> Path:
    return root / LOCKS / f"{name}.lock"


def describe(info: dict[str, Any]) -> str:
    """`facelab train …` (pid N on HOST since HH:MM:SS): who holds a lock, for messages."""
    cmd = str(info.get("command") or "another facelab run")
    pid, host = info.get("pid", "?"), info.get("host", "?")
    since = info.get("since")
    when = time.strftime(" since %H:%M:%S", time.localtime(since)) if since else ""
    return f"`{cmd}` (pid {pid} on {host}{when})"


def _read(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 65536).decode("utf-8") or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def holder(root: Path, name: str) -> dict[str, Any] | None:
    """Who holds lock `name` now (pid, host, command, since), or None when it is free."""
    path = lock_path(root, name)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(root: Path, name: str, what: str) -> Iterator[dict[str, Any] | None]:
    """Hold lock `name` of the workspace at `root` for the block; `what` names the thing
    protected in the refusal ("model 'k'", "the merge of this workspace").

    Yields the stale holder's record when a lock left by a dead process was taken over
    (the caller may say so), else None. Raises `Busy` in one sentence when a live process
    holds it.
    """
    path = lock_path(root, name).resolve()
    with _guard:
        me = threading.get_ident()
        owned = _held.get(path)
        if owned is not None and owned[2] == me:  # re-entrant within this thread
            _held[path] = (owned[0], owned[1] + 1, me)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield None
        finally:
            with _guard:
                fd, depth, owner = _held[path]
                _held[path] = (fd, depth - 1, owner)
        return

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _read(fd)
        os.close(fd)
        raise Busy(f"{what} is in use by {describe(info)}; wait for it to end or stop "
                   "it, then run this again.") from None
    except BaseException:
        os.close(fd)
        raise
    stale = _read(fd) or None  # a record left behind: its process died holding the lock
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
              "command": _command()}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode("utf-8"))
    with _guard:
        _held[path] = (fd, 1, me)
    try:
        yield stale
    finally:
        with _guard:
            del _held[path]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # an empty file: released cleanly, nothing stale to report
        os.close(fd)  # closing releases the flock


def took_over(stale: dict[str, Any]) -> str:
    """The one line a stage prints when it took over a lock a killed run left behind."""
    cmd = str(stale.get("command") or "another facelab run")
    host = stale.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return (f"Took over the lock left by `{cmd}` (pid {stale.get('pid', '?')}{where}), "
            "which ended without releasing it.")


@contextlib.contextmanager
def stage(root: Path, name: str, what: str, reporter: Reporter) -> Iterator[None]:
    """`hold` for a stage: a lock taken over from a killed run is said in one line when
    the stage has done its work (not when it ends in a user error, whose one line says what
    matters)."""
    with hold(root, name, what) as stale:
        yield
        if stale:
            reporter.warn(took_over(stale))


def _command() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    args = " ".join(sys.argv[1:])
    text = f"{'facelab' if name in ('facelab', '__main__.py') else name} {args}".strip()
    return text if len(text) <= 200 else text[:197] + "..."
