"""`model backup` / `model restore`: a restore brings back the backup's exact bytes, keeps the
replaced save in the trash, survives a kill mid-restore, and refuses bad names in one line."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from facelab.errors import FacelabError
from facelab.train import backups, checkpoint
from facelab.train.models import build_model, preset
from facelab.train.saved import fixed_of
from facelab.train.step import LR
from facelab.workspace import Workspace
from tests.conftest import assert_one_line_error, run_facelab, run_in_process

TINY = preset("sae", resolution=64, ae_dims=16, e_dims=4, d_dims=4, d_mask_dims=2)


def _model(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model(TINY)
    return model, torch.optim.Adam(model.parameters(), lr=LR)


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """One cheap update, so weights and optimizer state change between saves."""
    x = torch.rand(2, 3, 64, 64)
    out = model(x, x)
    loss = (out["src_src"] - x).abs().mean() + (out["dst_dst"] - x).abs().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _save(folder: Path, name: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
          it: int, **kw: object) -> None:
    state = {"iteration": it, "options": asdict(TINY), "history": [[it, 0.1, 0.2]]}
    checkpoint.save(folder, name, model, opt, state, arch=TINY.arch,  # type: ignore[arg-type]
                    fixed_options=fixed_of(TINY), **kw)


def _weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    model, opt = _model(99)
    checkpoint.load(folder, name, model, opt, expected_arch=TINY.arch,
                    fixed_options=fixed_of(TINY), warn=pytest.fail, restore_rng=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _files(folder: Path, name: str) -> dict[str, bytes]:
    return {f: (folder / f"{name}_{f}").read_bytes() for f in checkpoint.FILES}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer]:
    folder = tmp_path / "model"
    model, opt = _model(0)
    _step(model, opt)
    _save(folder, "m", model, opt, 10)
    return folder, model, opt


@pytest.mark.slow
def test_backup_train_more_restore_is_bit_identical(saved, tmp_path: Path) -> None:
    folder, model, opt = saved
    at10 = _files(folder, "m")
    path = backups.backup(folder, "m")
    assert path == folder / "m_backups" / "10" and backups.is_kept(path)
    assert backups.backup(folder, "m") == path  # same iteration again: left as is
    _step(model, opt)
    _save(folder, "m", model, opt, 20)
    at20 = _files(folder, "m")
    assert at20 != at10
    assert [it for it, _ in backups.list_backups(folder, "m")] == [10]

    trash = tmp_path / "trash"
    assert backups.restore(folder, "m", "10", trash) == 10
    assert _files(folder, "m") == at10  # weights, optimizer, state: byte for byte
    assert {f: (trash / f"m_{f}").read_bytes() for f in checkpoint.FILES} == at20
    assert (trash / "m_manifest.json").is_file()
    restored = _weights(folder, "m")
    model10, opt10 = _model(0)
    _step(model10, opt10)
    assert all(torch.equal(restored[k], v) for k, v in model10.state_dict().items())


@pytest.mark.slow
def test_kept_backup_survives_periodic_pruning(saved) -> None:
    folder, model, opt = saved
    backups.backup(folder, "m")
    for it in (20, 30, 40):
        _save(folder, "m", model, opt, it, backup=True, keep_backups=2)
    assert [it for it, _ in backups.list_backups(folder, "m")] == [10, 30, 40]


@pytest.mark.slow
def test_kill_mid_restore_leaves_a_loadable_model(saved, tmp_path: Path, monkeypatch) -> None:
    folder, model, opt = saved
    backups.backup(folder, "m")
    _step(model, opt)
    _save(folder, "m", model, opt, 20)
    at20 = _files(folder, "m")
    real_replace = os.replace

    def die_at_commit(src: object, dst: object) -> None:
        if str(dst).endswith("m_manifest.json") and Path(str(dst)).parent == folder:
            raise KeyboardInterrupt  # killed just before the commit point
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", die_at_commit)
    with pytest.raises(KeyboardInterrupt):
        backups.restore(folder, "m", "10", tmp_path / "trash")
    monkeypatch.undo()
    _weights(folder, "m")  # loads without falling back (warn would fail)
    assert _files(folder, "m") == at20  # the old save is still the committed one
    assert backups.restore(folder, "m", "m_backups/10", tmp_path / "trash2") == 10


def test_bad_names_and_damaged_backup_are_one_line(saved, tmp_path: Path) -> None:
    folder, model, opt = saved
    with pytest.raises(FacelabError, match="none"):
        backups.restore(folder, "m", "10", tmp_path / "t")
    backups.backup(folder, "m")
    _save(folder, "m", model, opt, 20, backup=True)
    with pytest.raises(FacelabError, match=r"no backup '15'.*10, 20"):
        backups.restore(folder, "m", "15", tmp_path / "t")
    with pytest.raises(FacelabError, match=r"no model named 'x'.*its models: m"):
        backups.backup(folder, "x")
    (folder / "m_backups" / "20" / "m_weights.safetensors").write_bytes(b"bad")
    with pytest.raises(FacelabError, match=r"Backup 20 .* damaged .*other backups: 10"):
        backups.restore(folder, "m", "20", tmp_path / "t")
    assert not (tmp_path / "t").exists()  # nothing moved before the backup verified
    assert _files(folder, "m")["state.json"].count(b'"iteration": 20') == 1


@pytest.mark.slow
def test_cli_backup_info_restore_round_trip(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.init()
    model, opt = _model(0)
    _save(ws.model_dir, "m", model, opt, 10)
    at10 = _files(ws.model_dir, "m")
    res = run_facelab("-w", ws.root, "model", "backup", "m")
    assert res.rc == 0 and str(ws.model_dir / "m_backups" / "10") in res.out, res
    _step(model, opt)
    _save(ws.model_dir, "m", model, opt, 20)

    # the rest by the same CLI in this process (the backup above is the real command's)
    info = run_in_process("-w", ws.root, "model", "info", "m")
    assert info.rc == 0 and "iteration 20" in info.out, info
    assert "Backups: 1" in info.out and "  10  20" in info.out, info.out  # iteration, date

    res = run_in_process("-w", ws.root, "model", "restore", "m", "10")
    assert res.rc == 0 and "iteration 10" in res.out and "iteration 20" in res.out, res
    assert _files(ws.model_dir, "m") == at10
    trashed = list(ws.trash_root.glob("*/model/m_weights.safetensors"))
    assert len(trashed) == 1 and str(trashed[0].parents[1]) in res.out.replace("\n", "")

    assert_one_line_error(run_in_process("-w", ws.root, "model", "restore", "m", "7"), "10")
    assert_one_line_error(run_in_process("-w", ws.root, "model", "backup", "nope"), "m")
