"""Checkpoints survive crashes and resume exactly; the SAEHD losses behave as DeepFaceLab's."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from facelab.errors import FacelabError
from facelab.train import checkpoint as ckpt
from facelab.train import losses
from facelab.train.checkpoint_state import NonFinite

ARCH = "tiny-test"
FIXED = {"resolution": 16, "dims": [4, 8]}


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3))
        self.norm = nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(x))


def _make(seed: int) -> tuple[Tiny, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = Tiny()
    return model, torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.99))


def _train(model: Tiny, opt: torch.optim.Optimizer, steps: int) -> None:
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 6)  # random inputs and dropout both draw from torch's RNG
        loss = (model(x) - x[:, :3]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _save(folder: Path, model: Tiny, opt: torch.optim.Optimizer, it: int, **kw: object) -> None:
    state = {"iteration": it, "history": [[it, 0.5]], "options": {"batch": 8}}
    ckpt.save(folder, "m", model, opt, state, arch=ARCH, fixed_options=FIXED, **kw)  # type: ignore[arg-type]


def _load(folder: Path, model: Tiny, opt: torch.optim.Optimizer, warnings: list[str]) -> dict:
    return ckpt.load(
        folder, "m", model, opt, expected_arch=ARCH, fixed_options=FIXED, warn=warnings.append
    )


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _weights_of(model: nn.Module) -> list[torch.Tensor]:
    return [v.clone() for v in model.state_dict().values()]


def test_round_trip_is_bit_identical(tmp_path: Path) -> None:
    model, opt = _make(0)
    _train(model, opt, 3)
    _save(tmp_path, model, opt, 3)
    model2, opt2 = _make(1)
    warnings: list[str] = []
    state = _load(tmp_path, model2, opt2, warnings)
    assert state["iteration"] == 3 and state["history"] == [[3, 0.5]] and not warnings
    assert _same(model, model2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid, entry in s1["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, s2["state"][pid][key]), key
    assert ckpt.exists(tmp_path, "m") and ckpt.list_models(tmp_path) == ["m"]


def test_a_prediction_needs_only_the_weights_and_state(tmp_path: Path) -> None:
    """A load without an optimizer (a merge, a cluster worker sent only those files)
    works with the optimizer's file gone; a resume without it is refused."""
    model, opt = _make(0)
    _train(model, opt, 2)
    _save(tmp_path, model, opt, 2)
    (tmp_path / "m_optimizer.safetensors").unlink()
    model2, _ = _make(1)
    state = ckpt.load(tmp_path, "m", model2, None, expected_arch=ARCH, fixed_options=FIXED,
                      warn=pytest.fail)
    assert state["iteration"] == 2 and _same(model, model2)
    model3, opt3 = _make(2)
    with pytest.raises(FacelabError, match="optimizer"):
        _load(tmp_path, model3, opt3, [])


@pytest.mark.slow
def test_resume_is_exact(tmp_path: Path) -> None:
    straight, opt = _make(7)
    _train(straight, opt, 10)

    first, opt1 = _make(7)
    _train(first, opt1, 5)
    _save(tmp_path, first, opt1, 5)
    torch.manual_seed(999)  # disturb the RNG: the load must restore it
    resumed, opt2 = _make(123)
    _load(tmp_path, resumed, opt2, [])
    _train(resumed, opt2, 5)
    assert _same(straight, resumed)

    # without restoring the RNG the runs differ, so the test above can fail
    other, opt3 = _make(5)
    ckpt.load(tmp_path, "m", other, opt3, expected_arch=ARCH, fixed_options=FIXED,
              warn=print, restore_rng=False)  # fmt: skip
    torch.manual_seed(999)
    _train(other, opt3, 5)
    assert not _same(straight, other)


def test_truncated_save_falls_back_to_newest_good_backup(tmp_path: Path) -> None:
    model, opt = _make(0)
    saved = {}
    for it in (10, 20, 30):
        _train(model, opt, 1)
        _save(tmp_path, model, opt, it, backup=it < 30, keep_backups=3)
        saved[it] = _weights_of(model)
    weights = tmp_path / "m_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    warnings: list[str] = []
    fresh, fresh_opt = _make(1)
    state = _load(tmp_path, fresh, fresh_opt, warnings)
    assert state["iteration"] == 20
    assert all(torch.equal(a, b) for a, b in zip(_weights_of(fresh), saved[20], strict=True))
    assert len(warnings) == 1 and "backup from iteration 20" in warnings[0]

    # a damaged newest backup is skipped too; nothing good left is a one-line error
    b20 = tmp_path / "m_backups" / "20" / "m_optimizer.safetensors"
    b20.write_bytes(b"\0" * 10)
    assert _load(tmp_path, fresh, fresh_opt, [])["iteration"] == 10
    (tmp_path / "m_backups" / "10" / "m_manifest.json").write_text("{")
    with pytest.raises(FacelabError, match="no intact backup") as err:
        _load(tmp_path, fresh, fresh_opt, [])
    assert "\n" not in str(err.value)


