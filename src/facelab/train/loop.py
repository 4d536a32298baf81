"""The run loop every model family shares: step, log, preview, autosave, back up, stop.

A family (SAE in trainer.py, meshswap in meshswap/train.py) gives a `Family`: one
iteration's step, its save and its preview. `Loop` decides when each happens, so a run
means the same in every family: a log line and history point every `log_every` iterations,
a preview every `preview_every`, a save every `autosave_minutes` and at every backup
iteration, and on the way out (target reached or `stop` set) a last save and preview of
what is not saved yet; an error leaves the last save as it was. Resuming from the save is
the family's business; the loop only continues its iteration count and history.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from facelab.device import is_out_of_memory
from facelab.errors import FacelabError
from facelab.progress import Reporter
from facelab.train.run_options import TrainOptions

HISTORY_LIMIT = 2000  # logged loss points kept in the save (for the plot and `model info`)

LogFn = Callable[[int, float, float, float], None]  # iteration, ms/iter, src loss, dst loss


@dataclass
class TrainReport:
    """What a run did; `losses` holds (src, dst) of every iteration of this run (a family
    with one loss, like meshswap's refiner, puts it in both)."""

    model_name: str
    options: Any  # the family's options: ModelOptions (sae), MeshSwapOptions (meshswap)
    start_iteration: int
    iteration: int
    resumed: bool
    stopped: bool  # by `stop`, not by reaching the target
    device: str
    ms_per_iter: float
    losses: list[tuple[float, float]] = field(default_factory=list)
    preview: Path | None = None
    precision: str = "fp32"
    family: str = "sae"


class Family(Protocol):
    """One family's part of a run."""

    def step(self, iteration: int) -> tuple[float, float]:
        """Step from `iteration` (the count done) to the next; its (src, dst) losses."""
        ...

    def save(self, iteration: int, history: list[list[float]], backup: bool) -> None:
        """Save the model as it is after `iteration` (and copy it to a backup)."""
        ...

    def preview(self, iteration: int, history: list[list[float]]) -> None:
        """Write the preview image of the model as it is now."""
        ...

    def close(self) -> None:
        """Release what stepping holds (sample workers); called once, however it ended."""
        ...


@dataclass
class RunResult:
    """What `Loop.run` did, for the family's TrainReport."""

    start: int
    iteration: int
    stopped: bool
    ms_per_iter: float
    losses: list[tuple[float, float]]
    previewed: bool


def check_intervals(opts: TrainOptions) -> None:
    """The run's intervals (also checked by TrainOptions; a library caller may mutate it)."""
    if opts.log_every < 1 or opts.preview_every < 0 or opts.backup_every < 0:
        raise FacelabError("log, preview and backup intervals must not be negative.")


def eta(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def out_of_memory_guard(run: Callable[[], TrainReport],
                        message: Callable[[], str]) -> TrainReport:
    """`run()`, with running out of memory anywhere in it turned into one FacelabError
    line (`message()`: what to reduce); the last save is untouched."""
    try:
        return run()
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise FacelabError(message()) from None


class Loop:
    """The steps of one run and what they leave: log lines, history, previews, saves.

    `labels` name the losses in the log: ("src", "dst"), or one name for a family whose
    two losses are one (its history rows still hold [iteration, loss, loss], so the plot
    and `model info` read every family's saves alike)."""

    def __init__(self, family: Family, opts: TrainOptions, reporter: Reporter,
                 on_log: LogFn | None, *, start: int, history: list[list[float]],
                 target: int, labels: tuple[str, ...] = ("src", "dst")) -> None:
        self.family = family
        self.opts = opts
        self.reporter = reporter
        self.on_log = on_log
        self.start = self.it = start
        self.history: list[list[float]] = list(history)
        self.target = target
        self.labels = labels
        self.losses: list[tuple[float, float]] = []
        self.saved_at = -1  # the iteration of this run's last save
        self.previewed = False

    def save(self, backup: bool) -> None:
        self.saved_at = self.it
        self.family.save(self.it, self.history[-HISTORY_LIMIT:], backup)

    def preview(self) -> None:
        self.family.preview(self.it, self.history)
        self.previewed = True

    def run(self, stop: threading.Event | None) -> RunResult:
        """Step until the target or `stop`, then save and preview what is not yet."""
        opts = self.opts
        t_run = time.monotonic()
        try:
            stopped = self._steps(stop)
        finally:
            self.family.close()
        elapsed = time.monotonic() - t_run
        it = self.it
        if it > self.start and self.saved_at != it:
            self.save(bool(opts.backup_every) and it % opts.backup_every == 0)
        if it > self.start and opts.preview_every and it % opts.preview_every:  # not at `it` yet
            self.preview()
        return RunResult(self.start, it, stopped, elapsed * 1000 / max(1, it - self.start),
                         self.losses, self.previewed)

    def _steps(self, stop: threading.Event | None) -> bool:
        """The loop proper; True when `stop` ended it."""
        opts, target = self.opts, self.target
        t_log = last_save = time.monotonic()
        logged_at = self.it
        while not (target and self.it >= target):
            if stop is not None and stop.is_set():
                return True
            self.losses.append(self.family.step(self.it))
            self.it += 1
            if self.it % opts.log_every == 0:
                now = time.monotonic()
                self._log((now - t_log) * 1000 / (self.it - logged_at))
                t_log, logged_at = now, self.it
            if opts.preview_every and self.it % opts.preview_every == 0:
                self.preview()
            backup = bool(opts.backup_every) and self.it % opts.backup_every == 0
            if backup or time.monotonic() - last_save >= opts.autosave_minutes * 60:
                self.save(backup)
                last_save = time.monotonic()
        return False

    def _log(self, ms: float) -> None:
        """One log line and history point: the mean losses since the last one."""
        it, target = self.it, self.target
        recent = self.losses[-self.opts.log_every:]
        s = sum(v[0] for v in recent) / len(recent)
        d = sum(v[1] for v in recent) / len(recent)
        self.history.append([it, round(s, 5), round(d, 5)])
        left = f"  ETA {eta((target - it) * ms / 1000)}" if target else ""
        values = "  ".join(f"{label} {v:.4f}" for label, v in zip(self.labels, (s, d),
                                                                  strict=False))
        self.reporter.info(f"[{it:07d}] {ms:6.0f} ms/iter  {values}{left}")
        if self.on_log is not None:
            self.on_log(it, ms, s, d)
