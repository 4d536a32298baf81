"""`facelab train --preset meshswap` on real GRID faces: the index step, refiner steps that
lower the loss, the shared run semantics (stop, save, exact resume, preview), refiner-less
saves, and bad input or mixed-up families refused in one line."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.cli import train_prompts as prompts
from facelab.errors import FacelabError
from facelab.meshswap.options import MeshSwapOptions
from facelab.progress import NullReporter
from facelab.train.preview import PLOT_HEIGHT
from facelab.train.run_options import TrainOptions
from facelab.workspace import Workspace
from tests.conftest import assert_one_line_error, copy_workspace, run_facelab, run_in_process

#: Small and quick; "full" because the session's faces are extracted with the default type.
TINY = {"resolution": 64, "face_type": "full", "refiner_dims": 8, "refiner": True}
RUN = dict(precision="fp32", device="cpu", workers=0, preview_every=0, log_every=5,
           backup_every=0)


def _opts(name: str, **kw: object) -> TrainOptions:
    base: dict[str, object] = dict(model_name=name, preset="meshswap", overrides=dict(TINY),
                                   batch_size=2, **RUN)
    return TrainOptions(**{**base, **kw})  # type: ignore[arg-type]


def _resume(name: str, **kw: object) -> TrainOptions:
    return _opts(name, **{"preset": None, "overrides": {}, "batch_size": None, **kw})


# --- options and questions, without data -----------------------------------------------------


def test_options_accept_meshswap_and_name_the_foreign_option() -> None:
    assert TrainOptions(model_name="m", preset="MeshSwap", overrides={"candidates": 2})
    with pytest.raises(FacelabError, match=r"^--ae-dims is not a meshswap option"):
        TrainOptions(model_name="m", preset="meshswap", overrides={"ae_dims": 64})
    with pytest.raises(FacelabError, match=r"--candidates, --refiner are not options of SAE"):
        TrainOptions(model_name="m", preset="quick96",
                     overrides={"candidates": 2, "refiner": False})
    with pytest.raises(FacelabError, match="--candidates must be a whole number from 1 to 16"):
        TrainOptions(model_name="m", overrides={"candidates": 40})  # a resume: either family
    with pytest.raises(FacelabError, match="--preset must be one of"):
        TrainOptions(model_name="m", preset="meshswop")
    from facelab.swap import SwapOptions

    files = {"src": Path("a.mp4"), "dst": Path("b.mp4"), "output": Path("o.mp4")}
    assert SwapOptions(**files, preset="meshswap").preset == "meshswap"
    assert SwapOptions(**files).preset == "meshswap"  # the default, as measured


def test_interactive_asks_meshswap_questions() -> None:
    answers = iter(["meshswap", "?", "80", "", "2", "y", "n"])  # then end of input: defaults
    asked, said = [], []

    def ask_line(prompt: str) -> str | None:
        asked.append(prompt)
        return next(answers, None)

    got = prompts.new_model_answers("quick96", {"batch_size": 3}, ask_line, said.append)
    assert got["preset"] == "meshswap" and got["resolution"] == 80 and got["candidates"] == 2
    assert got["shade"] is True and got["refiner"] is False and got["batch_size"] == 3
    assert said[0] == prompts.MESHSWAP_NEW[0].help and "Ae" not in "".join(asked)
    assert MeshSwapOptions(**{k: v for k, v in got.items() if k != "preset"}).resolution == 80
    answers, asked = iter(["3"]), []
    resumed = prompts.resume_answers(dict(got), {}, ask_line, said.append)
    assert resumed == {"candidates": 3, "shade": True, "batch_size": 3, "target_iteration": 0}
    assert [a.split(" [")[0] for a in asked] == ["Candidates", "Shade", "Batch size",
                                                  "Target iteration"]


# --- training on real faces ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory, full_src_faces: Path) -> Workspace:
    """GRID speaker B's every frame as src (its blinks and open mouths: retrieval needs
    them), the session's speaker A faces as dst (conftest's, copied)."""
    return Workspace(copy_workspace(full_src_faces,
                                    tmp_path_factory.mktemp("meshswap_train") / "ws"))


def _model(ws: Workspace, name: str):
    """The save of `name` loaded into a fresh MeshSwapModel (the RNG left alone)."""
    from facelab.meshswap.model import MeshSwapModel, model_counts
    from facelab.train import checkpoint
    from facelab.train.saved import read_saved

    saved = read_saved(ws.model_dir, name)
    assert saved is not None and saved.family == "meshswap"
    model = MeshSwapModel(MeshSwapOptions(**saved.state["options"]),
                          *model_counts(saved.doc["fixed_options"]))
    checkpoint.load(ws.model_dir, name, model, None, expected_arch="meshswap",
                    fixed_options={}, warn=print, restore_rng=False)
    return model


def _held_out_loss(model) -> float:
    """The refiner's loss on fixed batches no training run draws (generator seed 99)."""
    import torch

    with torch.no_grad():
        return float(np.mean([model.loss(model.train_batch(np.random.default_rng([99, i]), 8))
                              .item() for i in range(3)]))