def test_a_prediction_is_given_the_files_its_load_reads(tmp_path: Path) -> None:
    """`prediction_files` (what a cluster worker is sent): the save's manifest, weights and
    state while they verify; for a damaged save, the newest intact backup's, which a load
    of those files alone, elsewhere, falls back to as the whole folder's load does."""
    model, opt = _make(0)
    for it in (10, 20):
        _train(model, opt, 1)
        _save(tmp_path, model, opt, it, backup=it == 10, keep_backups=3)
    names = ["m_manifest.json", "m_weights.safetensors", "m_state.json"]
    assert ckpt.prediction_files(tmp_path, "m") == [tmp_path / n for n in names]
    weights = tmp_path / "m_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    backup = tmp_path / "m_backups" / "10"
    files = ckpt.prediction_files(tmp_path, "m")
    assert files == [backup / n for n in names]
    worker = tmp_path / "worker"  # only those files, at the same places
    for f in files:
        (worker / f.relative_to(tmp_path)).parent.mkdir(parents=True, exist_ok=True)
        (worker / f.relative_to(tmp_path)).write_bytes(f.read_bytes())
    warnings: list[str] = []
    fresh, _ = _make(1)
    state = ckpt.load(worker, "m", fresh, None, expected_arch=ARCH, fixed_options=FIXED,
                      warn=warnings.append)
    assert state["iteration"] == 10 and "backup from iteration 10" in warnings[0]


def test_backups_keep_the_last_k(tmp_path: Path) -> None:
    model, opt = _make(0)
    for it in range(1, 6):
        _save(tmp_path, model, opt, it, backup=True, keep_backups=2)
    names = sorted(p.name for p in (tmp_path / "m_backups").iterdir())
    assert names == ["4", "5"]


def test_kill_before_commit_keeps_previous_save(tmp_path: Path, monkeypatch) -> None:
    model, opt = _make(0)
    _save(tmp_path, model, opt, 1)
    before = _weights_of(model)
    _train(model, opt, 2)

    class Killed(BaseException):
        pass

    def die(*args: object) -> None:  # the process dies right before the manifest rename
        raise Killed

    monkeypatch.setattr(ckpt, "_fsync_dir", die)
    with pytest.raises(Killed):
        _save(tmp_path, model, opt, 2)
    monkeypatch.undo()
    assert any(p.name.endswith(".pending") for p in tmp_path.iterdir())  # new data written
    fresh, fresh_opt = _make(1)
    warnings: list[str] = []
    assert _load(tmp_path, fresh, fresh_opt, warnings)["iteration"] == 1 and not warnings
    assert all(torch.equal(a, b) for a, b in zip(_weights_of(fresh), before, strict=True))


def test_kill_after_commit_completes_the_save(tmp_path: Path, monkeypatch) -> None:
    model, opt = _make(0)
    _save(tmp_path, model, opt, 1)
    _train(model, opt, 2)

    class Killed(BaseException):
        pass

    def die(folder: Path, fnames: list[str]) -> None:  # dies after the manifest rename
        raise Killed

    monkeypatch.setattr(ckpt, "_finish", die)
    with pytest.raises(Killed):
        _save(tmp_path, model, opt, 2)
    monkeypatch.undo()
    fresh, fresh_opt = _make(1)
    warnings: list[str] = []
    assert _load(tmp_path, fresh, fresh_opt, warnings)["iteration"] == 2 and not warnings
    assert _same(model, fresh)
    assert not any(p.name.endswith(".pending") for p in tmp_path.iterdir())


def test_non_finite_weights_are_refused_and_the_last_save_kept(tmp_path: Path) -> None:
    """A diverged model (NaN or inf in a weight or in Adam's moments) is never saved: the
    writer refuses before writing anything, and the last save still loads as it was."""
    model, opt = _make(0)
    _train(model, opt, 2)
    _save(tmp_path, model, opt, 2)
    good = _weights_of(model)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _train(model, opt, 1)
    for poison in ("weight", "moment"):
        with torch.no_grad():
            if poison == "weight":
                model.net[0].weight[0, 0] = float("nan")
            else:
                next(iter(opt.state.values()))["exp_avg"].view(-1)[0] = float("inf")
        with pytest.raises(NonFinite, match="NaN or inf"):
            _save(tmp_path, model, opt, 3, backup=True)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files  # untouched
        model, opt = _make(0)
        _train(model, opt, 3)
    fresh, fresh_opt = _make(1)
    assert _load(tmp_path, fresh, fresh_opt, [])["iteration"] == 2
    assert all(torch.equal(a, b) for a, b in zip(_weights_of(fresh), good, strict=True))


