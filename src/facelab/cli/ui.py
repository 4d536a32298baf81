"""Rich output for the CLI: progress bars with rate and ETA, a live status line, info lines,
one-line errors."""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections.abc import Iterator

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from facelab.progress import STATUS_EVERY

TASK_LOG_EVERY = 30.0  # seconds between a piped long step's progress lines

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


class _Advance:
    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._id is not None:
            self._progress.advance(self._id, n)


def log_every() -> float:
    """Seconds between a piped long step's progress lines (FACELAB_PROGRESS_EVERY)."""
    try:
        return max(0.0, float(os.environ.get("FACELAB_PROGRESS_EVERY", TASK_LOG_EVERY)))
    except ValueError:
        return TASK_LOG_EVERY


class _Logged:
    """A long step's progress in a log: `description: done/total (rate/s, ETA)` every
    `every` seconds, so a piped run (a job scheduler, `tee`) shows it is alive."""

    def __init__(self, description: str, total: int | None, every: float) -> None:
        self.description, self.total, self.every = description, total, every
        self.done = 0
        self.start = self.last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            left = max(self.total - self.done, 0) / rate
            eta = f", ETA {int(left // 60)}:{int(left % 60):02d}"
        err.print(f"{self.description}: {self.done}{of} ({rate:,.1f}/s{eta})", markup=False,
                  soft_wrap=True)


class RichReporter:
    """The library's Reporter, drawn with Rich on stderr (nothing drawn with --quiet)."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet, self.verbose = quiet, verbose
        self._live: Live | None = None  # the status line, while one is shown
        self._logged: float | None = None  # when a status line was last logged (piped)
        self._bars = False  # a progress bar is drawn (it owns the live display)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[_Advance]:
        if self.quiet:
            yield _Advance(None, None)
            return
        if not err.is_terminal:  # piped (a log): a line now and then, bars only for a person
            yield _Logged(description, total, log_every())
            return
        self.end()  # one live display at a time: the bar replaces the status line
        self._bars = True
        try:
            with self._bar(description, total) as advance:
                yield advance
        finally:
            self._bars = False

    @contextlib.contextmanager
    def _bar(self, description: str, total: int | None) -> Iterator[_Advance]:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn()]
        with Progress(*columns, console=err, transient=False) as progress:
            task_id = progress.add_task(description, total=total)
            yield _Advance(progress, task_id)
            if total is None or progress.tasks[0].completed < total:
                progress.update(task_id, total=progress.tasks[0].completed)

    def status(self, message: str, log: bool = False) -> None:
        """A live line in a terminal (redrawn a few times a second, gone at `end`); piped,
        with `log`, the line itself every STATUS_EVERY seconds, the first at once."""
        if not message:
            self.end()
            return
        if self.quiet:
            return
        if err.is_terminal:
            if self._bars:
                return
            text = Text(message, no_wrap=True, overflow="ellipsis")
            if self._live is None:
                self._live = Live(text, console=err, transient=True, refresh_per_second=4,
                                  redirect_stdout=False, redirect_stderr=False)
                self._live.start()
                atexit.register(self.end)  # the terminal is left clean however it ends
            else:
                self._live.update(text)
            return
        now = time.monotonic()
        if log and (self._logged is None or now - self._logged >= STATUS_EVERY):
            self._logged = now
            err.print(message, markup=False, soft_wrap=True)

    def end(self) -> None:
        """Remove the status line (before the command's last words)."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()
            atexit.unregister(self.end)

    def info(self, message: str) -> None:
        if not self.quiet:
            err.print(escape(message), soft_wrap=True)

    def warn(self, message: str) -> None:
        err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

    def debug(self, message: str) -> None:
        if self.verbose:
            err.print(f"[dim]{message}[/]")


def error_line(message: str) -> None:
    """The one line a user error gets on stderr."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
