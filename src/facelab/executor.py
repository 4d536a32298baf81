"""One worker pool for every stage: an ordered map over work items.

Extraction, merging and feature computation hand their work to an `Executor`
(`create_executor`): results come back in input order, so a stage's progress and resume
state match a one-process run; a few items are in flight per worker, so memory stays flat.

The contract a stage keeps (so that another implementation, e.g. a Ray cluster, can run
the same work without touching the stage):

- items and results are plain picklable data (paths, numbers, small records); `fn`, `init`
  and `discard` are module-level functions (or `functools.partial`s of them);
- `init(*initargs)` runs once per worker before its first item (loads the models); an
  error it raises is raised by every item of that worker, so the stage sees it as the
  first item's error;
- the driver records: only results it received in order count as done. A worker may write
  files only to the paths its item names (today: the workspace on a local disk; on a
  cluster: a shared one) and returns what it wrote, so `discard` can delete the work of
  items after a failed one;
- on an error in an item, a KeyboardInterrupt or the caller leaving the loop early, the
  executor cancels what is queued, shuts the workers down, passes every completed but
  unreturned result to `discard`, and re-raises; no worker outlives the call.

`ProcessExecutor` starts workers from a fork server (never a plain fork: OpenCV's, ONNX's
and PyTorch's thread pools do not survive a fork mid-state; spawn where there is none),
with modules `preload`ed once by the server. Its workers ignore SIGINT (the driver decides
how to stop), end when the driver ends (even killed: within a second, see `_worker_start`),
and with `pin` each gets its own core when they fill the cores. `SerialExecutor` runs the
same calls in-process (one worker), so stages have one code path. Cores are counted once,
by `default_workers`: the affinity mask capped by the cgroup CPU quota (a container's
`--cpus`).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from facelab.fsutil import pid_alive

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

T = TypeVar("T")
R = TypeVar("R")

IN_FLIGHT = 3  # items queued per worker: enough to keep it busy, memory stays flat
_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"  # see _start_helpers
CGROUP = Path("/sys/fs/cgroup")

# ── counting cores ──────────────────────────────────────────────────────────────────────


def affinity_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max` ("max 100000", "200000 100000") in cores; None: no quota."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota: str, period: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` in cores; None: no quota (-1)."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _ancestors(root: Path, rel: str) -> list[Path]:
    """The cgroup directory `rel` under `root` and every parent up to `root` (a parent's
    quota limits its children too)."""
    leaf = root / rel.strip("/")
    return [leaf, *[p for p in leaf.parents if p.is_relative_to(root)]]


def cgroup_cpus(root: Path = CGROUP, proc_cgroup: str | None = None) -> float | None:
    """The smallest CPU quota, in cores, on this process's cgroup path (v2 or v1)."""
    text = proc_cgroup if proc_cgroup is not None else _read(Path("/proc/self/cgroup"))
    quotas: list[float] = []
    for line in (text or "").splitlines():
        hid, controllers, rel = [*line.split(":", 2), "", ""][:3]
        if hid == "0" and not controllers:  # v2 unified hierarchy
            for d in _ancestors(root, rel):
                q = parse_cpu_max(_read(d / "cpu.max") or "max")
                quotas += [q] if q else []
        elif "cpu" in controllers.split(","):  # v1: mounted as cpu or cpu,cpuacct
            for mount in {root / controllers, root / "cpu"}:
                for d in _ancestors(mount, rel):
                    quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                    q = parse_cfs(quota, period) if quota and period else None
                    quotas += [q] if q else []
    return min(quotas) if quotas else None


def default_workers(limit: int | None = None) -> int:
    """Cores this process can use: the affinity mask capped by the cgroup quota (rounded
    up: 1.5 CPUs keep two workers busy), at most `limit`, at least 1."""
    n = affinity_cores()
    quota = cgroup_cpus()
    if quota is not None:
        n = min(n, math.ceil(quota))
    if limit is not None:
        n = min(n, limit)
    return max(1, n)