def test_wrong_architecture_or_fixed_option_is_one_line(tmp_path: Path) -> None:
    model, opt = _make(0)
    _save(tmp_path, model, opt, 1)
    with pytest.raises(FacelabError, match="'other'") as err:
        ckpt.load(tmp_path, "m", model, opt, expected_arch="other", fixed_options=FIXED,
                  warn=print)  # fmt: skip
    assert "\n" not in str(err.value)
    changed = {**FIXED, "resolution": 32}
    with pytest.raises(FacelabError, match="'resolution'") as err:
        ckpt.load(tmp_path, "m", model, opt, expected_arch=ARCH, fixed_options=changed,
                  warn=print)  # fmt: skip
    assert "\n" not in str(err.value)
    wider = nn.Linear(6, 5)
    with pytest.raises(FacelabError, match="does not fit"):
        ckpt.load(tmp_path, "m", wider, None, expected_arch=ARCH, fixed_options=FIXED,
                  warn=print)  # fmt: skip
    with pytest.raises(FacelabError, match="no model named"):
        ckpt.load(tmp_path, "absent", model, opt, expected_arch=ARCH, fixed_options=FIXED,
                  warn=print)  # fmt: skip


def _is_safetensors(data: bytes) -> bool:
    (n,) = struct.unpack("<Q", data[:8])
    json.loads(data[8 : 8 + n])
    return True


def test_no_pickle_written_or_read(tmp_path: Path, monkeypatch) -> None:
    model, opt = _make(0)
    _train(model, opt, 1)
    _save(tmp_path, model, opt, 1, backup=True)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".pt", ".pth", ".pkl", ".pickle", ".bin"}]
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".safetensors":
            assert _is_safetensors(data)
        else:
            assert data[:1] != b"\x80"
            json.loads(data)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling during load")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    fresh, fresh_opt = _make(1)
    _load(tmp_path, fresh, fresh_opt, [])
    assert _same(model, fresh)


def test_models_side_by_side(tmp_path: Path) -> None:
    model, opt = _make(0)
    for name in ("a", "b_c"):
        ckpt.save(tmp_path, name, model, opt, {"iteration": 0}, arch=ARCH, fixed_options={})
    assert ckpt.list_models(tmp_path) == ["a", "b_c"]
    with pytest.raises(FacelabError):
        ckpt.save(tmp_path, "../x", model, opt, {}, arch=ARCH, fixed_options={})


# --- losses -------------------------------------------------------------------------------


def test_dssim_zero_for_identical_and_grows_with_noise() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 64, 64, generator=g)
    size = losses.dssim_filter_size(64)
    assert size == 5
    assert torch.allclose(losses.dssim(img, img, size), torch.zeros(2), atol=1e-6)
    noise = torch.randn(img.shape, generator=g)
    values = [losses.dssim(img, (img + s * noise).clamp(0, 1), size).mean() for s in (0.05, 0.2)]
    assert 0 < values[0] < values[1] <= 1


def test_losses_have_gradients_and_work_under_bf16_autocast() -> None:
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 3, 32, 32, generator=g, requires_grad=True)
    target = torch.rand(2, 3, 32, 32, generator=g)
    mask = (torch.rand(2, 1, 32, 32, generator=g) > 0.3).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total = (
            losses.image_loss(pred, target, losses.soft_mask(mask))
            + losses.mask_loss(pred[:, :1], mask)
            + losses.priority_loss(pred, target, mask)
            + losses.face_style_loss(pred, target, mask, power=10)
            + losses.background_style_loss(pred, target, mask, power=10)
        )
    assert total.shape == (2,) and total.dtype == torch.float32 and torch.isfinite(total).all()
    total.mean().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


@pytest.mark.slow
def test_image_loss_weighting_by_resolution() -> None:
    g = torch.Generator().manual_seed(2)
    for res in (128, 256):
        pred, target = (
            torch.rand(1, 3, res, res, generator=g),
            torch.rand(1, 3, res, res, generator=g),
        )
        mask = torch.ones(1, 1, res, res)
        got = losses.image_loss(pred, target, mask)
        mse = 10 * losses.mse(pred, target)
        if res < 256:
            want = 10 * losses.dssim(pred, target, int(res / 11.6)) + mse
        else:
            want = (
                5 * losses.dssim(pred, target, int(res / 11.6))
                + 5 * losses.dssim(pred, target, int(res / 23.2))
                + mse
            )
        assert torch.allclose(got, want, rtol=1e-5)
        pixel = losses.image_loss(pred, target, mask, pixel="l1")
        assert torch.allclose(pixel, 10 * losses.l1(pred, target) + mse, rtol=1e-5)
    # masked: differences outside the mask cost nothing
    a = torch.zeros(1, 3, 64, 64)
    b = a.clone()
    b[..., :, 32:] = 1.0
    half = torch.zeros(1, 1, 64, 64)
    half[..., :, :32] = 1.0
    assert losses.masked_mse(a, b, half).item() == 0.0
    assert losses.image_loss(a, b, half).item() == pytest.approx(0.0, abs=1e-6)
