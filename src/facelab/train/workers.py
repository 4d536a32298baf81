"""Sample workers that leave Ctrl-C and SIGTERM to the trainer and die with it.

A terminal closing, `timeout` or `kill -- -PGID` signals the whole process group. A
DataLoader worker killed by that signal makes the trainer's DataLoader raise ("worker …
killed by signal: Terminated") instead of saving and stopping as the trainer's own handler
asks. So workers ignore SIGINT and SIGTERM (the trainer saves, then ends them through the
DataLoader) and, on Linux, get SIGKILL when the trainer dies (kill -9 included).

Workers are spawned: a fresh interpreter that would take the default action (die) until
its `worker_init_fn` runs, seconds later. `starting_workers` therefore blocks both signals
in the starting thread; the mask survives spawn's exec, so a worker starts with them
blocked, and `quiet_worker` then ignores them (dropping any pending) and unblocks. A signal
meant for the trainer meanwhile is only delayed: it is delivered when the mask is restored.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
from collections.abc import Iterator

from facelab.executor import die_with_parent

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def starting_workers() -> Iterator[None]:
    """Around starting worker processes (e.g. `iter(loader)`); see the module docstring."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to fear
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def quiet_worker() -> None:
    """In a worker, first thing: ignore SIGINT/SIGTERM and die with the parent."""
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    parent = mp.parent_process()  # the trainer; None only when run in-process
    if parent is not None:  # Linux: SIGKILL with it (elsewhere the DataLoader's watchdog)
        die_with_parent(parent.pid)
