"""Drawing primitives for synthetic occluders: anti-aliased shapes at sub-pixel precision,
lit and textured surfaces, a camera's soft edge. Pixels, float32 alphas in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Rng = np.random.Generator
SUBPIXEL = 4  # bits of fixed point for OpenCV's anti-aliased drawing


def _fix(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * (1 << SUBPIXEL)).astype(np.int32)


def fill(size: int, polys: Sequence[np.ndarray], alpha: np.ndarray | None = None) -> np.ndarray:
    """Anti-aliased filled polygons (pixels) added into a float32 size² alpha."""
    canvas = np.zeros((size, size), np.uint8)
    for p in polys:  # one at a time: fillPoly's even-odd rule would cut overlaps out
        cv2.fillPoly(canvas, [_fix(p)], 255, cv2.LINE_AA, SUBPIXEL)
    out = canvas.astype(np.float32) / 255
    return out if alpha is None else np.maximum(alpha, out)


def lines(size: int, curves: Sequence[np.ndarray], width: float) -> np.ndarray:
    """Anti-aliased open polylines of `width` pixels as a float32 size² alpha."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.polylines(canvas, [_fix(c) for c in curves], False, 255, max(1, round(width)),
                  cv2.LINE_AA, SUBPIXEL)
    return canvas.astype(np.float32) / 255


def ellipse(centre: np.ndarray, axes: tuple[float, float], angle: float, n: int = 40,
            arc: tuple[float, float] = (0, 2 * np.pi)) -> np.ndarray:
    t = np.linspace(arc[0], arc[1], n, endpoint=arc[1] - arc[0] < 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    return np.c_[x * c - y * s, x * s + y * c] + centre


def capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """A tapered capsule from p0 (radius r0) to p1 (radius r1) as a polygon."""
    d = np.asarray(p1, np.float64) - p0
    a = np.arctan2(d[1], d[0])
    end = ellipse(p1, (r1, r1), 0, 12, (a - np.pi / 2, a + np.pi / 2))
    start = ellipse(p0, (r0, r0), 0, 12, (a + np.pi / 2, a + 3 * np.pi / 2))
    return np.vstack([end, start])


def rounded_rect(centre: np.ndarray, w: float, h: float, r: float, angle: float) -> np.ndarray:
    r = min(r, w / 2, h / 2)
    pts = []
    for cx, cy, a0 in ((w / 2 - r, h / 2 - r, 0), (-w / 2 + r, h / 2 - r, np.pi / 2),
                       (-w / 2 + r, -h / 2 + r, np.pi), (w / 2 - r, -h / 2 + r, 1.5 * np.pi)):
        pts.append(ellipse(np.array([cx, cy]), (r, r), 0, 6, (a0, a0 + np.pi / 2)))
    c, s = np.cos(angle), np.sin(angle)
    p = np.vstack(pts)
    return np.c_[p[:, 0] * c - p[:, 1] * s, p[:, 0] * s + p[:, 1] * c] + centre


def bezier(p: np.ndarray, n: int = 24) -> np.ndarray:
    """Points on the cubic Bézier with control points p (4×2)."""
    t = np.linspace(0, 1, n)[:, None]
    return ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2]
            + t ** 3 * p[3])


def surface(rng: Rng, size: int, colour: np.ndarray, grain: float = 4.0) -> np.ndarray:
    """A lit surface of `colour`: a linear light gradient, low-frequency blotches and
    fine grain, so no occluder is a flat colour (flat colours are too easy to learn)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    phi = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0.1, 0.5) * (xx * np.cos(phi) + yy * np.sin(phi))
    blotch = cv2.resize(rng.normal(0, 0.06, (4, 4)).astype(np.float32), (size, size),
                        interpolation=cv2.INTER_CUBIC)
    out = colour[None, None, :] * (light + blotch)[..., None]
    out += rng.normal(0, grain, (size, size, 1)).astype(np.float32)
    return out.astype(np.float32)


def soften(alpha: np.ndarray, rng: Rng, lo: float = 0.3, hi: float = 0.9) -> np.ndarray:
    """A camera's edge: a slight blur of the coverage (defocus, motion, resampling)."""
    return cv2.GaussianBlur(alpha, (0, 0), rng.uniform(lo, hi))


def cylinders(size: int, bodies: Sequence[tuple[np.ndarray, np.ndarray, float, float]],
              light: np.ndarray, strength: float) -> np.ndarray:
    """Shading (size², 1 = unchanged) of tapered cylinders with round ends (fingers, a
    thumb, a wrist: `capsule`'s (p0, p1, r0, r1)) lit from the unit 3-vector `light`, each
    painted over the ones before it. Each body darkens toward its own silhouette and is
    brighter on the side facing the light, so side-by-side fingers stay apart with a dark
    seam between them, as real fingers do, where one flat shading of their union would
    merge them into a blob."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    shade = np.ones((size, size), np.float32)
    lx, ly, lz = (float(v) for v in light)
    for p0, p1, r0, r1 in bodies:
        d = np.asarray(p1, np.float32) - np.asarray(p0, np.float32)
        n2 = float(d @ d) or 1e-6
        t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / n2, 0, 1)
        vx, vy = xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1])
        r = r0 + (r1 - r0) * t
        ux, uy = vx / r, vy / r
        u2 = ux * ux + uy * uy
        inside = u2 <= 1
        facing = np.clip(ux * lx + uy * ly + np.sqrt(np.clip(1 - u2, 0, 1)) * lz, 0, 1)
        shade[inside] = (1 - strength + strength * facing / max(lz, 0.3))[inside]
    return shade
