"""The sort methods, registered by name: each says which features it needs and turns them
into an order (new names 00000, 00001, … follow it) and/or a set of faces to trash."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facelab.errors import FacelabError
from facelab.faceset.features import FaceRecord


@dataclass
class SortOptions:
    target: int | None = None  # `final`: how many faces to keep


@dataclass
class Selection:
    """Indices into the records: the kept ones in their new order (None: keep names), and
    the ones that move to the trash."""

    order: list[int] | None
    trash: list[int] = field(default_factory=list)


Order = Callable[[list[FaceRecord], SortOptions], Selection]


@dataclass(frozen=True)
class Method:
    name: str
    features: tuple[str, ...]
    order: Order

    @property
    def doc(self) -> str:
        return (self.order.__doc__ or "").strip().split("\n")[0]


METHODS: dict[str, Method] = {}


def method(name: str, features: tuple[str, ...]) -> Callable[[Order], Order]:
    def add(fn: Order) -> Order:
        METHODS[name] = Method(name, features, fn)
        return fn
    return add


def get(name: str) -> Method:
    if name not in METHODS:
        raise FacelabError(f"Unknown sort method '{name}': use one of {', '.join(METHODS)}.")
    return METHODS[name]


def by_score(scores: np.ndarray, descending: bool = False) -> Selection:
    """Order by a score; ties keep the current (name) order."""
    key = -scores if descending else scores
    return Selection([int(i) for i in np.argsort(key, kind="stable")])


# The method modules register themselves on import; the order here is the order of --help.
from facelab.faceset import (  # noqa: E402, F401, I001
    sharpness, histogram, pose, image, names, final,
)
