"""Rich output for the CLI: progress bars with rate and ETA, info lines, one-line errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
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


class RichReporter:
    """The library's Reporter, drawn with Rich on stderr (nothing drawn with --quiet)."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet, self.verbose = quiet, verbose

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[_Advance]:
        if self.quiet or not err.is_terminal:  # bars only for a person watching
            yield _Advance(None, None)
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn()]
        with Progress(*columns, console=err, transient=False) as progress:
            task_id = progress.add_task(description, total=total)
            yield _Advance(progress, task_id)
            if total is None or progress.tasks[0].completed < total:
                progress.update(task_id, total=progress.tasks[0].completed)

    def info(self, message: str) -> None:
        if not self.quiet:
            err.print(message)

    def warn(self, message: str) -> None:
        err.print(f"[yellow]warning:[/] {message}")

    def debug(self, message: str) -> None:
        if self.verbose:
            err.print(f"[dim]{message}[/]")


def error_line(message: str) -> None:
    """The one line a user error gets on stderr."""
    err.print(f"[red]error:[/] {message}", soft_wrap=True)
