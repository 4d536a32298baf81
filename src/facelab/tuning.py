"""Worker processes × threads per worker, chosen by measuring this machine once.

Which split of the cores is fastest depends on the work and the machine, and no fixed
rule holds: on a 2-core EPYC, merging ran 21.7 frames/s as 1 process × 2 torch threads
but 14.3 as 2 processes × 1 thread, while face extraction gained from 2 pinned
processes. So, as `device` does for the precision, the first long enough job measures
it: `run_measured` runs its first items under each candidate `Layout` in turn (a slice
each, timed after the warm-up: pool start, model load, first item per worker), keeps the
best for the rest of the job and caches the measured rates and start-up costs in
$XDG_CACHE_HOME/facelab/layout.json, per kind of work, caller's key (model family,
resolution, device …) and machine (CPU model, usable cores). Later jobs read the cache.
A layout's start-up (pool start, imports, model load in each worker) counts against its
rate for the items a job has: a short merge runs in-process where a pool would only win on
a long one (75 frames of meshswap: 1 × 2 threads 30 frames/s, 2 × 1 18 frames/s).

The trials are the job's own work: every item runs exactly once and results come back in
input order, as from `Executor.map`. Too short a job to measure takes a default without
caching; a given layout (`--workers N`) is used as is. The measurement is taken under the
machine's load at the time; delete the cache file to measure again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from facelab.executor import IN_FLIGHT, Executor, default_workers
from facelab.fsutil import read_json, write_json
from facelab.progress import Reporter

T = TypeVar("T")
R = TypeVar("R")

TRIAL_S = 3.0  # timed seconds per candidate, after its warm-up
MIN_MEASURED = 4  # timed results per candidate at least
MIN_POOL_ITEMS = 8  # below this a pool's start costs more than it gains: in-process
MAX_CANDIDATES = 5


@dataclass(frozen=True, order=True)
class Layout:
    """How a stage uses the cores."""

    workers: int  # processes (1: in-process, a SerialExecutor)
    threads: int  # torch / ONNX / OpenCV threads in each

    def __str__(self) -> str:
        return (f"{self.workers} process{'es' if self.workers > 1 else ''} × "
                f"{self.threads} thread{'s' if self.threads > 1 else ''}")

    @property
    def tag(self) -> str:
        """'2x1': the cache's name for it."""
        return f"{self.workers}x{self.threads}"

    @classmethod
    def parse(cls, tag: str) -> Layout:
        """The inverse of `tag`; ValueError for anything else."""
        w, _, t = tag.partition("x")
        layout = cls(int(w), int(t))
        if layout.workers < 1 or layout.threads < 1:
            raise ValueError(tag)
        return layout


@dataclass(frozen=True)
class Choice:
    """The layout a run used and why: 'given', 'cached', 'measured' (now), 'default'
    (too few items to measure, nothing cached) or 'only' (a single candidate)."""

    layout: Layout
    source: str
    rates: Mapping[Layout, float] = field(default_factory=dict)  # items/s, measured
    startup: Mapping[Layout, float] = field(default_factory=dict)  # s before the first item


def quickest(n: int, rates: Mapping[Layout, float], startup: Mapping[Layout, float],
             running: Layout | None = None) -> Layout:
    """The layout that finishes `n` items first: its start-up (none for `running`, a pool
    already started) plus n at its rate; fewer processes on a tie."""
    def cost(lay: Layout) -> tuple[float, int]:
        start = 0.0 if lay == running else startup.get(lay, 0.0)
        return start + n / rates[lay], lay.workers
    return min(rates, key=cost)


