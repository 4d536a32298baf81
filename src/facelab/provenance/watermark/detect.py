"""Detection: find the keyed pattern's position and scale, score it, read the payload.

Per frame: black bars are trimmed (letterbox, pillarbox); for each candidate cell size
(the nominal height/45 and up to 15 % larger, for crops off the top or bottom) the luma is
averaged onto a grid of SAMPLES per cell, high-passed (each sample minus its neighbourhood
mean) and divided by the local spread of that residual, so a textured face and a flat wall
weigh alike and the picture itself mostly cancels. The grid is folded modulo the tile and
cross-correlated with the pilot cells by FFT: every cyclic shift (= any crop offset, at
half-cell steps) at once. The score Z is the correlation peak in standard deviations of all
the other shifts, for A alone and A ± B (a video's frames carry B with a sign that flips in
runs, pattern.frame_sign). Found: Z ≥ Z_THRESHOLD anywhere in that search, or Z ≥ NOMINAL_Z
at the nominal position (scale 1, no shift: a frame that was re-encoded, resized or
letterboxed but not cropped), one hypothesis per mix instead of 8 × 4,096, hence the lower
threshold. A video's frames are summed before scoring (clip.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from facelab.provenance.watermark import code, pattern

Z_THRESHOLD = 7.0  #: calibrated on real unmarked frames: see docs/WATERMARK.md
NOMINAL_Z = 5.0  #: at the nominal position only (docs/WATERMARK.md)
#: a clip's temporal sum: higher, for its PERIOD× more hypotheses (docs/WATERMARK.md)
TEMPORAL_Z_THRESHOLD = 8.0
TEMPORAL_NOMINAL_Z = 5.25
#: candidate cell sizes / nominal: exactly 1 (re-encoded, resized, letterboxed) and a
#: range for crops off the top or bottom
SCALES = tuple(sorted({1.0, *(float(s) for s in np.geomspace(0.985, 1.15, 7))}))
NOMINAL = SCALES.index(1.0)
Mix = tuple[float, float]  # weights of pattern A and pattern B in a template
#: a single frame: A ± B as embedded, or A alone (just after a flip, unrefreshed static
#: parts still carry the old sign of B)
FRAME_MIXES: tuple[Mix, ...] = ((1.0, 0.0), (pattern.A_WEIGHT, pattern.B_WEIGHT),
                                (pattern.A_WEIGHT, -pattern.B_WEIGHT))
TEMPORAL_MIXES: tuple[Mix, ...] = ((0.0, 1.0),)  #: the sign-weighted sum: B alone
N = pattern.TILE * pattern.SAMPLES  # detection tile side in samples
HP_SIGMA = 1.0  # samples: the neighbourhood whose mean is removed
#: samples: the neighbourhood whose spread normalises (measured: 3.0 → 1.0, with HP_SIGMA
#: 1.2 → 1.0, raised the weakest GRID frame's Z from 4.4 to 5.5 after CRF 30 + 50 %)
SPREAD_SIGMA = 1.0
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
    nominal: bool = False  # found at the nominal position (against NOMINAL_Z)
    at: tuple[int, int, int] = (0, 0, 0)  # where: (index into SCALES, dy, dx) on the tile
    mix: Mix = (1.0, 0.0)  # the template it was found with
    nominal_score: float = 0.0  # Z at the nominal position, best mix (whether found or not)
    #: the payload's soft chips where found (None: not found): a payload whose CRC fails
    #: can still be matched against known candidates (`code.match`, the manifest store)
    soft: np.ndarray | None = field(default=None, compare=False, repr=False)


def _hp(x: np.ndarray) -> np.ndarray:
    return x - cv2.GaussianBlur(x, (0, 0), HP_SIGMA, borderType=cv2.BORDER_REFLECT)


def _hp_cyclic(x: np.ndarray) -> np.ndarray:
    """`_hp` of one period of a periodic image (OpenCV's blur has no wrap-around border)."""
    n = x.shape[0]
    return _hp(np.tile(x, (3, 3)))[n:2 * n, n:2 * n]


@dataclass(frozen=True)
class _Templates:
    """One pattern's matched filters."""

    pilot_f: np.ndarray  # conj FFT of the high-passed pilot template
    data: np.ndarray  # high-passed data template, chips only (payload bits taken as 0)
    lay: pattern.Layout


@lru_cache(maxsize=4)
def _templates(key: bytes) -> tuple[_Templates, ...]:
    out = []
    for which in range(pattern.PATTERNS):
        lay = pattern.layout(key, which)
        pilot = np.where(lay.pilot, lay.chips, 0).astype(np.float32)
        data = np.where(lay.pilot, 0, lay.chips).astype(np.float32)
        tp = _hp_cyclic(pattern.tile_template(pilot))
        td = _hp_cyclic(pattern.tile_template(data))
        out.append(_Templates(np.conj(np.fft.rfft2(tp)), td, lay))
    return tuple(out)


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
          mixes: tuple[Mix, ...] = FRAME_MIXES, threshold: float = Z_THRESHOLD,
          nominal_threshold: float = NOMINAL_Z) -> Detection:
    """The detection for summed `evidence` (one frame's or many frames'), scored against
    each of `mixes` of patterns A and B: the whole search against `threshold`, the nominal
    position against `nominal_threshold`."""
    ts = _templates(pattern.key_bytes(key))
    best = (-np.inf, 0, 0, 0, mixes[0])
    nom = (-np.inf, mixes[0])
    for i in range(len(SCALES)):
        cs = _maps(ev[i], ts)
        for mix in mixes:
            c = _mixed(cs, mix)
            sd = float(c.std())
            if sd < 1e-6:
                continue
            mean = float(c.mean())
            k = int(np.argmax(c))
            z = (float(c.flat[k]) - mean) / sd
            if z > best[0]:
                best = (z, i, *divmod(k, N), mix)
            if i == NOMINAL and (zn := (float(c[0, 0]) - mean) / sd) > nom[0]:
                nom = (zn, mix)
    z, i, dy, dx, mix = best
    if not np.isfinite(z):
        return Detection(False, 0.0, None, frames=frames)
    nominal = z < threshold and nom[0] >= nominal_threshold
    if nominal:
        z, i, dy, dx, mix = nom[0], NOMINAL, 0, 0, nom[1]
    found = nominal or z >= threshold
    soft = soft_bits(ev[i], (dy, dx), mix, key) if found else None
    payload = code.decode(soft) if soft is not None else None
    return Detection(found, round(z, 2), payload, SCALES[i], frames, nominal, (i, dy, dx), mix,
                     round(nom[0], 2), soft)


