"""A video's verdict from its frames: two sums of evidence, the better one decides.

* static: every frame's evidence added as it is (A adds up; so does B in a clip shorter
  than a run);
* temporal: each frame's residual minus the clip's mean residual (so anything that does not
  change, a wall, a still head, a fixed structure of a real video, is gone), divided by the
  local spread of what is left (mostly coding noise: the textured face, where the mark is
  strongest, is no longer drowned by its own texture), folded, and summed with the sign
  `pattern.frame_sign` gave each frame's B part, scored against B. The video's first
  frame is not known (a cut clip), so every offset of the sequence (PERIOD) is scored and
  the best kept.

Both are scored like one frame (Z over every scale and shift, and at the nominal position);
the temporal sum against higher thresholds, for its PERIOD offsets. See docs/WATERMARK.md
for why a sum, not a count of per-frame hits, decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from facelab.provenance.watermark import code, pattern
from facelab.provenance.watermark.detect import (
    NOMINAL,
    SCALES,
    TEMPORAL_MIXES,
    TEMPORAL_NOMINAL_Z,
    TEMPORAL_Z_THRESHOLD,
    Detection,
    N,
    content_box,
    fold,
    folded,
    normalise,
    residuals,
    score,
    soft_bits,
    z_at,
)

TEMPORAL_FLOOR = 1.0  # grey levels: spread floor for the temporal residual (measured best)
TEMPORAL_SPREAD_SIGMA = 3.0  # samples: its neighbourhood (wider than a frame's: measured)
JOINT_NOMINAL_Z = 5.5  #: both sums at the nominal position, combined (docs/WATERMARK.md)


@dataclass(frozen=True)
class ClipDetection:
    """A video's verdict: per sampled frame, and the frames' evidence summed."""

    frames: list[Detection]
    clip: Detection
    temporal: bool = False  # the temporal sum decided (not the plain one)
    static_score: float = 0.0  # Z of the plain sum
    temporal_score: float = 0.0  # Z of the temporal sum, best offset (0: not scored)
    static_nominal: float = 0.0  # Z of the plain sum at the nominal position
    temporal_nominal: float = 0.0  # … of the temporal sum (best offset)
    joint_nominal: float = 0.0  # the two combined: (static + temporal) / √2

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
    static = score(total, key, frames=len(grays))
    temporal = _temporal(res, idx, key)
    t_ev = temporal[1] if temporal is not None else None
    tz = temporal[0].score if temporal is not None else 0.0
    tn = temporal[0].nominal_score if temporal is not None else 0.0
    # A from the plain sum and B from the temporal one are independent evidence at the same
    # (nominal) position: Stouffer's sum of the two Z
    joint = (static.nominal_score + tn) / math.sqrt(2) if temporal is not None else 0.0
    scores = (static.score, tz, static.nominal_score, tn, round(joint, 2))
    if not static.found and not (temporal and temporal[0].found) and joint >= JOINT_NOMINAL_Z:
        d = Detection(True, round(joint, 2), None, 1.0, len(grays), True, (NOMINAL, 0, 0),
                      (1.0, 0.0), round(joint, 2))
        return ClipDetection(per, _joint_payload(d, total, t_ev, key), True, *scores)
    if temporal is not None and (temporal[0].found, tz) > (static.found, static.score):
        return ClipDetection(per, _joint_payload(temporal[0], total, t_ev, key), True, *scores)
    return ClipDetection(per, _joint_payload(static, total, t_ev, key), False, *scores)


def _joint_payload(d: Detection, static: np.ndarray, temporal: np.ndarray | None,
                   key: bytes | str) -> Detection:
    """`d` with its payload read from both sums at the position `d` found: A from the static
    sum, B from the temporal one, each weighed by its Z there (soft values with unit spread
    add best weighed by their signal-to-noise ratio)."""
    if not d.found:
        return d
    parts = [(static, d.mix if d.mix[0] else (1.0, 0.0))]
    if temporal is not None:
        parts.append((temporal, TEMPORAL_MIXES[0]))
    soft = np.zeros(code.CODED_BITS)
    for ev, mix in parts:
        z = z_at(ev, d.at, mix, key)
        if z > 0:
            soft += z * soft_bits(ev[d.at[0]], d.at[1:], mix, key)
    payload = code.decode(soft)
    return replace(d, payload=payload if payload is not None else d.payload, soft=soft)


def sample_pairs(total: int, sample: int) -> list[int]:
    """Indices of about `sample` of `total` frames, spread evenly in pairs FLIP_FRAMES apart:
    the two frames of a pair carry opposite signs whatever the clip's first frame was, so
    the temporal sum always has both (a regular stride could land on one sign only)."""
    k = pattern.FLIP_FRAMES
    if total <= sample or total <= k:
        return list(range(min(total, sample)))
    starts = np.linspace(0, total - 1 - k, max(1, sample // 2)).round().astype(int)
    return sorted({int(i) for s in starts for i in (s, s + k)})


def _temporal(res: list[list[np.ndarray]], idx: list[int],
              key: bytes | str) -> tuple[Detection, np.ndarray] | None:
    """The temporal sum's detection at its best offset, and that sum."""
    t = len(res)
    if t < 2 or not res[0] or any(r[0].shape != res[0][0].shape for r in res):
        return None
    per = np.zeros((t, len(SCALES), N, N), np.float32)
    for k in range(len(SCALES)):
        a = np.stack([r[k] for r in res])
        a -= a.mean(axis=0)
        var = cv2.GaussianBlur(np.mean(a * a, axis=0), (0, 0), TEMPORAL_SPREAD_SIGMA)
        for i in range(t):
            per[i, k] = fold(normalise(a[i], var, TEMPORAL_FLOOR))
    best, nominal = None, -np.inf
    for offset in range(pattern.PERIOD):
        w = np.array([pattern.frame_sign(i + offset) for i in idx], np.float32)
        if np.ptp(w) < 1.0:  # (nearly) one sign only: the mean removed B with the picture
            continue
        ev = np.tensordot(w, per, axes=1)
        d = score(ev, key, frames=t, mixes=TEMPORAL_MIXES,
                  threshold=TEMPORAL_Z_THRESHOLD, nominal_threshold=TEMPORAL_NOMINAL_Z)
        nominal = max(nominal, d.nominal_score)
        if best is None or (d.found, d.score) > (best[0].found, best[0].score):
            best = (d, ev)
    return (replace(best[0], nominal_score=nominal), best[1]) if best else None
