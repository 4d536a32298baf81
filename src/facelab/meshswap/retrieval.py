"""Finding the src faces nearest a dst face in pose and expression, and whether a src
faceset has what retrieval needs.

A face can only be shown blinking or talking if src's faceset holds faces doing so: the
pixels come from there. So `check_variety` refuses a faceset that is too small or never
blinks or opens its mouth, in one sentence that says what footage to add, before any work.
`Index.nearest` is a weighted Euclidean k-nearest search in numpy (`descriptors.SCALES`
are the weights' inverses); a faceset of a few thousand faces needs no tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facelab.errors import FacelabError
from facelab.meshswap.descriptors import FEATURES, SCALES

#: Fewer src faces than this cannot cover a dst clip's poses and expressions.
MIN_FACES = 20
#: Eyes count as closed below this fraction of the faceset's median eye openness (both).
EYES_CLOSED = 0.5
#: A mouth counts as open from this inner-lip gap / mouth width on (speech reaches 0.2–0.45).
MOUTH_OPEN = 0.15
#: At least this many faces must show each expression (one could be a landmark glitch).
MIN_BLINKS = 2
MIN_OPEN_MOUTHS = 2
#: Blend weights: exp(−(d² − d_min²) / 2σ²) over descriptor distance d (units of SCALES).
BLEND_SIGMA = 1.0

_MOUTH, _EYES = FEATURES.index("mouth"), [FEATURES.index("eye_left"), FEATURES.index("eye_right")]


def eyes_closed(descriptors: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Which faces have both eyes closed, against the median openness of `reference`
    (default: the faces themselves), so narrow eyes are not taken for shut ones."""
    d = np.atleast_2d(descriptors)
    ref = d if reference is None else np.atleast_2d(reference)
    return d[:, _EYES].max(1) < EYES_CLOSED * np.median(ref[:, _EYES].min(1))


def mouth_open(descriptors: np.ndarray) -> np.ndarray:
    """Which faces have the mouth open."""
    return np.atleast_2d(descriptors)[:, _MOUTH] >= MOUTH_OPEN


def check_variety(descriptors: np.ndarray, side: str = "src") -> None:
    """Raise one FacelabError naming what to add when the faceset cannot serve retrieval:
    too few faces, or none (fewer than MIN_*) blinking or with the mouth open."""
    d = np.asarray(descriptors).reshape(-1, len(FEATURES))
    n = len(d)
    if n < MIN_FACES:
        raise FacelabError(
            f"The {side} faceset has {n} face{'s' * (n != 1)}; at least {MIN_FACES} are "
            f"needed: add more {side} footage (longer, or extracted at a higher --fps), or "
            "use an autoencoder (--preset quick96), which learns from fewer.")
    counts = {"eyes closed": (int(eyes_closed(d).sum()), MIN_BLINKS, "blink"),
              "mouth open": (int(mouth_open(d).sum()), MIN_OPEN_MOUTHS, "talk")}
    short = {k: v for k, v in counts.items() if v[0] < v[1]}
    if short:
        verbs = [v[2] for v in short.values()]
        have = "; ".join(f"{k} in {c} of {n}, {m} needed" for k, (c, m, _) in short.items())
        raise FacelabError(f"Too few {side} faces {' or '.join(verbs)} ({have}): add footage "
                           f"where {side} {' and '.join(v + 's' for v in verbs)}, or use an "
                           "autoencoder (--preset quick96).")


def candidate_weights(distances: np.ndarray, sigma: float = BLEND_SIGMA) -> np.ndarray:
    """Blend weights for candidates at these descriptor distances (best counts most, a
    candidate σ farther away in squared terms counts e^−½ as much); they sum to 1."""
    d = np.asarray(distances, np.float64)
    w = np.exp(-(d**2 - d.min() ** 2) / (2 * sigma**2))
    return w / w.sum()


@dataclass
class Index:
    """src faces' descriptors (K×F), searchable by weighted distance."""

    descriptors: np.ndarray
    scales: np.ndarray = field(default_factory=lambda: SCALES.copy())

    def __post_init__(self) -> None:
        self.descriptors = np.asarray(self.descriptors, np.float64).reshape(-1, len(FEATURES))
        self._scaled = self.descriptors / self.scales

    def __len__(self) -> int:
        return len(self.descriptors)

    def distances(self, query: np.ndarray) -> np.ndarray:
        """Weighted distances (M×K, or K for one query) from queries (M×F or F) to every
        indexed face."""
        q = np.asarray(query, np.float64) / self.scales
        diff = q[..., None, :] - self._scaled
        return np.sqrt((diff**2).sum(-1))

    def nearest(self, query: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest indexed faces to each query, nearest first: (indices, distances),
        each k long for one query (F) or M×k for several (M×F)."""
        d = self.distances(query)
        k = min(k, len(self))
        part = np.argpartition(d, k - 1, axis=-1)[..., :k]
        near = np.take_along_axis(d, part, -1)
        order = np.argsort(near, axis=-1, kind="stable")
        return np.take_along_axis(part, order, -1), np.take_along_axis(near, order, -1)
