"""The trainer on real faces: the loss falls, runs stop, save, resume; preview; CLI errors."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import pytest

from facelab.errors import FacelabError
from facelab.progress import NullReporter
from facelab.train import checkpoint
from facelab.train.preview import grid_size
from facelab.train.trainer import TrainOptions, train
from facelab.workspace import Workspace
from tests.conftest import assert_one_line_error, run_facelab

pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")

TINY = {"ae_dims": 32, "e_dims": 8, "d_dims": 8, "d_mask_dims": 8, "resolution": 64}


def _opts(name: str, **kw: object) -> TrainOptions:
    base: dict[str, object] = dict(model_name=name, preset="quick96", overrides=dict(TINY),
                                   precision="fp32",
                                   batch_size=4, workers=0, preview_every=0, log_every=5)
    return TrainOptions(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """24 faces of GRID speaker B as src and 24 of speaker A as dst, via the real CLI."""
    from tests.conftest import data_file, put_video

    root = tmp_path_factory.mktemp("trainer") / "ws"
    root.mkdir()
    for side, clip in (("src", "grid/speaker_b.mpg"), ("dst", "grid/speaker_a_1.mpg")):
        put_video(root, side, data_file(clip))
        assert run_facelab("-w", root, "video", "extract", side, "--fps", "8").rc == 0
        res = run_facelab("-w", root, "extract", side, "--no-debug")
        assert res.rc == 0, res.err
    return Workspace(root)


def test_loss_falls_run_stops_at_target_and_previews(ws: Workspace):
    rep = train(ws, _opts("loss", target_iteration=30, preview_every=10), NullReporter())
    assert (rep.start_iteration, rep.iteration, rep.stopped) == (0, 30, False)
    first = sum(s + d for s, d in rep.losses[:5]) / 5
    last = sum(s + d for s, d in rep.losses[-5:]) / 5
    assert last < first, (first, last)
    assert checkpoint.exists(ws.model_dir, "loss")
    doc = json.loads((ws.model_dir / "loss_state.json").read_text())
    assert doc["state"]["iteration"] == 30 and len(doc["state"]["history"]) == 6
    image = cv2.imread(str(rep.preview))
    assert rep.preview == ws.model_dir / "loss_preview.png"
    assert image.shape[:2] == grid_size(64, 4)


def test_resume_continues_and_keeps_fixed_options(ws: Workspace):
    first = train(ws, _opts("resume", target_iteration=3), NullReporter())
    assert first.iteration == 3 and not first.resumed
    second = train(ws, _opts("resume", target_iteration=6, preset=None, overrides={}),
                   NullReporter())
    assert (second.resumed, second.start_iteration, second.iteration) == (True, 3, 6)
    assert second.options.ae_dims == 32  # from the save, not from the quick96 preset
    with pytest.raises(FacelabError, match="ae_dims"):
        train(ws, _opts("resume", target_iteration=9, overrides={"ae_dims": 64}),
              NullReporter())
    with pytest.raises(FacelabError, match="already at iteration 6"):
        train(ws, _opts("resume", target_iteration=6), NullReporter())


def test_stop_event_saves_and_returns(ws: Workspace):
    stop = threading.Event()
    rep = train(ws, _opts("stopped"), NullReporter(), stop,
                on_log=lambda it, ms, s, d: stop.set())
    assert rep.stopped and rep.iteration == 5
    doc = json.loads((ws.model_dir / "stopped_state.json").read_text())
    assert doc["state"]["iteration"] == 5


def test_cli_other_architecture_is_one_line(ws: Workspace):
    train(ws, _opts("m", target_iteration=2), NullReporter())
    res = run_facelab("-w", ws.root, "train", "--model-name", "m", "--preset", "df")
    assert_one_line_error(res, "quick96", "df")
    info = run_facelab("-w", ws.root, "model", "info", "m")
    assert info.rc == 0 and "iteration 2" in info.out and "ae_dims = 32" in info.out, info
    listed = run_facelab("-w", ws.root, "model", "list")
    assert listed.rc == 0 and "m  quick96" in listed.out


def test_cli_empty_faceset_is_one_line(tmp_path: Path):
    Workspace(tmp_path / "ws").init()
    res = run_facelab("-w", tmp_path / "ws", "train", "--model-name", "x", "--device", "cpu")
    assert_one_line_error(res, "no faces")
    res = run_facelab("-w", tmp_path / "ws", "train", "--model-name", "x", "--device", "tpu")
    assert_one_line_error(res, "device")
