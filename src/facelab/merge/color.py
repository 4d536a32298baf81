"""Colour transfer of the predicted face toward the dst face: DeepFaceLab's `--color` modes.

Every transfer is a pure function `(face, ref, mask) -> face` on float32 BGR crops in [0, 1]
(`face`: the model's prediction, `ref`: the dst face crop, `mask`: H×W in [0, 1]). The
statistics come only from pixels where mask > 0.5, because hair, background and the neck
differ between the two crops and would pull the face's colour toward theirs; if the mask holds
fewer than `MIN_MASKED` pixels the whole crop is used instead. The result covers the whole
crop: the merger applies its own (feathered) mask afterwards, so the edge must be transferred
too. Written from the papers (Reinhard 2001; Pitié 2005, 2007; Bonneel 2015), seeded where
random, so a merge is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from facelab.errors import FacelabError

Transfer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

MIN_MASKED = 64  # fewer masked pixels than this: statistics of the whole crop
_COV_EPS = 1e-6  # added to covariances' diagonals (std ≈ 0.25/255): flat channels stay finite
_BINS = 256  # histogram bins of a 1-D distribution in idt / sot


def _selection(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Flat boolean index of the pixels the statistics come from."""
    if mask.shape != shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match the face {shape[:2]}")
    sel = mask.reshape(-1) > 0.5
    if np.count_nonzero(sel) < MIN_MASKED:
        sel = np.ones_like(sel)
    return sel


def _check(face: np.ndarray, ref: np.ndarray) -> None:
    if face.ndim != 3 or face.shape[2] != 3 or face.shape != ref.shape:
        raise ValueError(f"face {face.shape} and ref {ref.shape} must be equal H×W×3 shapes")


