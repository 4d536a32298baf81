"""The demo's model configuration: a valid model of the family it names, and the thread
setting left as found."""

from __future__ import annotations

import torch

from facelab import demo
from facelab.meshswap.options import FAMILY, MeshSwapOptions
from facelab.swap import SwapOptions


def test_demo_model_is_meshswap_ready_without_training(tmp_path) -> None:
    assert demo.PRESET == FAMILY
    opts = MeshSwapOptions(**demo.OVERRIDES)
    assert not opts.refiner  # nothing to train: the demo's minutes go to extraction and merge
    swap = SwapOptions(src=tmp_path / "a.mpg", dst=tmp_path / "b.mpg", output=tmp_path / "r.mp4",
                       preset=demo.PRESET, overrides=dict(demo.OVERRIDES),
                       batch_size=demo.BATCH, lr=demo.LR)
    assert swap.preset == SwapOptions.__dataclass_fields__["preset"].default == FAMILY


def test_thread_setting_is_restored(monkeypatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    with demo._one_thread_if_busy():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