@pytest.mark.slow
def test_short_run_lowers_the_loss_and_previews(ws: Workspace) -> None:
    stop = threading.Event()
    stop.set()  # a new model stopped at once: the index is built and saved at iteration 0
    rep = train_(ws, _opts("loss"), stop)
    assert (rep.iteration, rep.stopped, rep.family) == (0, True, "meshswap")
    before = _held_out_loss(_model(ws, "loss"))
    rep = train_(ws, _resume("loss", target_iteration=20, preview_every=10, batch_size=4))
    assert (rep.start_iteration, rep.iteration, rep.stopped) == (0, 20, False)
    after = _held_out_loss(_model(ws, "loss"))
    assert after < before - 1e-3, (before, after)
    doc = json.loads((ws.model_dir / "loss_state.json").read_text())
    st = doc["state"]
    assert st["family"] == "meshswap" and st["iteration"] == 20 and len(st["history"]) == 4
    assert all(row[1] == row[2] for row in st["history"])  # one loss, in both places
    assert doc["fixed_options"]["faces"] == 75 and doc["fixed_options"]["refiner"] is True
    image = cv2.imread(str(rep.preview))
    assert rep.preview == ws.model_dir / "loss_preview.png"
    assert image.shape == (4 * 64 + PLOT_HEIGHT, 4 * 64, 3)


def train_(ws: Workspace, opts: TrainOptions, stop: threading.Event | None = None, **kw):
    from facelab.train.trainer import train

    return train(ws, opts, NullReporter(), stop, **kw)


@pytest.mark.slow
def test_preview_rows_show_what_the_refiner_works_from(ws: Workspace) -> None:
    import torch

    from facelab.meshswap.train import render_preview

    train_(ws, _opts("rows", overrides={**TINY, "refiner": False}))
    model = _model(ws, "rows")
    grid = render_preview(model, seed=0, count=3).astype(np.float32) / 255
    assert grid.shape == (4 * 64, 3 * 64, 3)
    batch = model.train_batch(np.random.default_rng([0, 1 << 20]), 3)
    target = torch.cat(list(batch["target"]), dim=2).permute(1, 2, 0).numpy()
    warp = torch.cat(list(batch["warp"]), dim=2).permute(1, 2, 0).numpy()
    rows = [grid[r * 64:(r + 1) * 64, :] for r in range(4)]
    below = (slice(20, None), slice(None))  # under each row's label
    assert np.abs(rows[3][below] - target[below]).max() < 1.5 / 255  # the faces themselves
    assert np.abs(rows[1][below] - warp[below]).max() < 1.5 / 255  # the refiner's input
    assert np.abs(rows[2][below] - rows[1][below]).max() < 1.5 / 255  # no refiner: the warp
    crops = model.src_crops.numpy().astype(np.float32)[:, 20:] / 255
    for c, i in enumerate(batch["index"].tolist()):  # the retrieved face: another src face
        tile = rows[0][20:, c * 64:(c + 1) * 64]
        diff = np.abs(crops - tile).mean(axis=(1, 2, 3))
        assert diff.min() < 1 / 255 and int(diff.argmin()) != i


