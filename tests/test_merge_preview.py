"""The merge preview (merge/preview.py) against the real `facelab merge`, and frame ranges
(merge/ranges.py) in a real merge: the session's quick swap (GRID, dst kept in its video)
with a tiny SAE model beside its quick96 (the same predictor code at a fraction of the
cost), merged once to frames with one range of frames at its own options."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.merge.merger import merge
from facelab.merge.options import MergeOptions
from facelab.merge.preview import Previewer
from facelab.merge.ranges import Range, load_ranges, options_for, save_ranges, set_range
from facelab.progress import NullReporter
from facelab.workspace import Workspace
from tests.conftest import Swapped, run_facelab

pytestmark = pytest.mark.slow  # a real model on real frames

FIRST, LAST = 20, 29  # the range's frames
THEIRS = {"erode": 40, "color": "mkl"}
MODEL = "t"


def _linked_copy(src: Path, dest: Path) -> Workspace:
    """A copy sharing the files' data (merge only ever writes new files and renames them
    into place), without merge outputs, locks or trash."""
    shutil.copytree(src, dest, copy_function=os.link, ignore=shutil.ignore_patterns(
        "merged", "merged_video", ".locks", ".trash"))
    return Workspace(dest)


def _tiny_model(ws: Workspace) -> None:
    """A 64-px SAE (randomly initialised, saved by the real checkpoint code): predicting
    75 faces takes a second where quick96 takes 20 on two cores."""
    import torch

    from facelab.train import checkpoint
    from facelab.train.models import build_model, preset
    from facelab.train.saved import fixed_of

    torch.manual_seed(0)
    mo = preset("sae", ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=8, resolution=64)
    checkpoint.save(ws.model_dir, MODEL, build_model(mo), None,
                    {"iteration": 1, "options": asdict(mo), "family": "sae"}, arch=mo.arch,
                    fixed_options=fixed_of(mo))


@pytest.fixture(scope="module")
def ws(tmp_path_factory, quick_swap: Swapped) -> Workspace:
    """quick_swap's workspace with frames 20-29 given their own options, merged
    --to-frames by the real CLI in one process (the preview's thread count)."""
    w = _linked_copy(quick_swap.ws, tmp_path_factory.mktemp("preview") / "ws")
    _tiny_model(w)
    save_ranges(w, [Range(FIRST, LAST, THEIRS)])
    res = run_facelab("-w", w.root, "merge", "--model-name", MODEL, "--to-frames",
                      "--workers", "1")
    assert res.rc == 0, res.err
    assert f"{LAST - FIRST + 1} frame(s) took their options" in res.out, res.out
    return w


@pytest.fixture(scope="module")
def pv(ws: Workspace) -> Iterator[Previewer]:
    with pytest.raises(FacelabError, match="Name the model to preview"):
        Previewer(ws)  # two models
    with Previewer(ws, MODEL, to_video=False) as p:  # the batches of a merge to frames
        yield p


def _merged(ws: Workspace, n: int) -> np.ndarray:
    return cv2.imread(str(ws.merged_dir / f"{n:05d}.png"), cv2.IMREAD_UNCHANGED)


def test_the_preview_is_the_merged_frame_bit_for_bit(ws: Workspace, pv: Previewer):
    ranges = load_ranges(ws)
    last = len(pv.names)
    for n in (1, FIRST - 1, FIRST, 25, LAST, LAST + 1, last):
        got = pv.render(n, options_for(n, MergeOptions(), ranges))
        want = _merged(ws, n)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.array_equal(got, want), (n, int((got != want).any(axis=-1).sum()))


def test_a_range_s_options_apply_to_its_frames_only(ws: Workspace, pv: Previewer):
    for n in (FIRST - 1, FIRST, LAST, LAST + 1):
        same = np.array_equal(pv.render(n, MergeOptions()), _merged(ws, n))
        assert same == (not FIRST <= n <= LAST), n


def test_changing_erode_changes_the_face_only(pv: Previewer):
    base = pv.render(FIRST, MergeOptions())
    eroded = pv.render(f"{FIRST:05d}.png", MergeOptions(erode=60))
    changed = (base != eroded).any(axis=-1)
    assert 200 < changed.sum() < changed.size / 4  # the face's blend, not the frame
    assert np.array_equal(pv.render(FIRST, MergeOptions()), base)  # from the caches
    with pytest.raises(FacelabError, match="no frame"):
        pv.render(10_000, MergeOptions())


def test_a_changed_range_remakes_only_its_frames(ws: Workspace, pv: Previewer, tmp_path):
    w = _linked_copy(ws.root, tmp_path / "ws")
    shutil.copytree(ws.merged_dir, w.merged_dir, copy_function=os.link)
    before = {p.name: p.read_bytes() for p in w.merged_dir.glob("*.png")}
    save_ranges(w, set_range(load_ranges(w), FIRST, LAST, {"erode": -30}))
    rep = merge(w, MODEL, MergeOptions(), NullReporter(), workers=1, to_video=False)
    assert (rep.merged_now, rep.ranged) == (LAST - FIRST + 1, LAST - FIRST + 1)
    after = {p.name: p.read_bytes() for p in w.merged_dir.glob("*.png")}
    remade = sorted(k for k in after if after[k] != before[k])
    assert remade == [f"{n:05d}.png" for n in range(FIRST, LAST + 1)]
    for n in (FIRST, LAST):
        # made in a smaller batch than a whole-clip merge: the model's float rounding may
        # differ in its last bit, a grey level at most
        diff = np.abs(pv.render(n, MergeOptions(erode=-30)).astype(int) - _merged(w, n))
        assert diff.max() <= 1
