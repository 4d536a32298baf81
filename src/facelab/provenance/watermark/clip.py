"""A video's verdict from its frames: two sums of evidence, the better one decides.

* static: every frame's evidence added as it is (the pattern with one sign: clips shorter
  than a sign run, and videos marked before the sign sequence);
* temporal: each frame's residual minus the clip's mean residual (so anything that does not
  change, a wall, a still head, a fixed structure of a real video, is gone), divided by the
  local spread of what is left (mostly coding noise: the textured face, where the mark is
  strongest, is no longer drowned by its own texture), folded, and summed with the sign
  `pattern.frame_sign` gave each frame. The video's first frame is not known (a cut clip),
  so every offset of the sign sequence (PERIOD) is scored and the best kept.

Both are scored like one frame (Z over every scale and shift); the temporal sum against a
higher threshold, for its PERIOD offsets. See docs/WATERMARK.md for why a sum, not a count
of per-frame hits, decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facelab.provenance.watermark import pattern
from facelab.provenance.watermark.detect import (
    SCALES,
    SPREAD_SIGMA,
    TEMPORAL_Z_THRESHOLD,
    Detection,
    N,
    content_box,
    fold,
    folded,
    normalise,
    residuals,
    score,
)

TEMPORAL_FLOOR = 1.0  # grey levels: spread floor for the temporal residual (measured best)


@dataclass(frozen=True)
class ClipDetection:
    """A video's verdict: per sampled frame, and the frames' evidence summed."""

    frames: list[Detection]
    clip: Detection
    temporal: bool = False  # the sign-weighted sum decided (not the plain one)
    static_score: float = 0.0  # Z of the plain sum
    temporal_score: float = 0.0  # Z of the sign-weighted sum, best offset (0: not scored)

    @property
    def share(self) -> float:
        return sum(d.found for d in self.frames) / len(self.frames) if self.frames else 0.0


def detect_clip(grays: list[np.ndarray], key: bytes | str = pattern.DEFAULT_KEY,
                indices: list[int] | None = None) -> ClipDetection:
    """Each luma frame scored alone, and the clip's two sums (module docstring). `indices`:
    each frame's position in decoding order (default 0, 1, 2, …); frames sampled from a
    long video should come from `sample_pairs` so that both signs are present.
    One geometry for all: the bars are found on the frames' pixelwise maximum, so a dark
    frame does not move them."""
    if not grays:
        return ClipDetection([], Detection(False, 0.0, None, frames=0))
    idx = list(range(len(grays))) if indices is None else list(indices)
    box = content_box(np.maximum.reduce(grays))
    total = np.zeros((len(SCALES), N, N), np.float32)
    per, res = [], []
    for g in grays:
        r = residuals(g, box)
        ev = folded(r)
        per.append(score(ev, key))
        total += ev
        res.append(r)
    static = score(total, key, frames=len(grays))  # a cut clip may carry only the − sign
    temporal = _temporal(res, idx, key)
    tz = temporal.score if temporal is not None else 0.0
    if temporal is not None and (temporal.found, temporal.score) > (static.found, static.score):
        return ClipDetection(per, temporal, True, static.score, tz)
    return ClipDetection(per, static, False, static.score, tz)


def sample_pairs(total: int, sample: int) -> list[int]:
    """Indices of about `sample` of `total` frames, spread evenly in pairs FLIP_FRAMES apart:
    the two frames of a pair carry opposite signs whatever the clip's first frame was, so
    the sign-weighted sum always has both (a regular stride could land on one sign only)."""
    k = pattern.FLIP_FRAMES
    if total <= sample or total <= k:
        return list(range(min(total, sample)))
    starts = np.linspace(0, total - 1 - k, max(1, sample // 2)).round().astype(int)
    return sorted({int(i) for s in starts for i in (s, s + k)})


def _temporal(res: list[list[np.ndarray]], idx: list[int], key: bytes | str) -> Detection | None:
    t = len(res)
    if t < 2 or not res[0] or any(r[0].shape != res[0][0].shape for r in res):
        return None
    per = np.zeros((t, len(SCALES), N, N), np.float32)
    for k in range(len(SCALES)):
        a = np.stack([r[k] for r in res])
        a -= a.mean(axis=0)
        var = cv2.GaussianBlur(np.mean(a * a, axis=0), (0, 0), SPREAD_SIGMA)
        for i in range(t):
            per[i, k] = fold(normalise(a[i], var, TEMPORAL_FLOOR))
    best = None
    for offset in range(pattern.PERIOD):
        w = np.array([pattern.frame_sign(i + offset) for i in idx], np.float32)
        if abs(w.sum()) == t:  # one sign only: the mean removed the mark with the picture
            continue
        d = score(np.tensordot(w, per, axes=1), key, frames=t, signs=(1.0,),
                  threshold=TEMPORAL_Z_THRESHOLD)
        if best is None or d.score > best.score:
            best = d
    return best
