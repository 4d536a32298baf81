"""The executor contract (`facelab/executor.py`) on a Ray cluster, with no shared disk.

`RayExecutor` keeps one Ray actor per CPU of the cluster (or `workers`). Each actor gets
the stage's `init` arguments and the input files it needs through Ray's object store (the
model once per actor; frame files, or the piece of the dst video that holds the frames,
with the items that read them), runs the stage's
own code in a staging folder of its machine (`relocate.py` moves the paths), and sends
back the result with the bytes of every file the item wrote. The driver writes those files
where a local run would, atomically, when it takes the result in input order: so the
workspace, its manifests and resume work exactly as on one machine, and a result computed
ahead and then dropped (an error, Ctrl-C) leaves nothing on disk.

A worker process that dies (killed, out of memory, its machine gone) costs only the items
it held: Ray restarts the actor (`max_restarts`), which loads its models again, and runs
them anew (`max_task_retries`). An error raised by the stage's code is not retried: it is
re-raised in the driver as itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from facelab.cluster.relocate import Move, relocate
from facelab.errors import FacelabError
from facelab.faces.mediapipe_runtime import quiet_stderr  # fd 2 to /dev/null: any C++ logs
from facelab.fsutil import atomic_path

T = TypeVar("T")
R = TypeVar("R")

IN_FLIGHT = 3  # items queued per actor, as the local pool
RETRIES = 3  # restarts of a dead actor per item before the run fails

LOOPBACK = ("127.0.0.1", "localhost", "")
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps to 127.0.0.1

Files = list[tuple[str, bytes]]  # (path on the driver, bytes)


def connect(address: str) -> dict[str, float]:
    """Join the cluster at `address` ("auto": start a Ray instance on this machine, on
    127.0.0.1); the cluster's resources. Bad addresses are one FacelabError line."""
    host = address.removeprefix("ray://").rpartition(":")[0]
    if address == "auto" or host in LOOPBACK:
        # before Ray is imported: Ray swaps 127.0.0.1 for this machine's network address
        # (and listens there) unless told the cluster stays on this machine
        os.environ.setdefault(SINGLE_MACHINE, "0")
    try:
        import ray
    except ImportError:
        raise FacelabError("--cluster needs Ray: pip install 'ray==2.60.0'.") from None
    if not ray.is_initialized():
        if address != "auto":
            _reachable(address)
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": "ERROR"}
        try:
            with quiet_stderr():  # Ray's C++ core logs past Python's logging
                ray.init(address="local" if address == "auto" else address, **kw)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FacelabError(f"Could not join the Ray cluster at {address}: {first}") \
                from None
    return dict(ray.cluster_resources())


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A clear error now, where Ray would retry a wrong address for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise FacelabError(f"The cluster address {address!r} is not HOST:PORT (or 'auto').")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout).close()
    except OSError as e:
        raise FacelabError(f"Could not join the Ray cluster at {address}: nothing answers "
                           f"there ({e.strerror or e}).") from None


def cluster_cpus(address: str) -> int:
    return max(1, int(connect(address).get("CPU", 1)))


