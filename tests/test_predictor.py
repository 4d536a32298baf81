"""The predictor interface: a save's family picks its predictor; old saves are SAE's."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from facelab.errors import FacelabError
from facelab.faces.facetype import FaceType
from facelab.merge.predictor import model_info
from facelab.train.models import preset


def _fake_save(folder: Path, name: str, **state: object) -> None:
    """The JSON side of a save (what model_info reads), no tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"arch": "df", "state": {"iteration": 7, "options": asdict(preset("quick96")),
                                   **state}}
    (folder / f"{name}_state.json").write_text(json.dumps(doc))
    weights = {"size": 1, "sha256": "ab" * 32}
    manifest = {"files": {f"{name}_weights.safetensors": weights}}
    (folder / f"{name}_manifest.json").write_text(json.dumps(manifest))


def test_a_save_without_a_family_is_sae(tmp_path: Path) -> None:
    _fake_save(tmp_path, "old")
    info = model_info(tmp_path, "old")
    assert (info.family, info.iteration, info.model_id) == ("sae", 7, "old@7:" + "ab" * 6)
    assert (info.resolution, info.face_type) == (96, FaceType.FULL)
    assert not info.needs_mesh  # SAE's merge builds no meshes


def test_a_meshswap_save_asks_for_the_dst_meshes(tmp_path: Path) -> None:
    from facelab.meshswap.options import MeshSwapOptions

    opts = asdict(MeshSwapOptions(resolution=96, face_type="whole-face"))
    _fake_save(tmp_path, "ms", family="meshswap", options=opts)
    info = model_info(tmp_path, "ms")
    assert (info.family, info.iteration, info.needs_mesh) == ("meshswap", 7, True)
    assert (info.resolution, info.face_type) == (96, FaceType.WHOLE_FACE)
    _fake_save(tmp_path, "bad", family="meshswap", options={**opts, "resolution": 100})
    with pytest.raises(FacelabError, match="resolution"):
        model_info(tmp_path, "bad")
    _fake_save(tmp_path, "odd", family="meshswap", options={**opts, "colour": 1})
    with pytest.raises(FacelabError, match=r"'odd'.*unreadable options"):
        model_info(tmp_path, "odd")


def test_an_unknown_family_is_one_clear_error(tmp_path: Path) -> None:
    _fake_save(tmp_path, "new", family="mesh-warp")
    with pytest.raises(FacelabError, match="'mesh-warp' family"):
        model_info(tmp_path, "new")


def test_no_model_names_those_there(tmp_path: Path) -> None:
    _fake_save(tmp_path, "old")
    with pytest.raises(FacelabError, match="models here: old"):
        model_info(tmp_path, "missing")
