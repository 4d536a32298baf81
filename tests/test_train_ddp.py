"""Data-parallel training (train/ddp.py, cli/train_launch.py) on real faces, 127.0.0.1 only:
2 CPU ranks × batch 4 step as one rank with batch 8; Ctrl-C on the launcher stops every
rank at one iteration with one save, and the stopped run resumes bit-exactly; bad input is
one line. Real processes and gloo, tiny models, samples built in the ranks (workers=0)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from fractions import Fraction

import pytest
import torch
from safetensors.torch import load_file

from facelab.cli.common import stop_on_signals
from facelab.cli.train_launch import launch
from facelab.errors import FacelabError
from facelab.progress import NullReporter
from facelab.train.data import Faceset, SampleOptions, make_loader
from facelab.train.ddp import device_for
from facelab.train.run_options import Ranks
from facelab.train.trainer import TrainOptions, TrainReport, train
from facelab.workspace import Workspace
from tests.conftest import (
    assert_one_line_error,
    data_file,
    run_facelab,
    run_in_process,
    torch_threads,
)

pytestmark = pytest.mark.slow  # real footage and training

pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")

TINY = {"ae_dims": 32, "e_dims": 8, "d_dims": 8, "d_mask_dims": 8, "resolution": 64}
ITERATIONS = 5  # the stop lands at 2 or 3 here: room to spare on a busy machine


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The in-process runs on one thread, as each of 2 ranks on 2 cores gets: on a busy
    machine 2 threads' barriers made a step ten times slower, not faster."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """GRID speaker B's faces (4 fps: 12) as src and speaker C's as dst, extracted once."""
    from facelab.faces.extract import FaceExtractOptions, extract_faces
    from facelab.video.extract import ExtractOptions, extract_frames

    root = tmp_path_factory.mktemp("ddp")
    sides = {}
    for name, clip in (("b", "grid/speaker_b.mpg"), ("c", "grid/speaker_c.mpg")):
        w = Workspace(root / name)
        w.root.mkdir()
        shutil.copyfile(data_file(clip), w.root / "data_src.mpg")
        extract_frames(w, "src", None, ExtractOptions(fps=Fraction(4)))
        extract_faces(w, "src", FaceExtractOptions(workers=1))
        sides[name] = w
    ws = sides["b"]
    ws.aligned_dir("dst").mkdir(parents=True, exist_ok=True)
    for face in sides["c"].aligned_dir("src").iterdir():
        shutil.move(face, ws.aligned_dir("dst") / face.name)
    return ws


def _weights(ws: Workspace, name: str) -> dict[str, torch.Tensor]:
    return load_file(ws.model_dir / f"{name}_weights.safetensors")


def _flat(ws: Workspace, name: str) -> torch.Tensor:
    """Every weight of the save, in one vector (in name order)."""
    weights = _weights(ws, name)
    return torch.cat([weights[k].flatten() for k in sorted(weights)])


def _iteration(ws: Workspace, name: str) -> int:
    doc = json.loads((ws.model_dir / f"{name}_state.json").read_text())
    return int(doc["state"]["iteration"])


def _ranks(ws: Workspace, name: str, stop: threading.Event | None = None,
           **kw: object) -> TrainReport:
    """`name` trained by the real launcher of `facelab train --nproc 2` (its processes and
    their torch.distributed; in this process only the launcher)."""
    base: dict[str, object] = dict(model_name=name, preset="quick96", overrides=dict(TINY),
                                   precision="fp32", device="cpu", workers=0,
                                   preview_every=0, nproc=2)
    rep = launch(ws.root, TrainOptions(**{**base, **kw}), stop)  # type: ignore[arg-type]
    assert rep.ranks == 2
    return rep


@pytest.fixture(scope="module")
def two(ws: Workspace) -> str:
    """Model "two": 2 ranks × batch 4 for ITERATIONS iterations, uninterrupted."""
    _ranks(ws, "two", batch_size=4, target_iteration=ITERATIONS)
    return "two"


def test_two_ranks_step_as_one_rank_with_the_whole_batch(ws: Workspace, two: str):
    opts = TrainOptions(model_name="one", preset="quick96", overrides=dict(TINY),
                        precision="fp32", device="cpu", batch_size=8, workers=0,
                        preview_every=0, target_iteration=ITERATIONS)
    assert train(ws, opts, NullReporter()).iteration == ITERATIONS
    small = TrainOptions(**{**opts.__dict__, "model_name": "small", "batch_size": 4})
    train(ws, small, NullReporter())  # half the batch: what the tolerance must tell apart
    one, both, half = (_flat(ws, name) for name in ("one", two, "small"))
    # summed in another order, a few gradients of rounding size flip sign, and Adam moves
    # such a weight by up to a learning rate (5e-5) a step. Measured after 5 iterations:
    # 766 of 1M weights off by > 1e-6, mean 2e-8, max 4e-5; with half the batch 97 % of
    # them move, mean 5e-5
    off, moved = (one - both).abs(), (one - half).abs()
    assert float((off > 1e-6).float().mean()) < 1e-2 < float((moved > 1e-6).float().mean())
    assert float(off.mean()) < 1e-2 * float(moved.mean()), (off.mean(), moved.mean())
    assert float(off.max()) < 2e-4


def test_ctrl_c_stops_every_rank_at_once_and_the_run_resumes_exactly(
        ws: Workspace, two: str, capfd: pytest.CaptureFixture[str]):
    """SIGINT to the launcher (the CLI's own handler) once rank 0 wrote its first preview:
    one save, by rank 0, every rank ended; resumed, it reaches run "two"'s weights."""
    preview = ws.model_dir / "sig_preview.png"

    def interrupt() -> None:
        deadline = time.monotonic() + 120
        while not preview.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt, daemon=True)
    with stop_on_signals(requests=True) as stop:
        watcher.start()
        rep = _ranks(ws, "sig", batch_size=4, target_iteration=ITERATIONS, preview_every=1,
                     stop=stop)
    watcher.join()
    err = capfd.readouterr().err
    k = _iteration(ws, "sig")
    assert rep.stopped and rep.iteration == k and 1 <= k < ITERATIONS, (k, err)
    assert err.count("saved") == 1, err  # rank 0's one save, said once
    assert json.loads((ws.model_dir / "sig_state.json").read_text())["state"]["ranks"] == 2
    rep = _ranks(ws, "sig", preset=None, overrides={}, target_iteration=ITERATIONS)
    assert (rep.start_iteration, rep.iteration, rep.options.batch_size) == (k, ITERATIONS, 4)
    straight, resumed = _weights(ws, two), _weights(ws, "sig")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_collapse_rolls_every_rank_back_together(ws: Workspace,
                                                   capfd: pytest.CaptureFixture[str]):
    """A learning rate of 40 sends the loss to NaN within a few steps: every rank sees the
    same all-reduced losses, so all roll back to the same weights and halve the rate at
    the same iteration (a rank that did not would hang the next all-reduce); the run
    reaches its target with finite weights and the lowered rate saved."""
    rep = _ranks(ws, "div", batch_size=2, lr=40.0, target_iteration=ITERATIONS)
    err = capfd.readouterr().err
    state = json.loads((ws.model_dir / "div_state.json").read_text())["state"]
    assert rep.iteration == ITERATIONS and state["iteration"] == ITERATIONS
    collapses = err.count("rolled back to iteration")  # said once, by rank 0
    assert collapses >= 1 and state["lr"] == 40 / 2 ** collapses, err
    assert all(bool(torch.isfinite(w).all()) for w in _weights(ws, "div").values())