# ── the executors ───────────────────────────────────────────────────────────────────────


class Executor(Protocol):
    """An ordered map over work items; a context manager that releases its workers."""

    workers: int

    def map(self, fn: Callable[[T], R], items: Iterable[T], *,
            discard: Callable[[R], None] | None = None) -> Iterator[R]:
        """`fn(item)` for each item, yielded in input order. On an error (or when the
        caller stops early) results computed ahead go to `discard`, then it re-raises."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


def create_executor(workers: int, *, init: Callable[..., None] | None = None,
                    initargs: tuple[Any, ...] = (), preload: Sequence[str] = (),
                    pin: bool = False) -> Executor:
    """A `SerialExecutor` for one worker, else a `ProcessExecutor` with `workers`."""
    if workers <= 1:
        return SerialExecutor(init, initargs)
    return ProcessExecutor(workers, init=init, initargs=initargs, preload=preload, pin=pin)


class SerialExecutor:
    """The executor's calls in this process, one item at a time: nothing runs ahead, so
    nothing is discarded. `init` runs before the first item (not at all for no items)."""

    workers = 1

    def __init__(self, init: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        self._init, self._initargs, self._started = init, initargs, False

    def map(self, fn: Callable[[T], R], items: Iterable[T], *,
            discard: Callable[[R], None] | None = None) -> Iterator[R]:
        for item in items:
            if not self._started:
                self._started = True
                if self._init is not None:
                    self._init(*self._initargs)
            yield fn(item)

    def close(self) -> None:
        pass

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessExecutor:
    """`workers` processes from a fork server, started at the first item."""

    def __init__(self, workers: int, *, init: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = (), preload: Sequence[str] = (),
                 pin: bool = False, in_flight: int = IN_FLIGHT) -> None:
        """`preload`: modules the fork server imports once, so each worker starts with
        them imported (PyTorch and the merger cost ≈ 1.9 CPU s per worker otherwise);
        only the first pool of a process starts the server, so only its list counts.
        `pin`: when the workers fill the cores, each is pinned to its own (≈ 10-15 %
        faster for extraction: their runtime threads stop competing across cores)."""
        self.workers, self.in_flight = workers, in_flight
        self._init, self._initargs = init, initargs
        self._preload, self._pin = list(preload), pin
        self._pool: ProcessPoolExecutor | None = None
        # the maps not yet finished, by id: close() aborts one its caller left suspended
        self._maps: dict[int, tuple[deque[Future[Any]], Callable[[Any], None] | None]] = {}

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing  # here: counting cores stays a light import
            from concurrent.futures import ProcessPoolExecutor

            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods
                                              else "spawn")
            if self._preload and ctx.get_start_method() == "forkserver":
                ctx.set_forkserver_preload(self._preload)
            _start_helpers(ctx.get_start_method())
            pin = (self._pin and hasattr(os, "sched_setaffinity")
                   and self.workers >= affinity_cores())
            slot = ctx.Value("i", 0) if pin else None
            server = ctx.get_start_method() == "forkserver"
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_worker_start,
                initargs=(os.getpid(), slot, self._init, self._initargs, server))
        return self._pool

    def map(self, fn: Callable[[T], R], items: Iterable[T], *,
            discard: Callable[[R], None] | None = None) -> Iterator[R]:
        pool = self._start()
        pending: deque[Future[R]] = deque()
        self._maps[id(pending)] = (pending, discard)
        todo = iter(items)
        finished = False
        try:
            for item in todo:
                pending.append(pool.submit(_call, fn, item))
                if len(pending) >= self.in_flight * self.workers:
                    break
            while pending:
                result = pending[0].result()
                pending.popleft()
                nxt = next(todo, _END)
                if nxt is not _END:  # queued before the caller records: workers stay busy
                    pending.append(pool.submit(_call, fn, nxt))
                yield result
            finished = True
        finally:
            self._maps.pop(id(pending), None)  # absent: close() aborted it already
            if not finished:
                self._abort(pending, discard)

    def _abort(self, pending: deque[Future[Any]], discard: Callable[[Any], None] | None
               ) -> None:
        """Cancel what is queued, wait for what runs, discard what completed."""
        for future in pending:
            future.cancel()
        self.close()
        if discard is not None:
            for future in pending:
                if future.done() and not future.cancelled() and future.exception() is None:
                    discard(future.result())
        pending.clear()

    def close(self) -> None:
        while self._maps:
            self._abort(*self._maps.popitem()[1])
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_helpers(method: str) -> None:
    """Start multiprocessing's resource tracker (and fork server) without its leak report:
    after a killed driver it removes the pool's semaphores and warned about each on the
    user's terminal, after the shell's "Killed". Helpers take `sys.warnoptions` at start."""
    if os.name != "posix":  # no tracker process there
        return
    from multiprocessing import forkserver, resource_tracker

    sys.warnoptions.append(_QUIET_TRACKER)
    try:
        resource_tracker.ensure_running()
        if method == "forkserver":
            forkserver.ensure_running()
    finally:
        sys.warnoptions.remove(_QUIET_TRACKER)


_END = object()
_INIT_ERROR: list[BaseException] = []


def _worker_start(driver: int, slot: Any, init: Callable[..., None] | None,
                  initargs: tuple[Any, ...], server: bool = False) -> None:
    """Every worker's initializer: die with the driver, leave Ctrl-C to the driver, take
    a core, then the stage's `init` (its error is kept and raised by each item: an
    initializer's error would break the pool and lose the message).

    Dying with the driver, first by the kernel: a fork server's worker lets go of the
    server's liveness pipe (each inherited its write end, so the server waited for its
    workers while they waited for work: after a `kill -9` all lived on) and asks for
    SIGKILL when the server ends, which is as soon as the driver does (the pipe's last
    writer). So a killed driver takes its workers at once, even one in native code holding
    the GIL, and none writes after it. The watcher thread (`_exit_with`) covers the rest:
    other systems, no fork server, or a server gone before the worker asked."""
    if server:
        _leave_server_pipe()
        die_with_parent()
    _exit_with(driver)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if slot is not None:
        with slot.get_lock():
            i, slot.value = slot.value, slot.value + 1
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[i % len(cpus)]})
    if init is not None:
        try:
            init(*initargs)
        except Exception as e:
            _INIT_ERROR.append(e)


def _call(fn: Callable[[T], R], item: T) -> R:
    if _INIT_ERROR:
        raise _INIT_ERROR[0]
    return fn(item)


def _leave_server_pipe() -> None:
    """Close this worker's copy of the fork server's liveness pipe (all it is for is
    starting processes through the server, which a worker never does)."""
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver  # type: ignore[attr-defined]
        fd = server._forkserver_alive_fd
    except AttributeError:  # another Python's internals: the watcher still ends us
        return
    if isinstance(fd, int):
        server._forkserver_alive_fd = None
        with contextlib.suppress(OSError):
            os.close(fd)


def die_with_parent(parent: int | None = None) -> None:
    """Linux: SIGKILL this process when its parent (the thread that forked it: the fork
    server's only one) ends; exit at once if `parent` (default: the parent now) is already
    gone. Not for a worker spawned by the driver itself: its forking thread may be any
    thread of the driver, e.g. a studio job's that ends before the pool."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid() if parent is None else parent
    try:
        if ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def _exit_with(driver: int) -> None:
    """End this worker when the driver ends: a thread waits on the driver's pidfd, or
    polls it where there is none (it cannot run while native code holds the GIL)."""
    if os.name != "posix":
        return

    def watch() -> None:
        try:
            fd = os.pidfd_open(driver)  # Linux 5.3+: readable once the driver has exited
        except ProcessLookupError:
            os._exit(1)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while pid_alive(driver):
                time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()

