"""Detection: find the keyed pattern's position and scale, score it, read the payload.

Per frame: black bars are trimmed (letterbox, pillarbox); for each candidate cell size
(the nominal height/45 and up to 15 % larger, for crops off the top or bottom) the luma is
averaged onto a grid of SAMPLES per cell, high-passed (each sample minus its neighbourhood
mean) and divided by the local spread of that residual, so a textured face and a flat wall
weigh alike and the picture itself mostly cancels. The grid is folded modulo the tile and
cross-correlated with the pilot cells by FFT: every cyclic shift (= any crop offset, at
half-cell steps) at once. The score Z is the correlation peak in standard deviations of all
the other shifts, the decision Z ≥ Z_THRESHOLD, for the pattern with either sign (a video's
frames carry it with a sign sequence, pattern.frame_sign). A video's frames are summed
before scoring (clip.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from facelab.provenance.watermark import code, pattern

Z_THRESHOLD = 7.0  #: calibrated on real unmarked frames: see docs/WATERMARK.md
#: a clip's sign-weighted sum: higher, for its PERIOD× more hypotheses (docs/WATERMARK.md)
TEMPORAL_Z_THRESHOLD = 7.5
SCALES = tuple(float(s) for s in np.geomspace(0.985, 1.15, 7))  # candidate cell sizes / nominal
N = pattern.TILE * pattern.SAMPLES  # detection tile side in samples
HP_SIGMA = 1.2  # samples: the neighbourhood whose mean is removed
SPREAD_SIGMA = 3.0  # samples: the neighbourhood whose spread normalises
MIN_SPREAD = 0.25  # grey levels: a floor for the spread of quantised flat areas
BAR_LEVEL = 24  # luma: bars are darker than this …
BAR_STD = 3.0  # … and this uniform


@dataclass(frozen=True)
class Detection:
    found: bool
    score: float  # Z: correlation peak in standard deviations of the other shifts
    payload: int | None  # None when not found or its CRC failed
    scale: float = 1.0  # cell size found / nominal
    frames: int = 1  # frames whose evidence was summed


def _hp(x: np.ndarray) -> np.ndarray:
    return x - cv2.GaussianBlur(x, (0, 0), HP_SIGMA, borderType=cv2.BORDER_REFLECT)


def _hp_cyclic(x: np.ndarray) -> np.ndarray:
    """`_hp` of one period of a periodic image (OpenCV's blur has no wrap-around border)."""
    n = x.shape[0]
    return _hp(np.tile(x, (3, 3)))[n:2 * n, n:2 * n]


@dataclass(frozen=True)
class _Templates:
    pilot_f: np.ndarray  # conj FFT of the high-passed pilot template
    data: np.ndarray  # high-passed data template, chips only (payload bits taken as 0)
    lay: pattern.Layout


@lru_cache(maxsize=4)
def _templates(key: bytes) -> _Templates:
    lay = pattern.layout(key)
    pilot = np.where(lay.pilot, lay.chips, 0).astype(np.float32)
    data = np.where(lay.pilot, 0, lay.chips).astype(np.float32)
    tp = _hp_cyclic(pattern.tile_template(pilot))
    td = _hp_cyclic(pattern.tile_template(data))
    return _Templates(np.conj(np.fft.rfft2(tp)), td, lay)


def luma(frame: np.ndarray) -> np.ndarray:
    """Luma (uint8 or float) of a BGR/BGRA/gray frame."""
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def content_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the picture inside black bars (the whole frame when none)."""
    g = gray.astype(np.float32)
    rows = (g.max(axis=1) < BAR_LEVEL) & (g.std(axis=1) < BAR_STD)
    cols = (g.max(axis=0) < BAR_LEVEL) & (g.std(axis=0) < BAR_STD)

    def span(bars: np.ndarray) -> tuple[int, int]:
        keep = np.flatnonzero(~bars)
        return (int(keep[0]), int(keep[-1]) + 1) if keep.size else (0, 0)

    y0, y1 = span(rows)
    x0, x1 = span(cols)
    return y0, y1, x0, x1


def residuals(gray: np.ndarray, box: tuple[int, int, int, int]) -> list[np.ndarray]:
    """Per candidate scale, the picture inside `box` sampled onto the detection grid
    (SAMPLES per cell) and high-passed; [] when the picture is too small or empty."""
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    if h < 32 or w < 32:
        return []
    g = gray[y0:y1, x0:x1].astype(np.float32)
    c0 = pattern.cell_size(h)
    # Averaged once to 4 samples per nominal cell; each scale then samples that bilinearly.
    h4, w4 = max(1, round(h * 4 / c0)), max(1, round(w * 4 / c0))
    g4 = cv2.resize(g, (w4, h4), interpolation=cv2.INTER_AREA)
    g4 = cv2.GaussianBlur(g4, (0, 0), 0.8)
    fy, fx = h4 / h, w4 / w
    out = []
    for s in SCALES:
        step = s * c0 / pattern.SAMPLES  # pixels per detection sample
        gh, gw = int(h / step), int(w / step)
        m = np.float32([[step * fx, 0, 0.5 * step * fx - 0.5],
                        [0, step * fy, 0.5 * step * fy - 0.5]])
        a = cv2.warpAffine(g4, m, (gw, gh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
        out.append(_hp(a))
    return out


def evidence(gray: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """len(SCALES)×N×N float32: the frame's normalised residual folded onto the tile, per
    candidate scale. Zeros when the picture is too small or empty."""
    return folded(residuals(gray, box if box is not None else content_box(gray)))


def folded(res: list[np.ndarray]) -> np.ndarray:
    """`evidence` from a frame's `residuals`: each divided by its own local spread, folded."""
    out = np.zeros((len(SCALES), N, N), np.float32)
    for i, r in enumerate(res):
        out[i] = fold(normalise(r, cv2.GaussianBlur(r * r, (0, 0), SPREAD_SIGMA), MIN_SPREAD))
    return out


def normalise(r: np.ndarray, var: np.ndarray, floor: float) -> np.ndarray:
    """`r` divided by the local spread √`var` (at least `floor`), clipped to ±3."""
    n = r / np.maximum(np.sqrt(var), floor)
    return np.clip(n, -3, 3).astype(np.float32)


def fold(n: np.ndarray) -> np.ndarray:
    gh, gw = n.shape
    py, px = -gh % N, -gw % N
    p = np.pad(n, ((0, py), (0, px)))
    return p.reshape(p.shape[0] // N, N, p.shape[1] // N, N).sum(axis=(0, 2))


def score(ev: np.ndarray, key: bytes | str = pattern.DEFAULT_KEY, frames: int = 1,
          signs: tuple[float, ...] = (1.0, -1.0), threshold: float = Z_THRESHOLD) -> Detection:
    """The detection for summed `evidence` (one frame's or many frames'), the pattern taken
    with each of `signs` (a single frame of a video may carry it negated)."""
    t = _templates(pattern.key_bytes(key))
    best = (-np.inf, 0, 0, 0, 1.0)
    for i in range(len(SCALES)):
        c = np.fft.irfft2(np.fft.rfft2(ev[i]) * t.pilot_f, s=(N, N))
        sd = float(c.std())
        if sd < 1e-6:
            continue
        mean = float(c.mean())
        for sign in signs:
            k = int(np.argmax(sign * c))
            z = (sign * float(c.flat[k]) - sign * mean) / sd
            if z > best[0]:
                best = (z, i, *divmod(k, N), sign)
    z, i, dy, dx, sign = best
    if not np.isfinite(z):
        return Detection(False, 0.0, None, frames=frames)
    found = z >= threshold
    payload = (_payload(sign * np.roll(ev[i], (-dy, -dx), axis=(0, 1)), t) if found
               else None)
    return Detection(found, round(z, 2), payload, SCALES[i], frames)


def _payload(aligned: np.ndarray, t: _Templates) -> int | None:
    """Soft value of each coded bit: the aligned evidence against each data cell's chip."""
    per = (aligned * t.data).reshape(pattern.TILE, pattern.SAMPLES, pattern.TILE,
                                     pattern.SAMPLES).sum(axis=(1, 3))
    bits = t.lay.bit.ravel()
    data = bits >= 0
    soft = np.bincount(bits[data], weights=per.ravel()[data], minlength=code.CODED_BITS)
    return code.decode(soft)


def detect(frame: np.ndarray, key: bytes | str = pattern.DEFAULT_KEY) -> Detection:
    """Is the watermark in this frame (BGR, BGRA or gray uint8), and what does it carry?"""
    return score(evidence(luma(frame)), key)
