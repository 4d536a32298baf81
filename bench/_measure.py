"""Measuring helpers the bench scripts share: CPU time with pool workers counted."""

from __future__ import annotations

import resource


def cpu_s() -> float:
    """User + system CPU seconds of this process and its finished children (pool workers)."""
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                 resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def stop_forkserver() -> None:
    """Stop multiprocessing's fork server (if a pool started one) and reap it, so its
    workers' CPU time reaches RUSAGE_CHILDREN."""
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # private: no public API
    if stop is not None:
        stop()
