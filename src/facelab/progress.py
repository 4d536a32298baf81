"""Progress reporting that keeps the library free of any UI.

Library functions take a `Reporter`; the CLI passes one that draws Rich progress bars,
tests and scripts pass nothing and get `NULL`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol


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


NULL = NullReporter()