def _finish(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.clip(x.reshape(shape), 0.0, 1.0).astype(np.float32, copy=False)


def none(face: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """No transfer: the prediction as it is."""
    return face


def rct(face: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard: match each L*a*b* channel's mean and standard deviation.

    Lab's channels are nearly decorrelated for natural images, so three independent 1-D
    moment matches move the colour cast and contrast without inventing hues. The moments
    come from `cv2.meanStdDev` (double sums, no selected copy) and the mapping is one
    multiply-add in float32: a quarter of the cost of numpy's per-column float64 path,
    the same result within 1e-4 Lab units.
    """
    _check(face, ref)
    sel = _selection(mask, face.shape).reshape(face.shape[:2]).view(np.uint8)
    src = cv2.cvtColor(face.astype(np.float32, copy=False), cv2.COLOR_BGR2LAB)
    dst = cv2.cvtColor(ref.astype(np.float32, copy=False), cv2.COLOR_BGR2LAB)
    s_mu, s_sd = (v.ravel() for v in cv2.meanStdDev(src, mask=sel))
    d_mu, d_sd = (v.ravel() for v in cv2.meanStdDev(dst, mask=sel))
    scale = d_sd / np.maximum(s_sd, 1e-3)
    lab = src * scale.astype(np.float32)
    lab += (d_mu - s_mu * scale).astype(np.float32)
    np.clip(lab, _LAB_LO, _LAB_HI, out=lab)
    return _finish(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), face.shape)


_LAB_LO = np.array([0.0, -127.0, -127.0], np.float32)  # L*, a*, b* bounds of rct's result
_LAB_HI = np.array([100.0, 127.0, 127.0], np.float32)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance, the covariance regularised so its inverse root stays bounded."""
    x = x.astype(np.float64)
    return x.mean(0), np.cov(x, rowvar=False) + _COV_EPS * np.eye(3)


def _sqrtm(c: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Symmetric square root (or its inverse) of a positive semi-definite matrix."""
    w, v = np.linalg.eigh(c)
    w = np.sqrt(np.maximum(w, 1e-18))
    return (v / w) @ v.T if inverse else (v * w) @ v.T


def _apply_linear(face: np.ndarray, t: np.ndarray, s_mu: np.ndarray,
                  d_mu: np.ndarray) -> np.ndarray:
    x = face.reshape(-1, 3).astype(np.float32)
    y = (x - s_mu.astype(np.float32)) @ t.T.astype(np.float32) + d_mu.astype(np.float32)
    return _finish(y, face.shape)


def lct(face: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Linear colour transfer: x' = Cd^½ Cs^-½ (x - μs) + μd in BGR.

    Matches the mean and the full 3×3 covariance (channel correlations included, which rct's
    per-channel match ignores), using the symmetric (PCA) square roots.
    """
    _check(face, ref)
    sel = _selection(mask, face.shape)
    s_mu, s_cov = _moments(face.reshape(-1, 3)[sel])
    d_mu, d_cov = _moments(ref.reshape(-1, 3)[sel])
    t = _sqrtm(d_cov) @ _sqrtm(s_cov, inverse=True)
    return _apply_linear(face, t, s_mu, d_mu)


def mkl(face: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Monge–Kantorovitch linear transfer (Pitié & Kokaram 2007).

    T = Cs^-½ (Cs^½ Cd Cs^½)^½ Cs^-½ also maps Cs onto Cd, but it is the one linear map that
    moves colours least (the optimal transport between the two Gaussians), so hues shift less
    than with lct's arbitrary square root.
    """
    _check(face, ref)
    sel = _selection(mask, face.shape)
    s_mu, s_cov = _moments(face.reshape(-1, 3)[sel])
    d_mu, d_cov = _moments(ref.reshape(-1, 3)[sel])
    s_half, s_inv_half = _sqrtm(s_cov), _sqrtm(s_cov, inverse=True)
    t = s_inv_half @ _sqrtm(s_half @ d_cov @ s_half) @ s_inv_half
    return _apply_linear(face, t, s_mu, d_mu)


def _match_axes(proj: np.ndarray, n: int, ref_proj: np.ndarray) -> np.ndarray:
    """Displacement along each row (a 1-D projection of every pixel, the n masked ones
    first) that maps the masked source's distribution onto ref's: histogram matching on
    _BINS bins spanning both, with piecewise-linear CDFs.

    Histograms (one bincount for all rows) instead of sorting, and rows rather than columns
    (numpy reduces contiguous rows ~100× faster), keep idt and sot fast. Pixels outside the
    masked range (unmasked ones only) move like the nearest extreme.
    """
    k = proj.shape[0]
    src = proj[:, :n]
    lo = np.minimum(src.min(1), ref_proj.min(1))[:, None]
    hi = np.maximum(src.max(1), ref_proj.max(1))[:, None]
    scale = _BINS / np.maximum(hi - lo, 1e-6)

    def cdf(values: np.ndarray) -> np.ndarray:
        """(k, _BINS + 1) cumulative fractions at the bin edges."""
        idx = np.minimum(((values - lo) * scale).astype(np.int32), _BINS - 1)
        idx += np.arange(k)[:, None] * _BINS
        hist = np.bincount(idx.ravel(), minlength=k * _BINS).reshape(k, _BINS)
        # a floor of 0.1 % of the mass spread over all bins: no empty bin, so the CDF is
        # strictly increasing and its inverse unique (equal inputs map exactly to themselves)
        floor = 1e-3 * values.shape[1] / _BINS
        out = np.zeros((k, _BINS + 1))
        np.cumsum(hist + floor, axis=1, out=out[:, 1:])
        return out / out[:, -1:]

    c_src, c_ref = cdf(src), cdf(ref_proj)
    edges = np.arange(_BINS + 1, dtype=np.float64)
    lut = np.stack([np.interp(c_src[j], c_ref[j], edges) for j in range(k)])
    move = ((lut - edges) / scale).astype(np.float32).ravel()  # displacement at each edge
    pos = np.clip((proj - lo) * scale, 0.0, _BINS).astype(np.float32)
    i = np.minimum(pos.astype(np.int32), _BINS - 1)
    frac = pos - i.astype(np.float32)
    i += np.arange(k)[:, None] * (_BINS + 1)
    return move[i] + frac * (move[i + 1] - move[i])


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random orthonormal basis (QR of a Gaussian matrix, signs fixed): its
    rows are the axes of one idt iteration."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _masked_first(face: np.ndarray, ref: np.ndarray, mask: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """face's pixels as 3 × N with the masked ones first, ref's masked pixels as 3 × n, n,
    and the permutation that was applied (row slices stay contiguous, unlike a boolean
    index)."""
    sel = _selection(mask, face.shape)
    order = np.argsort(~sel, kind="stable")
    x = np.ascontiguousarray(face.reshape(-1, 3)[order].T, dtype=np.float32)
    r = np.ascontiguousarray(ref.reshape(-1, 3)[sel].T, dtype=np.float32)
    return x, r, int(np.count_nonzero(sel)), order


def _restore(x: np.ndarray, order: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo _masked_first's permutation: H×W×3 again."""
    out = np.empty((x.shape[1], 3), np.float32)
    out[order] = x.T
    return out.reshape(shape)


def idt(face: np.ndarray, ref: np.ndarray, mask: np.ndarray, iterations: int = 20,
        relaxation: float | None = None, seed: int = 0) -> np.ndarray:
    """Iterative distribution transfer (Pitié, Kokaram & Dahyot 2005).

    Each iteration rotates the colour space randomly and matches the three 1-D marginals by
    histogram matching; the full 3-D distribution moves toward ref's, not only its first two
    moments. Each iteration moves by `relaxation` of its match: DeepFaceLab's 1/iterations
    (the default, None) is a gentle, partial transfer (about 1 - (1 - 1/20)^20 ≈ 64 % of
    the way) without the grain a full match leaves where the mapping is steep; 1.0 is the
    paper's full step, which converges to ref's distribution.
    """
    _check(face, ref)
    x, r, n, order = _masked_first(face, ref, mask)
    rng = np.random.default_rng(seed)
    step = np.float32(1.0 / max(iterations, 1) if relaxation is None else relaxation)
    for _ in range(iterations):
        rot = _rotation(rng)  # rows: the new axes
        x += rot.T @ (_match_axes(rot @ x, n, rot @ r) * step)
    return _finish(_restore(x, order, face.shape), face.shape)


def sot(face: np.ndarray, ref: np.ndarray, mask: np.ndarray, steps: int = 10,
        batch: int = 5, smooth: float = 16.0, seed: int = 0) -> np.ndarray:
    """Sliced optimal transport (Rabin et al. 2011; Bonneel et al. 2015).

    Each step projects the colours on `batch` random directions, matches each projection's
    1-D distribution to ref's and moves by the mean of those displacements: a gradient step
    on the sliced Wasserstein distance; DeepFaceLab's defaults, 10 steps of 5. The total
    displacement is then blurred over the crop (Gaussian σ = `smooth` px; DeepFaceLab's bilateral
    filter with a 5.0 range σ on [0, 1] colours is nearly the same blur) so neighbouring pixels move
    alike and no grain appears; 0 turns it off.
    """
    _check(face, ref)
    x, r, n, order = _masked_first(face, ref, mask)
    x0 = x.copy()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        dirs = rng.standard_normal((batch, 3)).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        x += dirs.T @ _match_axes(dirs @ x, n, dirs @ r) / batch
    moved = _restore(x - x0, order, face.shape)
    if smooth > 0:
        moved = cv2.GaussianBlur(moved, (0, 0), smooth)
    return _finish(face + moved, face.shape)


COLOR_TRANSFERS: dict[str, Transfer] = {
    "none": none, "rct": rct, "lct": lct, "mkl": mkl, "idt": idt, "sot": sot,
}


def transfer(name: str, face: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Apply the colour transfer registered as `name` (one of COLOR_TRANSFERS)."""
    try:
        fn = COLOR_TRANSFERS[name]
    except KeyError:
        raise FacelabError(f"Colour transfer must be one of {', '.join(COLOR_TRANSFERS)}, "
                           f"not {name!r}.") from None
    return fn(face, ref, mask)
