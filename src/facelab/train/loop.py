"""The run loop every model family shares: step, report, preview, autosave, back up, stop.

A family (SAE in trainer.py, meshswap in meshswap/train.py) gives a `Family`: one
iteration's step, its save, its preview and a rollback to its last save. `Loop` decides
when each happens, so a run means the same in every family: a status after every iteration
(a live line in a terminal, a line every few seconds in a log), a history point every
`log_every` iterations, a preview every `preview_every`, a save (and a line saying so) every
`autosave_minutes` and at every backup iteration, and on the way out (target reached or
`stop` set) a last save and preview of what is not saved yet; an error leaves the last save
as it was. A `RunControl` as `stop` also carries a caller's requests to save or write the
preview now (the CLI sets them on SIGUSR1/SIGUSR2, the studio's S and P keys): the loop
honours them at the end of the current iteration and trains on. A collapse (guard.py: the
loss NaN, inf or far above its recent level, or weights the checkpoint writer refuses) is
never saved: the model goes back to its last save with a lower learning rate, and repeated
collapses end the run in one line. Resuming from the save is the family's business; the
loop only continues its iteration count and history.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from facelab.device import is_out_of_memory
from facelab.errors import FacelabError
from facelab.progress import Reporter
from facelab.train.checkpoint_state import NonFinite
from facelab.train.guard import LR_FACTOR, MAX_COLLAPSES, SPAN, Guard
from facelab.train.run_options import TrainOptions, TrainReport

HISTORY_LIMIT = 2000  # logged loss points kept in the save (for the plot and `model info`)
RECENT = 25  # steps the status line's ms/iter is measured over

LogFn = Callable[[int, float, float, float], None]  # iteration, ms/iter, src loss, dst loss


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

    def rollback(self) -> int:
        """Put the weights and optimizer back as they were at the model's last save (or at
        the start of this run, when that is later); that iteration."""
        ...

    @property
    def lr(self) -> float:
        """The learning rate now (saved with the model, so a resume keeps a lowered one)."""
        ...

    def set_lr(self, lr: float) -> None:
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


class RunControl(threading.Event):
    """A run's stop event (set: save and stop) with two requests a caller may make while it
    runs, each honoured once at the end of the current iteration: `save_now` (a save, the
    autosave clock restarting from it) and `preview_now` (the preview written now, whatever
    `preview_every` says). The caller sets them from its own signals or threads; the
    library never touches signals."""

    def __init__(self) -> None:
        super().__init__()
        self.save_now = threading.Event()
        self.preview_now = threading.Event()


def _take(request: threading.Event | None) -> bool:
    """Whether `request` was made, withdrawing it (so one request is honoured once)."""
    if request is None or not request.is_set():
        return False
    request.clear()
    return True


def check_intervals(opts: TrainOptions) -> None:
    """The run's intervals (also checked by TrainOptions; a library caller may mutate it)."""
    if opts.log_every < 1 or opts.preview_every < 0 or opts.backup_every < 0:
        raise FacelabError("log, preview and backup intervals must not be negative.")


def check_writable(folder: Path, *more: Path) -> None:
    """One line when training could not save into `folder` (or the existing `more`: backups,
    preview history), said before the first iteration rather than at the first save."""
    for path in (folder, *(p for p in more if p.is_dir())):
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise FacelabError(f"Cannot write in {path} ({exc.strerror or exc}): training "
                               "could not save there; make it writable or use another "
                               "workspace.") from None


def pick_lr(given: float | None, state: dict[str, Any], default: float) -> float:
    """The run's learning rate: --lr when given, else the model's own (saved: a collapse
    lowers it, and a resume keeps that), else the family's default."""
    if given is not None:
        return given
    saved = state.get("lr")
    return float(saved) if isinstance(saved, int | float) and saved > 0 else default