def layout_for(workers: int, cores: int | None = None) -> Layout:
    """The layout of a fixed worker count (`--workers N`): the cores shared among them."""
    cores = cores or default_workers()
    return Layout(max(1, workers), max(1, cores // max(1, workers)))


def candidates(cores: int, max_workers: int | None = None) -> list[Layout]:
    """The splits worth timing: every worker count that divides the cores (each worker
    then gets an equal share of threads), from 1 process × all threads to one process per
    core, at most `max_workers` processes and `MAX_CANDIDATES` layouts (evenly spread)."""
    cores = max(1, cores)
    top = max(1, min(cores, max_workers or cores))
    counts = sorted({w for w in range(1, top + 1) if cores % w == 0} | {top})
    if len(counts) > MAX_CANDIDATES:
        last = len(counts) - 1
        counts = sorted({counts[round(i * last / (MAX_CANDIDATES - 1))]
                         for i in range(MAX_CANDIDATES)})
    return [Layout(w, max(1, cores // w)) for w in counts]


# ── the cache ───────────────────────────────────────────────────────────────────────────


class _Default:
    """Marks 'the default cache file' (None means no cache)."""


DEFAULT_CACHE = _Default()


def default_cache_path() -> Path:
    """$XDG_CACHE_HOME/facelab/layout.json, or ~/.cache/facelab/layout.json."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facelab" / "layout.json"


def cpu_model() -> str:
    """The CPU's model name (as `device.cpu_model`, without importing torch: extraction's
    driver never loads it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(cores: int | None = None) -> str:
    """What makes a measurement another machine's: CPU model and usable cores."""
    return f"{cpu_model()} | {cores or default_workers()} cores"


def cache_key(kind: str, key: Mapping[str, object], cores: int | None = None) -> str:
    return " | ".join((kind, machine(cores),
                       json.dumps(dict(key), sort_keys=True, default=str)))


def _path(cache: Path | _Default | None) -> Path | None:
    return default_cache_path() if isinstance(cache, _Default) else cache


def cached(kind: str, key: Mapping[str, object], *, cores: int | None = None,
           cache: Path | _Default | None = DEFAULT_CACHE) -> Choice | None:
    """The cached choice for this work on this machine, with the rates it was chosen by
    (for benches); None when absent, unreadable or damaged."""
    path = _path(cache)
    if path is None:
        return None
    try:
        entry = read_json(path)[cache_key(kind, key, cores)]
        rates = {Layout.parse(t): float(r) for t, r in entry["rates"].items()}
        startup = {Layout.parse(t): float(r) for t, r in entry.get("startup", {}).items()}
        return Choice(Layout.parse(entry["layout"]), "cached", rates, startup)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def cached_layout(kind: str, key: Mapping[str, object], *, cores: int | None = None,
                  cache: Path | _Default | None = DEFAULT_CACHE) -> Layout | None:
    """The cached layout for this work on this machine, or None."""
    choice = cached(kind, key, cores=cores, cache=cache)
    return choice.layout if choice else None


def _store(path: Path, key: str, winner: Layout, rates: Mapping[Layout, float],
           startup: Mapping[Layout, float]) -> None:
    try:
        doc = read_json(path)
        if not isinstance(doc, dict):
            doc = {}
    except (OSError, ValueError):
        doc = {}  # damaged: rewritten whole
    doc[key] = {"layout": winner.tag,
                "rates": {lay.tag: round(r, 4) for lay, r in sorted(rates.items())},
                "startup": {lay.tag: round(s, 3) for lay, s in sorted(startup.items())},
                "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.suppress(OSError):  # a read-only home only costs a re-measure
        write_json(path, doc)


# ── running ─────────────────────────────────────────────────────────────────────────────


def run_measured(items: Sequence[T], fn: Callable[[T], R],
                 start: Callable[[Layout], Executor], kind: str,
                 key: Mapping[str, object], *, layout: Layout | None = None,
                 cache: Path | _Default | None = DEFAULT_CACHE, trial_s: float = TRIAL_S,
                 discard: Callable[[R], None] | None = None, reporter: Reporter | None = None,
                 default: Layout | None = None, max_workers: int | None = None,
                 cores: int | None = None, on_choice: Callable[[Choice], None] | None = None,
                 ) -> Iterator[R]:
    """`fn(item)` for every item, in input order, run under the fastest layout.

    `start(layout)` makes the executor for a layout (its init gets `layout.threads`); this
    closes it. The layout: `layout` if given; in-process with every core for fewer than
    `MIN_POOL_ITEMS` items; else the cached one for (kind, key, machine); else, when the
    job is long enough, measured on its first items (each candidate of `candidates(cores,
    max_workers)` for `trial_s` after its warm-up, then cached), else `default` (1 process
    × all cores unless given). `on_choice` hears the choice once made; `discard` and the
    abort on an error, Ctrl-C or an early stop are `Executor.map`'s."""
    cores = cores or default_workers()
    default = default or Layout(1, cores)
    cands = candidates(cores, max_workers)
    path = _path(cache)
    choice: Choice | None = None
    caps: dict[Layout, int] | None = None
    if layout is not None:
        choice = Choice(Layout(min(layout.workers, max(1, len(items))), layout.threads),
                        "given")
    elif len(items) < MIN_POOL_ITEMS:
        choice = Choice(Layout(1, cores), "default")
    elif len(cands) == 1:
        choice = Choice(cands[0], "only")
    else:
        hit = cached(kind, key, cores=cores, cache=path)
        caps = _trial_caps(len(items), cands)
        if hit is not None and hit.layout in cands:
            usable = {lay: r for lay, r in hit.rates.items() if lay in cands and r > 0}
            best = quickest(len(items), usable, hit.startup) if usable else hit.layout
            choice = Choice(best, "cached", hit.rates, hit.startup)
        elif caps is None:
            choice = Choice(default, "default")
    if choice is not None:
        if on_choice is not None:
            on_choice(choice)
        with contextlib.closing(start(choice.layout)) as ex:
            yield from ex.map(fn, items, discard=discard)
        return
    order = [c for c in cands if c != default] + [c for c in cands if c == default]
    yield from _measure_and_run(items, fn, start, order, caps or {}, trial_s, discard,
                                _Done(kind, cache_key(kind, key, cores), path, reporter,
                                      on_choice, default))


@dataclass
class _Done:
    """What to do with the measurement: cache it, say it, hand it to the caller."""

    kind: str
    key: str
    path: Path | None
    reporter: Reporter | None
    on_choice: Callable[[Choice], None] | None
    default: Layout

    def __call__(self, rates: dict[Layout, float], tried: list[Layout],
                 startup: dict[Layout, float], remaining: int) -> Layout:
        """The layout for the `remaining` items (the last trial's pool is still running)."""
        if not rates:
            choice = Choice(self.default, "default")
        else:
            winner = max(rates, key=lambda lay: (rates[lay], -lay.workers))
            rest = quickest(remaining, rates, startup, running=tried[-1])
            choice = Choice(rest, "measured", dict(rates), dict(startup))
            keep = False
            if self.path is not None and len(rates) == len(tried):  # all measured: cache
                _store(self.path, self.key, winner, rates, startup)
                keep = True
            if self.reporter is not None:
                others = ", ".join(f"{rates[winner] / r:.2f}× as fast as {lay}"
                                   for lay, r in rates.items() if lay != winner)
                sooner = "" if rest == winner else \
                    f"; {rest} ends the last {remaining} items sooner (no start-up)"
                self.reporter.info(f"{self.kind}: {winner} measured fastest on this machine"
                                   f"{f' ({others})' if others else ''}{sooner}"
                                   f"{'; kept for the next runs' if keep else ''}.")
        if self.on_choice is not None:
            self.on_choice(choice)
        return choice.layout


def _trial_caps(n: int, cands: list[Layout]) -> dict[Layout, int] | None:
    """Items each candidate may take at most: together at most half the job, each enough
    for its warm-up (first item per worker), `MIN_MEASURED` timed results and what its
    pool holds in flight. None: the job is too short to measure."""
    need = {c: c.workers * (1 + IN_FLIGHT) + MIN_MEASURED for c in cands}
    total = sum(need.values())
    if n < 2 * total:
        return None
    return {c: max(need[c], need[c] * (n // 2) // total) for c in cands}


_END = object()


def _timed(fn: Callable[[T], R], item: T) -> tuple[R, int, float]:
    """`fn(item)` with the worker that ran it and when it finished (the monotonic clock is
    the machine's, so a pool's times compare with the driver's)."""
    result = fn(item)
    return result, os.getpid(), time.monotonic()


def _discard_timed(discard: Callable[[R], None], timed: tuple[R, int, float]) -> None:
    discard(timed[0])


class _Trial:
    """One candidate's slice of the items, fed to its executor until `trial_s` of timed
    work (or its cap); what its pool holds in flight then still comes back, in order.

    Timed by when each item finished, not when its result came back (results wait for
    the ones before them: a pool's first results come in a burst once its slowest worker
    has loaded): from the moment every worker had finished its first item to the moment
    feeding stopped, while every worker still had work queued."""

    def __init__(self, todo: Iterator[T], cap: int, workers: int, trial_s: float,
                 started: float) -> None:
        self.todo, self.cap, self.workers, self.trial_s = todo, cap, workers, trial_s
        self.started = started  # when its executor was asked to start
        self.fed = 0
        self.first: dict[int, float] = {}  # each worker's first item done
        self.finished: list[float] = []
        self.warm: float | None = None  # when the warm-up ended
        self.timed = 0  # items finished after it
        self.enough = False
        self.stopped: float | None = None  # when feeding stopped

    def feed(self) -> Iterator[T]:
        while self.fed < self.cap and not self.enough:
            item = next(self.todo, _END)
            if item is _END:
                break
            self.fed += 1
            yield item  # type: ignore[misc]
        self.stopped = time.monotonic()

    def arrived(self, worker: int, finished: float) -> None:
        """A result, in order (a worker's own results come in the order it finished them,
        so its first result is its first item)."""
        self.finished.append(finished)
        self.first.setdefault(worker, finished)
        if self.warm is None:
            # every worker done with one item; or a worker that long in coming counts out
            if (len(self.first) >= self.workers
                    or finished - min(self.first.values()) >= self.trial_s):
                self.warm = max(self.first.values())
                self.timed = sum(1 for t in self.finished if t > self.warm)
        elif finished > self.warm:
            self.timed += 1
        if self.warm is not None and not self.enough:
            self.enough = (self.timed >= MIN_MEASURED
                           and time.monotonic() - self.warm >= self.trial_s)

    def rate(self) -> float | None:
        """Items/s after the warm-up, until feeding stopped; None when nothing was timed."""
        if self.warm is None:
            return None
        end = self.stopped if self.stopped is not None else max(self.finished)
        timed = sum(1 for t in self.finished if self.warm < t <= end)
        return timed / (end - self.warm) if timed and end > self.warm else None

    def startup(self, rate: float) -> float:
        """Seconds from the executor's start to its first item, less that item's own work
        at the measured rate: the pool's start, imports and each worker's model load."""
        first = min(self.first.values())
        return max(0.0, first - self.started - self.workers / rate)


def _measure_and_run(items: Sequence[T], fn: Callable[[T], R],
                     start: Callable[[Layout], Executor], order: list[Layout],
                     caps: dict[Layout, int], trial_s: float,
                     discard: Callable[[R], None] | None, done: _Done) -> Iterator[R]:
    todo = iter(items)
    used = 0
    rates: dict[Layout, float] = {}
    startup: dict[Layout, float] = {}
    ex: Executor | None = None
    try:
        for lay in order:
            if ex is not None:
                ex.close()  # before the next starts: trials never share the cores
                ex = None
            started = time.monotonic()
            ex = start(lay)
            trial = _Trial(todo, caps[lay], lay.workers, trial_s, started)
            timed = ex.map(functools.partial(_timed, fn), trial.feed(),
                           discard=functools.partial(_discard_timed, discard) if discard
                           else None)
            with contextlib.closing(timed) as results:
                for result, worker, finished in results:
                    trial.arrived(worker, finished)
                    yield result
            used += trial.fed
            rate = trial.rate()
            if rate is not None:
                rates[lay] = rate
                startup[lay] = trial.startup(rate)
        winner = done(rates, order, startup, len(items) - used)
        if used >= len(items):
            return
        if ex is None or winner != order[-1]:  # the last trial's pool is kept when it won
            if ex is not None:
                ex.close()
                ex = None
            ex = start(winner)
        with contextlib.closing(ex.map(fn, todo, discard=discard)) as results:
            yield from results
    finally:
        if ex is not None:
            ex.close()
