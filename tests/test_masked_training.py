"""Masked training (issue 18): a face whose metadata carries a segmenter mask leaves its
occluded pixels out of the training losses; a face without one trains exactly as before.
On GRID speaker A's real aligned faces, with real sample tensors and the real losses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab.faces.faceimage import read_meta, update_meta
from facelab.train.data import Faceset
from facelab.train.losses import image_loss
from facelab.train.warp import Augment, draw_augment, render

RES = 64


@pytest.fixture
def faces(aligned_faces: Path, tmp_path: Path) -> Path:
    """Three of dst's aligned faces, copied."""
    folder = tmp_path / "aligned"
    folder.mkdir()
    for p in sorted((aligned_faces / "data_dst" / "aligned").glob("*.jpg"))[:3]:
        shutil.copy(p, folder / p.name)
    return folder


def with_mask(path: Path, mask: np.ndarray) -> None:
    meta = read_meta(path)
    meta.mask = mask
    update_meta(path, meta)


def occluder(size: int) -> np.ndarray:
    """A segmenter mask: the face kept (255) but for a band over the mouth (0)."""
    mask = np.full((size, size), 255, np.uint8)
    mask[int(size * 0.62):int(size * 0.8), int(size * 0.3):int(size * 0.7)] = 0
    return mask


def augments() -> list[Augment]:
    rng = np.random.default_rng(5)
    return [Augment(), Augment(flip=True), draw_augment(rng, warp=True, flip=True)]


def test_without_masks_samples_are_as_before(faces: Path) -> None:
    fs = Faceset(faces, RES, "whole-face")
    assert fs.occlusions == {}
    for i in range(len(fs)):
        image, mat, lm = fs._load(i)
        for aug in augments():
            got = fs.render_u8(i, aug, mask_blur=True, eyes_mouth=True)
            # the sampler's arguments before masked training existed: no occlusion
            want = render(image, mat, lm, RES, aug, True, True)
            np.testing.assert_array_equal(got.mask, want[2].transpose(2, 0, 1))
            np.testing.assert_array_equal(got.target, want[0].transpose(2, 0, 1))


def test_a_full_mask_changes_nothing(faces: Path) -> None:
    plain = Faceset(faces, RES, "whole-face")
    path = plain.paths[0]
    with_mask(path, np.full((read_meta(path).size,) * 2, 255, np.uint8))
    masked = Faceset(faces, RES, "whole-face")
    assert set(masked.occlusions) == {0}
    for aug in augments():
        a, b = plain.render(0, aug), masked.render(0, aug)
        np.testing.assert_array_equal(a.mask, b.mask)
        t = lambda s: torch.from_numpy(s[None])  # noqa: E731
        pred = t(a.target) * 0.9 + 0.05
        assert torch.equal(image_loss(pred, t(a.target), t(a.mask)),
                           image_loss(pred, t(b.target), t(b.mask)))


def test_occluded_pixels_leave_the_loss(faces: Path) -> None:
    plain = Faceset(faces, RES, "whole-face")
    path = plain.paths[1]
    with_mask(path, occluder(128))  # stored smaller than the face: resized on use
    masked = Faceset(faces, RES, "whole-face")
    for aug in augments()[:2]:
        a, b = plain.render(1, aug), masked.render(1, aug)
        hull, cut = a.mask[0] > 0.99, b.mask[0]
        gone = hull & (cut == 0)  # inside the face, occluded
        assert gone.sum() > 0.08 * hull.sum(), "the band covers part of the face"
        assert (cut <= a.mask[0] + 1e-6).all(), "the mask only ever loses pixels"
        kept = hull & (cut > 0.99)
        assert kept.sum() > 0.5 * hull.sum()
        # a prediction wrong only where the face is occluded: no loss with the mask,
        # a loss without it (the same tensors, the real losses)
        t = lambda s: torch.from_numpy(np.ascontiguousarray(s[None]))  # noqa: E731
        target = t(a.target)
        wrong = target.clone()
        wrong[..., torch.from_numpy(gone)] = 1 - wrong[..., torch.from_numpy(gone)]
        with_occluder = image_loss(wrong, target, t(b.mask)) - image_loss(target, target,
                                                                           t(b.mask))
        without = image_loss(wrong, target, t(a.mask)) - image_loss(target, target, t(a.mask))
        assert float(with_occluder.abs()) < 1e-5
        assert float(without) > 0.1