@pytest.mark.slow
def test_stop_saves_and_resume_is_exact(ws: Workspace) -> None:
    from safetensors.torch import load_file

    stop = threading.Event()
    rep = train_(ws, _opts("halves"), stop, on_log=lambda *_: stop.set())
    assert rep.stopped and rep.iteration == 5
    assert json.loads((ws.model_dir / "halves_state.json").read_text())["state"][
        "iteration"] == 5
    rep = train_(ws, _resume("halves", target_iteration=8, workers=2))
    assert (rep.resumed, rep.start_iteration, rep.iteration) == (True, 5, 8)
    train_(ws, _opts("straight", target_iteration=8))
    a = load_file(ws.model_dir / "straight_weights.safetensors")
    b = load_file(ws.model_dir / "halves_weights.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    with pytest.raises(FacelabError, match="already at iteration 8"):
        train_(ws, _resume("halves", target_iteration=8))
    with pytest.raises(FacelabError, match="refiner_dims cannot change"):
        train_(ws, _resume("halves", overrides={"refiner_dims": 16}, target_iteration=9))
    with pytest.raises(FacelabError, match="is a meshswap model, not quick96"):
        train_(ws, _opts("halves", preset="quick96", overrides={}))


@pytest.mark.slow
def test_without_refiner_the_build_is_a_usable_save(ws: Workspace) -> None:
    rep = train_(ws, _opts("warp", overrides={**TINY, "refiner": False}, preview_every=100,
                           target_iteration=50))
    assert (rep.iteration, rep.stopped, rep.losses) == (0, False, [])
    assert rep.preview is not None and rep.preview.is_file()
    model = _model(ws, "warp")
    assert model.refiner is None and model.faces == 75
    batch = model.train_batch(np.random.default_rng(3), 4)  # other src faces onto these
    face = batch["mask"] > 0.5
    err = (batch["warp"] - batch["target"]).abs().mean(1, keepdim=True)[face].mean()
    assert float(err) < 0.04  # the warp of other src faces looks like the face (~0.02)
    again = train_(ws, _resume("warp"))  # nothing to train: returns at once
    assert (again.resumed, again.iteration, again.losses) == (True, 0, [])
    # a changeable option changed on a rerun is saved, so merge uses it
    from facelab.merge.predictor import model_info

    assert model_info(ws.model_dir, "warp").blend == "overlay"  # shaded by default
    train_(ws, _resume("warp", overrides={"shade": False, "candidates": 2}))
    info = model_info(ws.model_dir, "warp")
    assert info.blend == "seamless" and _model(ws, "warp").opts.candidates == 2


@pytest.mark.slow
def test_too_small_src_faceset_is_one_line(ws: Workspace, tmp_path: Path) -> None:
    small = copy_workspace(ws.root, tmp_path / "small")
    src = small / "data_src" / "aligned"
    for face in sorted(src.glob("*.jpg"))[6:]:
        face.unlink()
    res = run_facelab("-w", small, "train", "--model-name", "m", "--preset", "meshswap",
                      "--device", "cpu", "--target-iteration", "1")
    assert_one_line_error(res, "src faceset has 6 faces", "add more src footage")
    assert not (small / "model" / "m_manifest.json").exists()


@pytest.mark.slow
def test_cli_trains_to_the_target_and_refuses_mixed_families(ws: Workspace) -> None:
    args = ["-w", ws.root, "train", "--model-name", "cli", "--resolution", "64",
            "--face-type", "full", "--refiner", "--refiner-dims", "8", "--batch-size", "2",
            "--device", "cpu", "--precision", "fp32", "--preview-every", "0"]
    res = run_facelab(*args, "--preset", "meshswap", "--target-iteration", "3")
    assert res.rc == 0, res.err
    assert "reached its target at iteration 3" in res.out and "refiner loss" in res.out
    assert "Indexed 75 src faces" in res.err
    # the listing, the info and the refusals by the same CLI in this process (no start-up)
    listed = run_in_process("-w", ws.root, "model", "list")
    assert "cli  meshswap  meshswap  iteration 3" in listed.out, listed
    info = run_in_process("-w", ws.root, "model", "info", "cli")
    assert info.rc == 0 and "Index: 75 src faces" in info.out
    assert "refiner_dims = 8 (fixed)" in info.out and "candidates = 4\n" in info.out
    assert_one_line_error(run_in_process(*args, "--ae-dims", "64", "--target-iteration", "4"),
                          "--ae-dims is not a meshswap option")
    assert_one_line_error(run_in_process("-w", ws.root, "train", "--model-name", "cli",
                                         "--preset", "sae", "--target-iteration", "4"),
                          "is a meshswap model, not sae")
    # an SAE-family save beside it, made by the trainer in this process (`facelab train` of
    # an SAE model is the CLI tests' subject: tests/test_trainer.py, test_train_cli.py)
    sae = {"resolution": 64, "ae_dims": 32, "e_dims": 8, "d_dims": 8, "d_mask_dims": 8}
    assert train_(ws, _opts("sae1", preset="quick96", overrides=sae,
                            target_iteration=1)).iteration == 1
    assert_one_line_error(
        run_in_process("-w", ws.root, "train", "--model-name", "sae1", "--preset", "meshswap"),
        "is a quick96 model (sae family), not meshswap")
    assert_one_line_error(
        run_in_process("-w", ws.root, "train", "--model-name", "sae1", "--candidates", "2"),
        "--candidates is not an option of SAE-family models")
