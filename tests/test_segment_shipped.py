"""The shipped generic segmenter (issue 18) on faces it never saw: the hand-labelled Pexels
frames (real hands, tests/fixtures/segment/pexels_hand.json, polygons only, re-extracted from
../shared/data) and a real GRID face with a synthetic hand pasted on it. The floors sit a
little below what the shipped network measured (its card holds the figures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.segment import fixtures
from facelab.segment.data import split_of
from facelab.segment.network import predict_masks
from facelab.segment.occluders import occlude
from facelab.segment.shipped import SHIPPED, load_shipped
from tests.conftest import data_file

IOU_FLOOR_HAND = 0.84  # measured 0.879 (card); the mesh hull 0.807
IOU_FLOOR_CONTROL = 0.92  # measured 0.949
LEAK_CEILING = 0.30  # measured 0.190 of the hand's pixels over the face kept; mesh hull 1.00

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fixture_file_holds_polygons_of_held_out_frames_only() -> None:
    doc = fixtures.load()
    frames = [f["frame"] for f in doc["faces"]]
    assert len(frames) == len(set(frames)) >= 12
    assert all(split_of("pexels", n) == "test" for n in frames)  # never trained on
    hands = [f for f in doc["faces"] if f["hand"]]
    assert len(hands) >= 10 and len(doc["faces"]) - len(hands) >= 2
    size = doc["size"]
    for face in doc["faces"]:
        assert bool(face["occluders"]) == face["hand"]
        for poly in face["include"] + face["occluders"]:
            assert poly.shape[1] == 2 and (poly >= 0).all() and (poly <= size).all()
        inc = fixtures.rasterise(face["include"], size) > 0.5
        assert 0.2 < inc.mean() < 0.6  # a face, not the crop
        if face["hand"]:  # the hand covers a real part of the face, never all of it
            occ = fixtures.rasterise(face["occluders"], size) > 0.5
            assert 0.05 < (occ & inc).sum() / inc.sum() < 0.6


def test_a_broken_fixture_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "f.json"
    bad.write_text(json.dumps({"clip": "x.mp4", "face_type": "whole-face", "size": 256,
                               "faces": [{"frame": 1, "include": [[0, 0], [1, 1]],
                                          "occluders": []}]}))
    with pytest.raises(FacelabError, match="at least 3"):
        fixtures.load(bad)
    bad.write_text("{}")
    with pytest.raises(FacelabError, match="lacks clip"):
        fixtures.load(bad)


def test_scores_count_the_hand_kept_as_face() -> None:
    size = 64
    inc = fixtures.rasterise([np.array([[8, 8], [56, 8], [56, 56], [8, 56]])], size)
    occ = fixtures.rasterise([np.array([[0, 40], [64, 40], [64, 64], [0, 64]])], size)
    blank = np.zeros((size, size, 3), np.uint8)
    faces = [fixtures.FixtureFace(1, True, blank, inc, occ, inc, inc),
             fixtures.FixtureFace(2, False, blank, inc, np.zeros_like(occ), inc, inc)]
    perfect = fixtures.score(np.stack([f.label for f in faces]), faces)
    assert perfect["hand"]["segmenter"]["iou_mean"] == 1.0
    assert perfect["hand"]["segmenter"]["occluder_in_mask"] == 0.0
    hull = perfect["hand"]["mesh_hull"]  # the whole face region: the hand kept as face
    assert hull["occluder_in_mask"] == 1.0
    assert hull["iou_mean"] == pytest.approx(32 / 48, abs=0.03)  # rows 8–40 of 8–56
    assert perfect["control"]["mesh_hull"]["iou_mean"] == 1.0
    assert perfect["all"]["segmenter"]["faces"] == 2


def test_shipped_network_is_small_and_carries_its_card() -> None:
    weights = SHIPPED.with_suffix(".safetensors")
    assert weights.stat().st_size < 5e6
    net, card = load_shipped()
    assert not net.training
    for key in ("data", "recipe", "run", "quality", "inference", "command"):
        assert key in card
    held = card["quality"]["held_out_hand_labelled"]["hand"]
    assert held["segmenter"]["iou_mean"] > held["mesh_hull"]["iou_mean"]


@pytest.fixture(scope="module")
def held_out() -> list[fixtures.FixtureFace]:
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")
    video = data_file("pexels/woman_pose_variety.mp4")
    return fixtures.extract(video.parents[1])


@pytest.mark.slow
def test_shipped_network_finds_the_face_behind_a_real_hand(held_out) -> None:
    net, _ = load_shipped()
    pred = predict_masks(net, np.stack([f.image for f in held_out]))
    s = fixtures.score(pred, held_out)
    hand, control = s["hand"], s["control"]
    assert hand["segmenter"]["iou_mean"] >= IOU_FLOOR_HAND
    assert hand["segmenter"]["iou_mean"] > hand["mesh_hull"]["iou_mean"] + 0.03
    assert hand["segmenter"]["occluder_in_mask"] <= LEAK_CEILING
    assert hand["mesh_hull"]["occluder_in_mask"] > 0.9  # the hull keeps the hand: no help
    assert control["segmenter"]["iou_mean"] >= IOU_FLOOR_CONTROL


@pytest.fixture(scope="module")
def grid_face() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GRID speaker B's first frame as a whole-face crop: (image, mesh label, 68 points)."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")
    from facelab.faces.extractor import Extractor, ExtractorOptions
    from facelab.segment.labels import face_label
    from facelab.video.frames import DecodeState, decode_video, to_array
    from facelab.video.probe import open_video

    with open_video(data_file("grid/speaker_b.mpg")) as box:
        frame = to_array(next(decode_video(box, DecodeState())))
    face = Extractor(ExtractorOptions(face_type="whole-face", size=256, device="cpu")).run(
        frame)[0]
    meta = face.meta("00000.png", (frame.shape[1], frame.shape[0]))
    return face.image, face_label(meta), np.asarray(meta.landmarks)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_shipped_network_excludes_a_synthetic_hand_on_a_real_face(grid_face, seed) -> None:
    image, label, lm = grid_face
    occ = occlude(image, label, lm, np.random.default_rng(seed), ["hand"])
    covered = (occ.occluder > 0.5) & (label > 0.5)
    assert covered.sum() > 0.05 * (label > 0.5).sum()  # the hand does lie on the face
    net, _ = load_shipped()
    clean, hidden = predict_masks(net, np.stack([image, occ.image]))
    assert (hidden[covered] < 0.5).mean() > 0.8  # most of the hand is not face
    assert (clean[covered] > 0.5).mean() > 0.9  # and the same pixels were face before
    visible = occ.label > 0.5
    assert (hidden[visible] > 0.5).mean() > 0.85  # the rest of the face stays