def test_interactive_asks_once_then_starts_the_ranks(ws: Workspace):
    """`--nproc 2 --interactive`: the launcher asks each question once (the ranks never
    ask), and the answers reach every rank (a target of 3 iterations, not the flag's 2:
    every rank stops there together)."""
    flags = ("--preset", "quick96", "--resolution", "64", "--ae-dims", "32", "--e-dims", "8",
             "--d-dims", "8", "--d-mask-dims", "8", "--device", "cpu", "--precision",
             "fp32", "--preview-every", "0", "--target-iteration", "2", "--batch-size", "2")
    res = run_facelab("-w", ws.root, "train", "--model-name", "ask", "--nproc", "2",
                      "--interactive", *flags, input="\n\n3\n")
    assert res.rc == 0, res.err
    assert res.out.count("Target iteration [2]") == 1 and "Batch size [2]" in res.out
    assert res.out.count("Batch size [2]") == 1, res.out
    doc = json.loads((ws.model_dir / "ask_state.json").read_text())["state"]
    assert (doc["ranks"], doc["iteration"], doc["options"]["batch_size"]) == (2, 3, 2), doc
    assert "reached its target at iteration 3" in res.out and "2 ranks" in res.out


def test_bad_input_is_one_line(ws: Workspace, monkeypatch: pytest.MonkeyPatch):
    res = run_facelab("-w", ws.root, "train", "--model-name", "bad", "--nproc", "0")
    assert_one_line_error(res, "--nproc", "1 or more", "0")
    for var, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(var, value)  # a torchrun rank: it may not ask alone
    res = run_in_process("-w", ws.root, "train", "--model-name", "bad", "--interactive")
    assert_one_line_error(res, "--interactive", "torchrun", "--nproc N")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var)
    faces = Faceset(ws.aligned_dir("src"), 64, "full")
    with pytest.raises(FacelabError, match=r"Batch size 16 \(2 ranks × 8\) is larger than "
                       rf"the {len(faces)} faces"):
        make_loader(faces, faces, 8, SampleOptions(), workers=0, shard=(1, 2))
    with pytest.raises(FacelabError, match="--nproc 2 starts"):
        train(ws, TrainOptions(model_name="bad", nproc=2), NullReporter())
    with pytest.raises(FacelabError, match="every rank on one device"):
        device_for("cuda:0", Ranks(1, 2, 1))
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)  # as torchrun sets them
    with pytest.raises(FacelabError, match="--nproc 3 does not fit the 2 ranks"):
        Ranks.of_run(3)
    assert Ranks.of_run(1) == Ranks(1, 2, 1) == Ranks.of_run(2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(FacelabError, match="RANK 2 does not fit WORLD_SIZE 2"):
        Ranks.of_run(1)
