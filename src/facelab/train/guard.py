"""Divergence: when a run's loss says the model collapsed, and when to stop trying.

A learning rate too high for a model (or a bad batch in fp16) sends the loss to NaN or inf,
or far above where it was; every step after that only makes the weights worse, and an
autosave would keep them. `Guard` watches each step's losses: a non-finite one, or (after
a warm-up of `WINDOW` steps) one above `JUMP` times the median of the last `WINDOW`, is a
collapse. The loop then rolls the model back to its last good save and lowers the learning
rate by `LR_FACTOR`; `MAX_COLLAPSES` collapses within `SPAN` steps mean the run cannot be
rescued this way, and it stops with one line (the last good save is kept).
"""

from __future__ import annotations

import math
import statistics
from collections import deque

WINDOW = 50  # steps the recent level is the median of (and the warm-up before jumps count)
JUMP = 10.0  # a loss this many times the recent median is a collapse
LR_FACTOR = 0.5  # the learning rate after a collapse, relative to before
MAX_COLLAPSES = 3  # this many collapses ...
SPAN = 1000  # ... within this many steps: give up


class Guard:
    """Tells collapsed steps from good ones and counts the collapses."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.steps = 0  # steps checked in this run (rolled-back ones included)
        self.collapses: list[int] = []  # the step count at each collapse

    def check(self, src: float, dst: float) -> str | None:
        """Why this step's losses mean a collapse (a phrase for the warning), or None."""
        self.steps += 1
        total = src + dst
        if math.isnan(total):
            return "turned NaN"
        if not math.isfinite(total):
            return "turned infinite"
        if len(self.recent) == WINDOW:
            level = statistics.median(self.recent)
            if level > 0 and total > JUMP * level:
                return f"jumped to {total:.4g}, over {JUMP:g}× its recent {level:.4g}"
        self.recent.append(total)
        return None

    def collapse(self) -> bool:
        """Record a collapse (the recent level starts over); True when it is one too many."""
        self.collapses = [s for s in self.collapses if self.steps - s < SPAN] + [self.steps]
        self.recent.clear()
        return len(self.collapses) >= MAX_COLLAPSES
