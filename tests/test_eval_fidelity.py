"""Face fidelity (eval/fidelity.py): SSIM and face-region PSNR on synthetic images, fast."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.eval import background, fidelity


def texture(seed: int = 0, shape: tuple[int, ...] = (96, 128)) -> np.ndarray:
    """A smooth random texture (structure at several scales), uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    img = sum(cv2.resize(rng.normal(0, 1, (shape[0] // s, shape[1] // s)), shape[::-1],
                         interpolation=cv2.INTER_CUBIC) for s in (2, 4, 8))
    img = (img - img.min()) / np.ptp(img) * 200 + 25
    return img.round().astype(np.uint8)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    a = texture()
    assert fidelity.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(1)
    scores = []
    for sd in (2, 10, 40):
        noisy = (a + rng.normal(0, sd, a.shape)).clip(0, 255).astype(np.uint8)
        scores.append(fidelity.ssim(a, noisy))
    assert scores[0] < 1.0 and scores[0] > scores[1] > scores[2]
    assert scores[2] < 0.5  # heavy noise destroys the structure
    assert fidelity.ssim(a, texture(seed=2)) < 0.3  # another image altogether


def test_ssim_of_flat_images_is_the_luminance_term():
    """Known answer: no variance, so SSIM = (2·μa·μb + C1) / (μa² + μb² + C1)."""
    a, b = np.full((40, 40), 100, np.uint8), np.full((40, 40), 140, np.uint8)
    want = (2 * 100 * 140 + fidelity.C1) / (100**2 + 140**2 + fidelity.C1)
    assert fidelity.ssim(a, b) == pytest.approx(want, rel=1e-9)
    assert want < 0.95


def test_ssim_counts_only_the_mask():
    a = texture()
    b = a.copy()
    b[:, 80:] = 255 - b[:, 80:]  # changed right of x = 80
    mask = np.zeros(a.shape, np.uint8)
    mask[20:70, 10:60] = 255  # ≥ 20 px (> the 5 px half-window) from the change
    assert fidelity.ssim(a, b, mask) == pytest.approx(1.0, abs=1e-12)
    mask[20:70, 70:100] = 255
    assert fidelity.ssim(a, b, mask) < 0.8
    assert np.isnan(fidelity.ssim(a, b, np.zeros_like(mask)))


def face_points(cx: float = 64, cy: float = 48, r: float = 25) -> np.ndarray:
    """68 points whose first 27 ring a round 'face' (all face_fidelity's hull needs)."""
    t = np.linspace(0, 2 * np.pi, 27, endpoint=False)
    ring = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    return np.vstack([ring, np.tile([cx, cy], (41, 1))])


def test_face_fidelity_inside_the_hull_only():
    dst = np.dstack([texture(s) for s in (3, 4, 5)])
    pts = face_points()
    assert fidelity.face_fidelity(dst, dst, pts) == (background.PSNR_CAP, pytest.approx(1.0))
    outside = dst.copy()
    outside[:, :20] = 0  # > 5 px left of the hull (x ≥ 39)
    assert fidelity.face_fidelity(dst, outside, pts) == (background.PSNR_CAP,
                                                          pytest.approx(1.0))
    inside = dst.copy()
    inside[40:56, 56:72] = 255 - inside[40:56, 56:72]
    db, s = fidelity.face_fidelity(dst, inside, pts)
    assert 10 < db < 35 and s < 0.95