def lr_note(lr: float, default: float) -> str:
    """", learning rate X" for the run's first line, when it is not the family's default."""
    return "" if lr == default else f", learning rate {lr:.3g}"


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
    """The steps of one run and what they leave: statuses, history, previews, saves.

    `labels` name the losses in the status: ("src", "dst"), or one name for a family whose
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
        self.guard = Guard()
        self.stamps: deque[float] = deque(maxlen=RECENT)  # when the recent steps ended

    def save(self, backup: bool) -> bool:
        """Save as it is now; False when the checkpoint writer refused non-finite weights
        (the last save is kept). A folder that cannot be written is one error line."""
        try:
            self.family.save(self.it, self.history[-HISTORY_LIMIT:], backup)
        except NonFinite:
            return False
        except OSError as exc:
            where = exc.filename or "the model folder"
            raise FacelabError(f"Cannot save the model: {where}: {exc.strerror or exc}; the "
                               "last complete save is kept.") from None
        self.saved_at = self.it
        recent = self.losses[-self.opts.log_every:]
        self.reporter.info(f"[{self.it:07d}] saved{' and backed up' if backup else ''}"
                           + (f"  {self._values(recent)}" if recent else ""))
        return True

    def preview(self) -> None:
        try:
            self.family.preview(self.it, self.history)
        except OSError as exc:
            raise FacelabError(f"Cannot write the preview: {exc.filename or ''}: "
                               f"{exc.strerror or exc}.") from None
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
        backup = bool(opts.backup_every) and it % opts.backup_every == 0
        if it > self.start and self.saved_at != it and not self.save(backup):
            self.reporter.warn(f"Not saved at iteration {it}: its weights are not finite; "
                               "the last save is kept.")
        if it > self.start and opts.preview_every and it % opts.preview_every:  # not at `it` yet
            self.preview()
        return RunResult(self.start, it, stopped, elapsed * 1000 / max(1, len(self.losses)),
                         self.losses, self.previewed)

    def _steps(self, stop: threading.Event | None) -> bool:
        """The loop proper; True when `stop` ended it."""
        opts, target = self.opts, self.target
        t_log = last_save = time.monotonic()
        self.stamps.append(t_log)
        logged_at = self.it
        control = stop if isinstance(stop, RunControl) else None
        save_now = control.save_now if control is not None else None
        preview_now = control.preview_now if control is not None else None
        while not (target and self.it >= target):
            if stop is not None and stop.is_set():
                return True
            src, dst = self.family.step(self.it)
            why = self.guard.check(src, dst)
            if why is not None:
                self._collapse(f"the loss {why}", self.it + 1)
                t_log, logged_at = time.monotonic(), self.it
                continue
            self.losses.append((src, dst))
            self.it += 1
            self.stamps.append(time.monotonic())
            self._status()
            if self.it % opts.log_every == 0:
                now = time.monotonic()
                self._log((now - t_log) * 1000 / max(1, self.it - logged_at))
                t_log, logged_at = now, self.it
            asked = _take(preview_now)  # one preview answers a request and the schedule
            if asked or (opts.preview_every and self.it % opts.preview_every == 0):
                self.preview()
            backup = bool(opts.backup_every) and self.it % opts.backup_every == 0
            asked = _take(save_now)
            if asked or backup or time.monotonic() - last_save >= opts.autosave_minutes * 60:
                if not self.save(backup):
                    self._collapse("its weights are not finite", self.it)
                    t_log, logged_at = time.monotonic(), self.it
                    continue
                last_save = time.monotonic()
        return False

    def _collapse(self, why: str, at: int) -> None:
        """Back to the last save with a lower learning rate, or give up (one line)."""
        lr = self.family.lr
        if self.guard.collapse():
            raise FacelabError(
                f"Training diverged {MAX_COLLAPSES} times within {SPAN} iterations (last: "
                f"{why} at iteration {at}, learning rate {lr:.3g}); nothing diverged was "
                "saved: run it again with a lower --lr, or restore a backup (`facelab model "
                "restore`).")
        back = self.family.rollback()
        self.family.set_lr(lr * LR_FACTOR)
        self.it = back
        self.history = [h for h in self.history if h[0] <= back]
        self.stamps.clear()
        self.stamps.append(time.monotonic())
        self.reporter.warn(f"Training collapsed at iteration {at} ({why}): rolled back to "
                           f"iteration {back} and lowered the learning rate to "
                           f"{lr * LR_FACTOR:.3g}.")

    def _values(self, recent: list[tuple[float, float]]) -> str:
        return "  ".join(f"{label} {v:.4f}" for label, v in zip(self.labels, _means(recent),
                                                                strict=False))

    def _status(self) -> None:
        """The live line: iteration, recent ms/iter, recent mean losses, ETA to the target."""
        it, target, stamps = self.it, self.target, self.stamps
        ms = (stamps[-1] - stamps[0]) * 1000 / max(1, len(stamps) - 1)
        left = f"  ETA {eta((target - it) * ms / 1000)}" if target else ""
        recent = self.losses[-self.opts.log_every:]
        self.reporter.status(f"[{it:07d}] {ms:6.0f} ms/iter  {self._values(recent)}{left}",
                             log=True)

    def _log(self, ms: float) -> None:
        """One history point: the mean losses since the last one."""
        it = self.it
        s, d = _means(self.losses[-self.opts.log_every:])
        self.history.append([it, round(s, 5), round(d, 5)])
        if self.on_log is not None:
            self.on_log(it, ms, s, d)


def _means(recent: list[tuple[float, float]]) -> tuple[float, float]:
    """The mean src and dst losses of `recent` steps."""
    return (sum(v[0] for v in recent) / len(recent), sum(v[1] for v in recent) / len(recent))
