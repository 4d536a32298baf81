"""Loading MediaPipe quietly: its C++ side (glog, absl, TF Lite) writes to file descriptor 2
when a graph starts, which Python's stream redirection does not catch, and would break the
rule that a user error is one line on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment (model load and warm-up only)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_env() -> None:
    """Turn MediaPipe's logging down before it is imported."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
