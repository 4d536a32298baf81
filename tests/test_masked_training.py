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
from facelab.train.data import Faceset, SampleOptions, make_loader
from facelab.train.losses import image_loss
from facelab.train.models.options import ModelOptions
from facelab.train.step import side_loss
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
        np.testing.assert_array_equal(a.mask, b.mask[:1])
        assert (b.mask[1] == 1).all(), "the pixels to keep: all of them"
        t = lambda s: torch.from_numpy(s[None])  # noqa: E731
        pred = t(a.target) * 0.9 + 0.05
        assert torch.equal(image_loss(pred, t(a.target), t(a.mask)),
                           image_loss(pred, t(b.target), t(b.mask[:1])))


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
        with_occluder = image_loss(wrong, target, t(b.mask[:1])) - image_loss(target, target,
                                                                           t(b.mask[:1]))
        without = image_loss(wrong, target, t(a.mask)) - image_loss(target, target, t(a.mask))
        assert float(with_occluder.abs()) < 1e-5
        assert float(without) > 0.1


def test_occluded_pixels_leave_the_whole_crop_term_too(faces: Path) -> None:
    """remove_gray_border's loss over the whole crop ignores what the segmenter marked
    occluded (a hand is not learned as the face's border), and only that."""
    path = Faceset(faces, RES, "whole-face").paths[1]
    with_mask(path, occluder(128))
    masked = Faceset(faces, RES, "whole-face")
    s = masked.render(1, Augment())
    keep = s.mask[-1]
    assert 0 < (keep < 0.01).sum() < keep.size / 2
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a[None]))  # noqa: E731
    batch = {"src_target": t(s.target), "src_mask": t(s.mask[:1]), "src_keep": t(s.mask[-1:])}
    mo = ModelOptions(remove_gray_border=True, learn_mask=False)
    loss = lambda pred: float(side_loss({"src_src": pred}, batch, "src", mo))  # noqa: E731
    target = batch["src_target"]
    occluded = torch.from_numpy(keep < 0.01)
    behind_hand = target.clone()
    behind_hand[..., occluded] = 1 - behind_hand[..., occluded]
    assert loss(behind_hand) == pytest.approx(loss(target), abs=1e-6)
    elsewhere = target.clone()
    elsewhere[..., :4, :] = 1 - elsewhere[..., :4, :]  # the crop's top rows: hair, border
    assert loss(elsewhere) > loss(target) + 0.01
    del batch["src_keep"]  # the same batch without the keep channel: the hand is learned
    assert loss(behind_hand) > loss(target) + 1e-3


def test_batches_carry_the_pixels_to_keep_only_with_masks(faces: Path) -> None:
    """The loader's batches: a keep channel beside the eyes-and-mouth one when the faceset
    has segmenter masks (1 on unmasked faces), none without; the masks stay as they were."""
    options = SampleOptions(eyes_mouth=True, random_warp=False, random_flip=False)
    plain = next(make_loader(Faceset(faces, RES, "whole-face"), None, 3, options, workers=0))
    assert "src_keep" not in plain and plain["src_em"].shape == (3, 1, RES, RES)
    with_mask(Faceset(faces, RES, "whole-face").paths[1], occluder(128))
    masked_set = Faceset(faces, RES, "whole-face")
    masked = next(make_loader(masked_set, None, 3, options, workers=0))
    keep = masked["src_keep"]
    assert keep.shape == (3, 1, RES, RES)
    cut = [i for i in range(3) if float((keep[i] < 0.01).float().mean()) > 0.02]
    assert len(cut) == 1, "one face carries a mask: its band is cut, the others are whole"
    whole = [i for i in range(3) if i not in cut]
    assert bool((keep[whole] == 1).all())
    assert torch.equal(masked["src_mask"][whole], plain["src_mask"][whole])
    assert torch.equal(masked["src_em"][whole], plain["src_em"][whole])
    assert bool((masked["src_mask"][cut] <= plain["src_mask"][cut]).all())
