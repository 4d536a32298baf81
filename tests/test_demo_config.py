"""The demo's training configuration: a valid model, and the thread setting left as found."""

from __future__ import annotations

import torch

from facelab import demo
from facelab.train.models import build_model, preset


def test_demo_model_is_valid_and_small() -> None:
    mo = preset(demo.PRESET, **demo.OVERRIDES, batch_size=demo.BATCH)
    model = build_model(mo)
    params = sum(p.numel() for p in model.parameters())
    # quick96 has 38 M parameters; the demo's model must stay far cheaper to step.
    assert mo.resolution == 64 and params < 20_000_000
    out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    assert all(v.shape[-1] == 64 for v in out.values() if v.dim() == 4)


def test_thread_setting_is_restored(monkeypatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    with demo._one_thread_if_busy():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
