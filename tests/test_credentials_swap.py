"""C2PA manifests on what the real pipeline writes (issue 20): the session's quick swap
(merged straight into its video), its merged PNG frames, the demo's side-by-side image,
and the swap's result recovered from its workspace's store after an upload-like
re-encode. Reuses conftest's `quick_swap` (about a minute, shared with test_swap)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facelab.provenance import read_video_mark
from facelab.provenance.credentials import load_keys, read_file
from facelab.provenance.credentials import store as manifest_store
from facelab.provenance.watermark import model_payload
from facelab.workspace import Workspace
from tests.conftest import Swapped, copy_workspace, run_facelab
from tests.test_credentials import reencode_stripped

pytestmark = pytest.mark.slow


def test_swap_result_is_signed_and_recoverable(quick_swap: Swapped, tmp_path: Path):
    model = read_video_mark(quick_swap.out).model_id
    got = read_file(quick_swap.out, load_keys())
    assert got.state == "valid" and got.own and got.model_id == model, got
    assert set(got.ingredients) == {"src", "dst"}  # the inputs, by hash only
    store = quick_swap.ws / "credentials"
    payload = model_payload(model)
    assert quick_swap.out.name + ".c2pa" in {p.name for p in manifest_store.lookup(
        store, payload)}
    stripped = tmp_path / "uploaded.mp4"
    reencode_stripped(quick_swap.out, stripped)
    res = run_facelab("verify", "--json", "--store", store, stripped)
    assert res.rc == 0, res.err
    rep = json.loads(res.out)[0]
    assert rep["manifest"]["state"] == "absent"
    assert rep["recovered"]["matches"] and rep["recovered"]["manifest"]["model_id"] == model


def test_merged_frames_and_side_by_side_are_signed(quick_swap: Swapped, tmp_path: Path):
    ws = Workspace(copy_workspace(quick_swap.ws, tmp_path / "ws"))
    res = run_facelab("-w", ws.root, "merge", "--model-name", "swap", "--to-frames", "-q")
    assert res.rc == 0, res.err
    frames = sorted(ws.merged_dir.glob("*.png"))
    assert len(frames) == 75
    for p in frames[::37]:
        got = read_file(p, load_keys())
        assert got.state == "valid" and got.own and got.payload is not None, (p, got)
    filed = manifest_store.lookup(ws.root / "credentials", got.payload)
    assert {p.name + ".c2pa" for p in frames} <= {p.name for p in filed}

    from facelab.demo import side_by_side

    out = side_by_side(ws, tmp_path / "side_by_side.png")
    got = read_file(out, load_keys())
    assert got.state == "valid" and got.own and "demo" in got.model_id
