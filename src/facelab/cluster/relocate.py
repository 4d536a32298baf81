"""Paths moved between the driver's disk and a cluster worker's.

A stage's work items, init arguments and results name files on the driver's disk (the
workspace, the dst video). A worker on another machine has neither: it gets the inputs'
bytes and a staging folder of its own, runs the stage's unchanged code on the relocated
arguments, and its results are relocated back before the driver sees them. `relocate`
rewrites every `Path` inside plain data (tuples, lists, dicts, dataclasses and simple
objects) by the first matching move, copying what it changes and never touching the
original. `swap` replaces one object (by identity) wherever it is found, as the paths."""

from __future__ import annotations

import copy
import dataclasses
import enum
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

Move = tuple[PurePath, PurePath]  # (from, to): a file or a folder and all below it

_ATOMS = (str, bytes, int, float, complex, bool, type(None), enum.Enum, range)


def moved(path: PurePath, moves: Sequence[Move]) -> PurePath:
    """`path` under the first move whose source is it or one of its folders."""
    for old, new in moves:
        if path == old:
            return type(path)(new)
        if old in path.parents:
            return type(path)(new / path.relative_to(old))
    return path


def relocate(obj: Any, moves: Sequence[Move], swap: tuple[Any, Any] | None = None) -> Any:
    """`obj` with every path in it moved, and `swap`'s first object replaced by its
    second (a copy where anything changed)."""
    if swap is not None and obj is swap[0]:
        return swap[1]
    if (not moves and swap is None) or isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, PurePath):
        return moved(obj, moves)
    if isinstance(obj, tuple):
        items = [relocate(x, moves, swap) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [relocate(x, moves, swap) for x in obj]
    if isinstance(obj, (set, frozenset)):
        return type(obj)(relocate(x, moves, swap) for x in obj)
    if isinstance(obj, dict):
        return {relocate(k, moves, swap): relocate(v, moves, swap) for k, v in obj.items()}
    if (callable(obj) and not hasattr(obj, "__dict__")) or isinstance(obj, type):
        return obj
    state = (({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
             if dataclasses.is_dataclass(obj) else getattr(obj, "__dict__", None))
    if not state or type(obj).__module__ in ("builtins", "numpy", "functools"):
        return obj
    new = {k: relocate(v, moves, swap) for k, v in state.items()}
    if all(new[k] is state[k] for k in state):
        return obj
    out = copy.copy(obj)
    for k, v in new.items():
        object.__setattr__(out, k, v)
    return out
