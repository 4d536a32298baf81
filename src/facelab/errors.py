"""User-facing errors.

Anything the user can fix (a missing file, a bad option, a corrupt video) raises
`FacelabError`; the CLI prints its message as one line on stderr and exits non-zero.
Every other exception is a bug and keeps its traceback, except the operating system's
answers about the disk itself (full, over quota, read-only, no permission, failing):
`os_error_message` turns those into one line, wherever they were raised, a worker
process included (the executor re-raises a worker's exception in the driver).
"""

from __future__ import annotations

import errno
from typing import Any

from facelab.fsutil import PART_NAME


class FacelabError(Exception):
    """An error caused by the user's input; its message is a complete sentence."""

    exit_code = 1

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuild without calling `__init__`: a subclass whose `__init__` takes other
        arguments than its message (JpegError) must still cross from a worker process to
        the driver intact, or the pool breaks instead of showing the message."""
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[FacelabError], args: tuple[Any, ...], state: dict[str, Any]
             ) -> FacelabError:
    e = cls.__new__(cls)
    e.args = args
    e.__dict__.update(state)
    return e


class PartialResult(FacelabError):
    """Work stopped part-way on bad input; what was readable was kept and is said so."""

    exit_code = 3


KEPT = "the work done so far is kept"
_ACCESS = "give this user access to it (or use another workspace), then run this again"
# errno -> (the system's words, how they relate to the file, what to do): only what the
# user can fix about the disk itself
DISK_ERRORS: dict[int, tuple[str, str, str]] = {
    errno.ENOSPC: ("No space left on device", "while writing",
                   f"free some space and run this again; {KEPT}"),
    errno.EDQUOT: ("Disk quota exceeded", "while writing",
                   f"free some space (or raise the quota) and run this again; {KEPT}"),
    errno.EFBIG: ("File too large", "while writing",
                  "the file system or a size limit (ulimit -f) refuses it: lift the limit or "
                  f"use another disk, then run this again; {KEPT}"),
    errno.EROFS: ("Read-only file system", "at",
                  "remount it writable or use a workspace on another disk, then run this "
                  "again"),
    errno.EACCES: ("Permission denied", "on", _ACCESS),
    errno.EPERM: ("Operation not permitted", "on", _ACCESS),
    errno.EIO: ("Input/output error", "on",
                f"the disk or its connection failed: check it, then run this again; {KEPT}"),
}


def os_error_message(e: BaseException) -> str | None:
    """One sentence for an OSError about the disk itself (ENOSPC, EDQUOT, EFBIG, EROFS,
    EACCES, EPERM, EIO), naming the file; None for any other error (a bug keeps its
    traceback). A temporary file's name (`fsutil.temp_sibling`) is shown as the output it
    was to become, the name the user knows."""
    if not isinstance(e, OSError) or e.errno not in DISK_ERRORS:
        return None
    reason, relation, advice = DISK_ERRORS[e.errno]
    name = e.filename
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    if not isinstance(name, str) or not name:
        return f"{reason}: {advice}."
    head, sep, base = name.rpartition("/")
    m = PART_NAME.match(base)
    if m:
        base = m["stem"] + (m["ext"] or "")
    return f"{reason} {relation} {head}{sep}{base}: {advice}."