def _maps(ev: np.ndarray, ts: tuple[_Templates, ...]) -> list[np.ndarray]:
    """One scale's evidence cross-correlated with each pattern's pilot cells (every shift)."""
    f = np.fft.rfft2(ev)
    return [np.fft.irfft2(f * t.pilot_f, s=(N, N)) for t in ts]


def _mixed(maps: list[np.ndarray], mix: Mix) -> np.ndarray:
    return mix[0] * maps[0] + mix[1] * maps[1]


def z_at(ev: np.ndarray, at: tuple[int, int, int], mix: Mix,
         key: bytes | str = pattern.DEFAULT_KEY) -> float:
    """Z of `mix` at one position `at` of summed `evidence` (the other shifts as null)."""
    c = _mixed(_maps(ev[at[0]], _templates(pattern.key_bytes(key))), mix)
    sd = float(np.std(c))
    return (float(c[at[1], at[2]]) - float(np.mean(c))) / sd if sd > 1e-6 else 0.0


def soft_bits(ev: np.ndarray, shift: tuple[int, int], mix: Mix,
              key: bytes | str = pattern.DEFAULT_KEY) -> np.ndarray:
    """Soft value of each coded bit (for `code.decode`) from one scale's evidence: the
    aligned evidence against each data cell's chip, from each pattern in `mix` (both carry
    the same coded bits), divided by the evidence's spread so that the soft values of
    different sums can be weighed against each other."""
    ts = _templates(pattern.key_bytes(key))
    aligned = np.roll(ev, (-shift[0], -shift[1]), axis=(0, 1))
    soft = np.zeros(code.CODED_BITS)
    for w, t in zip(mix, ts, strict=True):
        if w == 0:
            continue
        per = (aligned * t.data).reshape(pattern.TILE, pattern.SAMPLES, pattern.TILE,
                                         pattern.SAMPLES).sum(axis=(1, 3))
        bits = t.lay.bit.ravel()
        data = bits >= 0
        soft += w * np.bincount(bits[data], weights=per.ravel()[data],
                                minlength=code.CODED_BITS)
    return soft / max(float(np.std(ev)), 1e-6)


def detect(frame: np.ndarray, key: bytes | str = pattern.DEFAULT_KEY) -> Detection:
    """Is the watermark in this frame (BGR, BGRA or gray uint8), and what does it carry?"""
    return score(evidence(luma(frame)), key)