class _Worker:
    """One Ray actor: the stage's worker process on some machine of the cluster."""

    def __init__(self, init: Callable[..., None] | None, initargs: tuple[Any, ...],
                 root: str, inputs: list[tuple[str, Any]], folders: list[str]) -> None:
        import ray

        self.home = Path(tempfile.mkdtemp(prefix="facelab-ray-"))
        self.out = self.home / "out"
        self.out.mkdir()
        for folder in folders:  # the workspace's folders, which the stage expects to exist
            (self.out / folder).mkdir(parents=True, exist_ok=True)
        moves: list[Move] = []
        for k, (path, ref) in enumerate(inputs):  # the shared inputs: written once here,
            p = Path(path)  # those of the workspace where the relocated workspace has them
            if Path(root) in p.parents:
                local = self.out / p.relative_to(root)
            else:
                local = self.home / "in" / str(k) / p.name
                moves.append((p, local))
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(ray.get(ref))
        self.to_local = [*moves, (Path(root), self.out)]
        self.to_driver = [(b, a) for a, b in self.to_local]
        self.init, self.initargs = init, initargs
        self.ready: BaseException | bool = False

    def pid(self) -> int:
        return os.getpid()

    def call(self, fn: Callable[[Any], Any], item: Any, files: Files) -> tuple[Any, Files]:
        """fn(item) here; (its result as the driver names it, the files it wrote)."""
        if self.ready is False:
            try:
                if self.init is not None:
                    self.init(*relocate(self.initargs, self.to_local))
                self.ready = True
            except BaseException as e:  # raised by every item of this worker
                self.ready = e
        if isinstance(self.ready, BaseException):
            raise self.ready
        given = []
        for path, data in files:  # the item's own inputs (frame files)
            local = Path(relocate(Path(path), self.to_local))
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
            given.append(local)
        before = set(self.out.rglob("*"))
        try:
            result = fn(relocate(item, self.to_local))
        finally:
            for local in given:
                local.unlink(missing_ok=True)
        written: Files = []
        for local in sorted(set(self.out.rglob("*")) - before):
            if local.is_file() and not local.is_symlink():
                written.append((str(relocate(local, self.to_driver)), local.read_bytes()))
                local.unlink()
        return relocate(result, self.to_driver), written

    def close(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


class RayExecutor:
    """The `Executor` protocol over Ray actors (see the module's docstring). `root`: the
    folder whose files the items write (the workspace); `inputs`: files every worker reads
    (the model); `item_inputs(item)`: files one item reads (frame images, as paths on
    this disk, or pieces of a video as (path, bytes); its `close`, if any, is called at
    the end)."""

    def __init__(self, address: str, root: Path, *, workers: int | None = None,
                 init: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
                 inputs: Sequence[Path] = (),
                 item_inputs: Callable[[Any], Sequence[Path | tuple[Path, bytes]]]
                 | None = None,
                 in_flight: int = IN_FLIGHT) -> None:
        self.address, self.root = address, Path(root)
        self.workers = workers or cluster_cpus(address)
        self.init, self.initargs = init, initargs
        self.inputs, self.item_inputs, self.in_flight = list(inputs), item_inputs, in_flight
        self._actors: list[Any] = []
        self._refs: list[tuple[str, Any]] = []

    def _start(self) -> list[Any]:
        if not self._actors:
            import ray

            connect(self.address)
            # held while the actors live: a restarted actor reads its inputs again
            self._refs = [(str(p), ray.put(Path(p).read_bytes())) for p in self.inputs]
            actor = ray.remote(num_cpus=1, max_restarts=RETRIES,
                               max_task_retries=RETRIES)(_Worker)
            folders = _folders(self.root)
            with quiet_stderr():  # Ray's note on restartable actors is for its developers
                self._actors = [actor.remote(self.init, self.initargs, str(self.root),
                                             self._refs, folders)
                                for _ in range(self.workers)]
        return self._actors

    def pids(self) -> list[int]:
        """The actors' process ids (for tests that kill one)."""
        import ray

        return ray.get([a.pid.remote() for a in self._start()])

    def map(self, fn: Callable[[T], R], items: Iterable[T], *,
            discard: Callable[[R], None] | None = None) -> Iterator[R]:
        """In input order; an item's files are written when its result is taken, so what
        was computed ahead and dropped never reaches the disk (`discard` has nothing to
        undo)."""
        import ray

        actors = self._start()
        pending: deque[Any] = deque()
        todo = iter(items)
        turn = 0

        def submit(item: T) -> None:
            nonlocal turn
            files = [(str(f[0]), f[1]) if isinstance(f, tuple) else (str(f), f.read_bytes())
                     for f in (self.item_inputs(item) if self.item_inputs else ())]
            pending.append(actors[turn % len(actors)].call.remote(fn, item, files))
            turn += 1

        finished = False
        try:
            for item in todo:
                submit(item)
                if len(pending) >= self.in_flight * len(actors):
                    break
            while pending:
                result, written = _get(pending.popleft())
                nxt = next(todo, _END)
                if nxt is not _END:
                    submit(nxt)
                for path, data in written:
                    _put(Path(path), data)
                yield result
            finished = True
        finally:
            if not finished:
                for ref in pending:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=False)
                pending.clear()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            getattr(self.item_inputs, "close", lambda: None)()
        if self._actors:
            import ray

            with contextlib.suppress(Exception):
                ray.get([a.close.remote() for a in self._actors], timeout=30)
            for a in self._actors:
                with contextlib.suppress(Exception):
                    ray.kill(a)
            self._actors, self._refs = [], []

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_END = object()


def _folders(root: Path, depth: int = 3) -> list[str]:
    """The folders under `root` to `depth` levels, relative (a stage's own folders: the
    workers' staging copy has them too)."""
    out, level = [], [root]
    for _ in range(depth):
        level = [d for parent in level for d in parent.iterdir()
                 if d.is_dir() and not d.is_symlink()]
        out += [str(d.relative_to(root)) for d in level]
    return out


def _get(ref: Any) -> Any:
    """ray.get, with the stage's own exception raised as itself."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if getattr(e, "cause", None) is not None else e
        raise cause from None
    except ray.exceptions.RayActorError as e:
        raise FacelabError(f"A cluster worker died {RETRIES + 1} times on the same work: "
                           f"{str(e).strip().splitlines()[0]}") from None


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
