"""Expression: does the result face make dst's expressions?

Two measures on the 68 landmarks. The expression error: the result's mouth and eye points,
similarity-aligned onto dst's on the stable points (eye corners, nose), their mean distance
to dst's in units of dst's eye distance (so it does not depend on the face's size in the
frame). Expression following: the correlation over time of mouth opening and of eye opening
between result and dst; 1.0 = the swapped face talks and blinks with dst, a frozen face
(a pasted still image, a model that learned only the average face) scores about 0.
"""

from __future__ import annotations

import numpy as np

from facelab.faces.facetype import similarity_fit, transform_points
from facelab.faces.record import Landmarks

STABLE = [27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45]  # nose, eye corners
MOVING = list(range(36, 48)) + list(range(48, 68))  # eyes, mouth
# A channel counts toward expression_corr only where dst itself moves it: the mouth opening
# must vary by this much (in eye distances), the eyes must close to this share of their
# median opening at least once (a blink); otherwise the correlation would be one of noise.
MOUTH_MOVES = 0.03
EYES_BLINK = 0.6


def eye_distance(p: np.ndarray) -> float:
    return float(np.linalg.norm(p[42:48].mean(0) - p[36:42].mean(0)))


def mouth_opening(p: np.ndarray) -> float:
    """Inner-lip gap (three point pairs) in eye distances."""
    gap = np.linalg.norm(p[[61, 62, 63]] - p[[67, 66, 65]], axis=1).mean()
    return float(gap / max(eye_distance(p), 1e-6))


def eye_opening(p: np.ndarray) -> float:
    """Eye aspect ratio, both eyes averaged (lid gap / eye width)."""
    out = []
    for c in (36, 42):
        gap = np.linalg.norm(p[c + 1] - p[c + 5]) + np.linalg.norm(p[c + 2] - p[c + 4])
        out.append(gap / (2 * max(np.linalg.norm(p[c] - p[c + 3]), 1e-6)))
    return float(np.mean(out))


def expression_error(dst: np.ndarray, result: np.ndarray) -> float:
    """Mean distance of the result's eye and mouth points to dst's, after aligning the
    result onto dst on the stable points, in dst eye distances."""
    mat = similarity_fit(result[STABLE], dst[STABLE])
    moved = transform_points(result[MOVING], mat)
    return float(np.linalg.norm(moved - dst[MOVING], axis=1).mean() / max(eye_distance(dst),
                                                                          1e-6))


def openings(faces: list[Landmarks | None]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame mouth and eye opening (NaN without a face)."""
    mouth = np.array([mouth_opening(f.points68) if f else np.nan for f in faces])
    eyes = np.array([eye_opening(f.points68) if f else np.nan for f in faces])
    return mouth, eyes


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation over the frames where both are known; a constant result against a
    varying dst is 0 (it does not follow); None when dst does not vary or too few frames."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 5:
        return None
    a, b = a[ok], b[ok]
    if a.std() < 1e-9:
        return None
    if b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def following(dst: np.ndarray, result: np.ndarray, kind: str) -> tuple[float | None, bool]:
    """(correlation, whether dst moves this channel enough for it to count)."""
    d = dst[np.isfinite(dst)]
    if len(d) == 0:
        return None, False
    if kind == "mouth":
        active = float(np.ptp(d)) >= MOUTH_MOVES
    else:
        active = float(d.min()) <= EYES_BLINK * float(np.median(d))
    return correlation(dst, result), active
