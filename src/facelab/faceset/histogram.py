"""Colour histograms: `hist` (similar faces together) and `hist-dissim` (odd ones first)."""

from __future__ import annotations

import cv2
import numpy as np

from facelab.faceset.features import FaceData, FaceRecord, column, feature
from facelab.faceset.methods import Selection, SortOptions, by_score, method

BINS = 32  # per channel: 256 would cost 8× the memory and compare noise


@feature("hist")
def histogram(face: FaceData) -> list[float]:
    """B, G, R histograms of the whole face image, each summing to 1 (3×BINS values)."""
    h = [cv2.calcHist([face.image], [c], None, [BINS], [0, 256]).ravel() for c in range(3)]
    return np.concatenate([x / max(x.sum(), 1.0) for x in h]).tolist()


def roots(recs: list[FaceRecord]) -> np.ndarray:
    """√histograms (N×3·BINS, float32): a dot product of two rows is the sum of the three
    channels' Bhattacharyya coefficients (3 = identical, 0 = disjoint)."""
    return np.sqrt(column(recs, "hist")).astype(np.float32)


@method("hist", ("hist",))
def by_hist(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Similar histograms grouped together (each face followed by its nearest remaining)."""
    r = roots(recs)
    n = len(r)
    left = np.ones(n, bool)
    order, cur = [0], 0
    left[0] = False
    for _ in range(n - 1):  # one matrix-vector product a step: O(N²·D) time, O(N·D) memory
        sim = r @ r[cur]
        sim[~left] = -1.0
        cur = int(np.argmax(sim))
        left[cur] = False
        order.append(cur)
    return Selection(order)


@method("hist-dissim", ("hist",))
def by_hist_dissim(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Most unlike the rest first; the most alike (the common look) at the end."""
    r = roots(recs)
    total = r.sum(0)
    alike = r @ total - (r * r).sum(1)  # summed similarity to every other face, in O(N·D)
    return by_score(alike)
