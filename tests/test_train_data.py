"""Training samples on real faces: crops, warp, mask, flip, seeding, yaw-sorted feeding."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.train.data import Faceset, SampleOptions, YawMatcher, make_loader
from facelab.train.warp import Augment, draw_augment

pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")

RES = 64
NOSE = 30  # iBUG nose tip


@pytest.fixture(scope="module")
def aligned(aligned_faces: Path) -> Path:
    """data_src/aligned of GRID speaker B at 8 fps (24 faces) through the real CLI: the
    session's (conftest's), only read here."""
    return aligned_faces / "data_src" / "aligned"


@pytest.fixture(scope="module")
def faces(aligned: Path) -> Faceset:
    return Faceset(aligned, RES, "full")


@pytest.mark.slow
def test_shapes_ranges_and_target_is_plain_crop(faces: Faceset):
    import cv2

    from facelab.faces.faceimage import read_face
    from facelab.faces.facetype import crop_face

    assert len(faces) >= 20
    s = faces.sample(0, np.random.default_rng(0), SampleOptions())
    assert s.target.shape == s.input.shape == (3, RES, RES) and s.mask.shape == (1, RES, RES)
    for a in s:
        assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    plain = faces.render(3, Augment())  # no jitter, no warp: the unwarped model crop
    image, _ = read_face(faces.paths[3])
    small = cv2.resize(image, (RES, RES), interpolation=cv2.INTER_AREA)  # stored type is full
    ref = crop_face(image, faces.face_to_crop(3), RES).astype(np.float32) / 255
    assert np.abs(plain.target.transpose(1, 2, 0) - ref).mean() < 0.03
    assert np.abs(plain.target.transpose(1, 2, 0) - small / 255).mean() < 0.05  # BGR kept
    assert np.array_equal(plain.input, plain.target)


def test_warp_changes_input_not_target(faces: Faceset):
    rng = np.random.default_rng(5)
    aug = draw_augment(rng, warp=True, flip=False)
    warped = faces.render(1, aug)
    unwarped = faces.render(1, replace(aug, grid=None))
    assert np.array_equal(warped.target, unwarped.target)
    assert np.array_equal(warped.mask, unwarped.mask)
    diff = np.abs(warped.input - warped.target).mean()
    assert 0.005 < diff < 0.2, diff  # moved, but still the same face


def test_mask_covers_nose_not_corners(faces: Faceset):
    from facelab.faces.facetype import transform_points
    from facelab.train.warp import jitter_matrix

    aug = Augment(angle_deg=8, scale=0.9, shift=(0.04, -0.03))
    for i in (0, len(faces) // 2):
        m = faces.render(i, aug).mask[0]
        x, y = np.round(transform_points(faces.crop_landmarks(i), jitter_matrix(aug, RES))[NOSE])
        assert 5 < x < RES - 5 and 5 < y < RES - 5
        assert m[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3].min() > 0.9
        for cy, cx in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
            assert m[cy, cx] == 0
        assert 0.2 < m.mean() < 0.8


def test_half_face_from_full_set(aligned: Path, faces: Faceset):
    half = Faceset(aligned, RES, "half")
    for i in (0, 7):
        f, h = faces.crop_landmarks(i) / RES, half.crop_landmarks(i) / RES
        eyes_f, eyes_h = f[36:48].mean(0)[1], h[36:48].mean(0)[1]
        assert eyes_h < eyes_f - 0.05  # eyes higher in the half-face crop
        span = lambda p: np.linalg.norm(p[45] - p[36])  # noqa: E731
        assert span(h) > 1.25 * span(f)  # and closer: the face fills more of the crop
        assert half.render(i, Augment()).mask.mean() > faces.render(i, Augment()).mask.mean()


def test_flip_mirrors(faces: Faceset):
    aug = draw_augment(np.random.default_rng(2), warp=False, flip=False)
    plain, flipped = faces.render(4, aug), faces.render(4, replace(aug, flip=True))
    # a mirror image up to interpolation rounding, which differs a little between CPUs'
    # OpenCV kernels (a level or three at a few pixels)
    diff = np.abs(flipped.target - plain.target[:, :, ::-1])
    assert diff.max() < 4 / 255 and diff.mean() < 0.25 / 255
    mask_diff = np.abs(flipped.mask - plain.mask[:, :, ::-1])  # anti-aliased edges differ
    assert mask_diff.max() < 0.1 and mask_diff.mean() < 0.002
    assert np.abs(flipped.target - plain.target).mean() > 0.01  # a face is not symmetric
    rng = np.random.default_rng(0)
    flips = [draw_augment(rng, warp=False, flip=True).flip for _ in range(2000)]
    assert 0.36 < np.mean(flips) < 0.44  # DFL's p = 0.4
    assert not any(draw_augment(rng, warp=False, flip=False).flip for _ in range(200))


def _batches(faces: Faceset, workers: int, seed: int, n: int = 3) -> list[dict]:
    it = make_loader(faces, faces, 4, SampleOptions(seed=seed), workers=workers)
    return [next(it) for _ in range(n)]




def test_yaw_sorted_follows_dst():
    rng = np.random.default_rng(0)
    src = rng.uniform(-40, 40, 400)  # src: all poses alike
    dst = np.concatenate([rng.normal(25, 4, 300), rng.normal(-10, 3, 30)])  # dst: mostly right
    matcher = YawMatcher(src, dst, bins=16)
    picked = src[[matcher.draw(rng) for _ in range(3000)]]
    uniform = src[rng.integers(len(src), size=3000)]
    edges = np.linspace(-45, 45, 19)
    hist = lambda y: np.histogram(y, edges)[0] / len(y)  # noqa: E731
    target = hist(dst)
    assert np.abs(hist(picked) - target).sum() < 0.5 * np.abs(hist(uniform) - target).sum()
    gap = YawMatcher(np.array([-30.0, -29, 30]), np.array([0.0, 1, -1]), bins=8)
    assert gap.probs.sum() == pytest.approx(1) and (gap.probs > 0).sum() >= 1  # falls back


def test_errors(faces: Faceset, tmp_path: Path):
    with pytest.raises(FacelabError, match=rf"Batch size 99 .* {len(faces)} faces") as e:
        make_loader(faces, None, 99, SampleOptions(), workers=0)
    assert "\n" not in str(e.value)
    empty = tmp_path / "data_src" / "aligned"
    empty.mkdir(parents=True)
    with pytest.raises(FacelabError, match=r"data_src/aligned holds no faces: run `facelab ex"):
        Faceset(empty, RES, "full")
    with pytest.raises(FacelabError, match="scale"):
        SampleOptions(src_scale=0.5)


@pytest.mark.slow
def test_batches_depend_on_seed_and_index_only(faces: Faceset):
    """The same seed gives the same batches; worker count and start do not change batch i:
    the basis of an exact resume. (One test: each loader with workers starts two spawned
    processes, seconds each, so `a` serves both checks.)"""
    a, b, c = _batches(faces, 2, 5, 4), _batches(faces, 2, 5, 4), _batches(faces, 0, 8)
    assert set(a[0]) == {"src", "src_target", "src_mask", "dst", "dst_target", "dst_mask"}
    for x, y in zip(a, b, strict=True):
        for k in x:
            assert x[k].dtype.is_floating_point and x[k].shape[0] == 4
            assert np.array_equal(x[k].numpy(), y[k].numpy()), k
    assert not np.array_equal(a[0]["src"].numpy(), c[0]["src"].numpy())
    assert not np.array_equal(a[0]["src"].numpy(), a[1]["src"].numpy())
    d = _batches(faces, 0, 8)
    assert np.array_equal(c[2]["dst_mask"].numpy(), d[2]["dst_mask"].numpy())

    none = _batches(faces, 0, 5, 4)
    late = make_loader(faces, faces, 4, SampleOptions(seed=5), workers=2, start=2)
    later = [next(late) for _ in range(2)]
    for x, y in zip(a, none, strict=True):
        assert all(np.array_equal(x[k].numpy(), y[k].numpy()) for k in x)
    for x, y in zip(a[2:], later, strict=True):
        assert all(np.array_equal(x[k].numpy(), y[k].numpy()) for k in x)


def test_every_face_once_per_epoch():
    from facelab.train.data import _Epochs

    order = _Epochs(10, seed=3, side=0)
    first, second = order.take(0, 10), order.take(10, 10)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert order.take(7, 6) == first[7:] + second[:3]
