"""Progress reporting that keeps the library free of any UI.

Library functions take a `Reporter`; the CLI passes one that draws Rich progress bars,
tests and scripts pass nothing and get `NULL`. A loop whose progress is not a count (training:
iteration, speed, losses) gives `status` lines instead: a live line in a terminal, and when
`log` asks for it, a line every `STATUS_EVERY` seconds in a log (piped stderr).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

STATUS_EVERY = 10.0  # seconds between logged status lines when not drawn live


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> AbstractContextManager[Task]:
        """A long step of `total` units (None when unknown)."""
        ...

    def info(self, message: str) -> None:
        """A line worth showing unless --quiet."""
        ...

    def warn(self, message: str) -> None:
        """A line the user should read even with --quiet."""
        ...

    def status(self, message: str, log: bool = False) -> None:
        """What a long step is doing now, replacing the previous status: so a person sees
        something at once (loading, the current iteration) without a line per update.
        `log`: also worth a line in a log now and then (every STATUS_EVERY s, the first at
        once); otherwise only drawn live. An empty message clears it (the step is over)."""
        ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _NullTask:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class NullReporter:
    """Draws nothing; keeps info and warning lines in `collected` for scripts and tests."""

    def __init__(self) -> None:
        self.collected: list[str] = []

    def task(self, description: str, total: int | None) -> _NullTask:
        return _NullTask()

    def info(self, message: str) -> None:
        self.collected.append(message)

    def warn(self, message: str) -> None:
        self.collected.append(message)

    def status(self, message: str, log: bool = False) -> None:
        pass


NULL = NullReporter()
