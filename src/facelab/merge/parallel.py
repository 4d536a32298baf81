"""An ordered process pool: items in, results recorded in input order, a few in flight.

Workers start from a fork server (never a plain fork: OpenCV's, ONNX's and PyTorch's
thread pools do not survive a fork mid-state), each runs `init` once (e.g. loads a model),
then handles items one at a time. Results are recorded in input order, so a caller's
progress and resume state match a sequential run; on an error the pool is cancelled and
the error raised.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

IN_FLIGHT = 3  # items queued per worker: enough to keep it busy, memory stays flat


def run_ordered(items: Sequence[T], fn: Callable[[T], R], record: Callable[[R], None],
                workers: int, init: Callable[..., None], initargs: tuple[Any, ...] = (),
                preload: Sequence[str] = ()) -> None:
    """Run `fn` over `items` in `workers` processes; call `record` on each result in order.

    `fn`, `init` and the items must be picklable (module-level functions, plain data).
    `preload`: modules the fork server imports once (it runs none of their code's thread
    pools), so each worker starts with them imported: importing PyTorch and the merger
    costs about 1.9 CPU s per worker. Only the first pool of a process starts the server.
    """
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if preload and ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(list(preload))
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init, initargs=initargs)
    pending: deque[Future[R]] = deque()
    todo = iter(items)
    try:
        for item in todo:
            pending.append(pool.submit(fn, item))
            if len(pending) >= IN_FLIGHT * workers:
                break
        while pending:
            result = pending.popleft().result()
            record(result)
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
