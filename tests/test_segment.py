"""The face segmenter's foundation (issue 18): labels, synthetic occluders, the network, its
save format, training steps. Footage-free tests use a drawn face placed by the mean face's
68 points; the label test extracts a real GRID face with facelab's extractor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab.errors import FacelabError
from facelab.faces.facetype import MEAN_FACE_68
from facelab.segment import fit
from facelab.segment.data import (
    FaceBank,
    Recipe,
    baselines,
    extract_bank,
    figures,
    make_batch,
    split_of,
    validation_samples,
)
from facelab.segment.labels import face_label, hull68_mask, landmarks_label, mesh_label
from facelab.segment.network import SegNet, load_segmenter, predict_masks, save_segmenter
from facelab.segment.occluders import OCCLUDERS, occlude
from tests.conftest import data_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def drawn_face(size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured background with a skin-coloured face region, eyes and mouth, placed by the
    mean face's 68 points: (image uint8, label float32, landmarks 68×2)."""
    import cv2

    rng = np.random.default_rng(seed)
    lm = MEAN_FACE_68 * size * 0.55 + [size * 0.22, size * 0.25]
    label = landmarks_label(lm, size)
    image = rng.integers(0, 255, (size, size, 3)).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), 3)
    image = image * (1 - label[..., None]) + np.array([120, 150, 200]) * label[..., None]
    for idx in (range(36, 42), range(42, 48), range(48, 60)):
        cv2.fillConvexPoly(image, np.round(lm[list(idx)]).astype(np.int32), (40, 40, 60))
    return image.round().clip(0, 255).astype(np.uint8), label, lm


# --- labels on a real face ----------------------------------------------------------------

@pytest.fixture(scope="module")
def grid_face():
    """GRID speaker B's first frame through facelab's extractor: (aligned face, FaceMeta)."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")
    from facelab.faces.extractor import Extractor, ExtractorOptions
    from facelab.video.frames import DecodeState, decode_video, to_array
    from facelab.video.probe import open_video

    with open_video(data_file("grid/speaker_b.mpg")) as box:
        frame = to_array(next(decode_video(box, DecodeState())))
    faces = Extractor(ExtractorOptions(face_type="whole-face", size=256, device="cpu")).run(frame)
    assert len(faces) == 1
    return faces[0].image, faces[0].meta("00000.png", (frame.shape[1], frame.shape[0]))


@pytest.mark.slow
def test_label_covers_the_face_and_not_the_blue_background(grid_face) -> None:
    image, meta = grid_face
    label = face_label(meta) > 0.5
    assert meta.mesh is not None and label.shape == (256, 256)
    b, r = image[..., 0].astype(int), image[..., 2].astype(int)
    blue = (b > r + 40) & (b > 100)  # GRID's backdrop; skin has more red than blue
    assert blue[~label].mean() > 0.2  # the crop does show backdrop, outside the label
    assert blue[label].mean() < 0.01
    hull = hull68_mask(meta.landmarks, 256) > 0.5
    assert (hull & label).sum() / hull.sum() > 0.97  # chin to brows inside the label
    brow_top = meta.landmarks[17:27, 1].min()
    assert label[: int(brow_top) - 10].sum() > 0.05 * label.sum()  # and the forehead too
    # half the size: the same region, scaled
    small = face_label(meta, 128) > 0.5
    assert abs(small.mean() - label.mean()) < 0.01


@pytest.mark.slow
def test_label_without_mesh_extends_the_68_point_hull_over_the_forehead(grid_face) -> None:
    _, meta = grid_face
    mesh = mesh_label(meta.mesh, 256) > 0.5
    meta.mesh = None
    fallback = face_label(meta) > 0.5
    plain = hull68_mask(meta.landmarks, 256) > 0.5

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / (a | b).sum())

    assert iou(fallback, mesh) > 0.9
    assert iou(fallback, mesh) > iou(plain, mesh) + 0.05


@pytest.mark.slow
def test_the_bank_holds_real_faces_with_labels_and_skips_the_hand_frames() -> None:
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")
    data = data_file("grid/speaker_b.mpg").parents[1]
    data_file("pexels/woman_pose_variety.mp4")
    clips = {"grid_b": "grid/speaker_b.mpg", "pexels": "pexels/woman_pose_variety.mp4"}
    bank = extract_bank(data, clips, every=60, size=128, log=lambda s: None)
    assert list(zip(bank.clips, bank.frames, strict=True)) == [
        ("grid_b", 0), ("grid_b", 60), ("pexels", 0), ("pexels", 240), ("pexels", 300),
        ("pexels", 360), ("pexels", 420)]  # pexels 60, 120 and 180 show the hand: skipped
    assert bank.images.shape == (7, 128, 128, 3) and bank.labels.shape == (7, 128, 128)
    cover = (bank.labels > 127).mean((1, 2))
    assert (cover > 0.1).all() and (cover < 0.6).all()  # a head crop: the face, not all
    inside = bank.labels[np.arange(7)[:, None], bank.landmarks[:, 27:48, 1].round().astype(int),
                         bank.landmarks[:, 27:48, 0].round().astype(int)]
    assert (inside > 200).all()  # nose and eyes lie in the label


# --- occluders ----------------------------------------------------------------------------

def test_occlusion_is_deterministic_per_seed() -> None:
    image, label, lm = drawn_face()
    a = occlude(image, label, lm, np.random.default_rng(7), count=2)
    b = occlude(image, label, lm, np.random.default_rng(7), count=2)
    c = occlude(image, label, lm, np.random.default_rng(8), count=2)
    assert a.kinds == b.kinds
    for x, y in ((a.image, b.image), (a.label, b.label), (a.occluder, b.occluder)):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.occluder, c.occluder)


@pytest.mark.parametrize("kind", sorted(OCCLUDERS))
def test_each_kind_covers_part_of_the_face_and_leaves_the_label(kind: str) -> None:
    image, label, lm = drawn_face()
    for seed in range(4):
        occ = occlude(image, label, lm, np.random.default_rng(seed), kinds=[kind])
        assert occ.kinds == (kind,)
        over_face = (occ.occluder > 0.5) & (label > 0.5)
        assert over_face.sum() > 20, (kind, seed)  # on the face, inside the crop
        assert (occ.occluder > 0.5).mean() < 0.9  # not the whole crop
        np.testing.assert_allclose(occ.label, label * (1 - occ.occluder), atol=1e-6)
        assert (occ.label[over_face] < 0.5).all()
        changed = np.abs(occ.image.astype(int) - image).sum(2) > 0
        assert changed[occ.occluder > 0.5].mean() > 0.9  # the occluder is drawn


def test_clear_lenses_are_face_and_the_frames_are_not() -> None:
    image, label, lm = drawn_face()
    eye = np.round(lm[36:42].mean(0)).astype(int)
    seen = set()
    for seed in range(12):
        occ = occlude(image, label, lm, np.random.default_rng(seed), kinds=["glasses"])
        pupil_hidden = occ.occluder[eye[1], eye[0]] > 0.5
        seen.add(pupil_hidden)
        if not pupil_hidden:  # clear lenses: the eye stays face, the frame does not
            assert occ.label[eye[1], eye[0]] > 0.99
    assert seen == {True, False}  # both sunglasses and clear lenses occur


def test_hands_mostly_take_the_faces_own_skin_and_lie_with_a_contact_shadow() -> None:
    """The hard case of real footage: a hand of the face's own tone and light, its fingers
    on the face, a thin shadow along their edge (segment/hands.py)."""
    import cv2

    image, label, lm = drawn_face()
    skin = np.array([120, 150, 200])
    own, shadowed = 0, 0
    for seed in range(12):
        occ = occlude(image, label, lm, np.random.default_rng(seed), kinds=["fingers"])
        covered = (occ.occluder > 0.95) & (label > 0.5)
        assert covered.sum() > 20, seed  # the fingers lie on the face
        own += np.abs(np.median(occ.image[covered], 0) - skin).max() < 20
        ring = (cv2.dilate((occ.occluder > 0.05).astype(np.uint8), np.ones((3, 3))) > 0) \
            & (occ.occluder < 0.01) & (label > 0.5)
        shadowed += occ.image[ring].mean() < image[ring].mean() - 2
    assert own >= 6  # mostly the face's skin and light
    assert shadowed >= 10


def test_unknown_occluder_kind_is_refused() -> None:
    image, label, lm = drawn_face()
    with pytest.raises(ValueError, match="unknown occluder"):
        occlude(image, label, lm, np.random.default_rng(0), kinds=["umbrella"])


# --- samples and splits -------------------------------------------------------------------

def tiny_bank(n: int = 3, size: int = 128) -> FaceBank:
    faces = [drawn_face(size, seed) for seed in range(n)]
    return FaceBank(images=np.stack([f[0] for f in faces]),
                    labels=np.stack([(f[1] * 255).round().astype(np.uint8) for f in faces]),
                    landmarks=np.stack([f[2] for f in faces]).astype(np.float32),
                    yaws=np.zeros(n, np.float32), clips=np.array(["grid_a1", "grid_d", "pexels"]),
                    frames=np.array([0, 0, 60], np.int32))


def test_batches_depend_only_on_seed_and_step(tmp_path: Path) -> None:
    bank = tiny_bank()
    bank.save(tmp_path / "bank.npz")
    again = FaceBank.load(tmp_path / "bank.npz")
    r = Recipe(resolution=96)
    x1, y1 = make_batch(bank, 3, 5, 4, r)
    x2, y2 = make_batch(again, 3, 5, 4, r)
    x3, _ = make_batch(bank, 3, 6, 4, r)
    assert x1.shape == (4, 96, 96, 3) and x1.dtype == np.uint8 and y1.shape == (4, 96, 96)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)


def test_splits_hold_out_people_and_never_use_the_hand_frames() -> None:
    assert split_of("grid_d", 40) == "val" and split_of("grid_b", 40) == "train"
    assert split_of("pexels", 10) == "val" and split_of("pexels", 300) == "train"
    assert all(split_of("pexels", f) == "test" for f in range(56, 231))
    bank = tiny_bank()
    assert list(bank.split("train").clips) == ["grid_a1"]
    assert list(bank.split("test").frames) == [60]


def test_measures_score_the_label_itself_perfectly_and_the_hulls_by_their_overlap() -> None:
    samples = validation_samples(tiny_bank(), Recipe(resolution=96))
    assert all(s.occluder.max() > 0.5 for s in samples)  # every validation face occluded
    perfect = figures(np.stack([s.label for s in samples]), samples)
    assert perfect["iou_mean"] == 1.0 and perfect["occluder_in_mask"] == 0.0
    base = baselines(samples)
    assert base["mesh_hull"]["occluder_in_mask"] == 1.0  # it knows no occluder
    assert base["mesh_hull"]["iou_mean"] < 1.0
    assert 0 < base["hull68"]["iou_mean"] < base["mesh_hull"]["iou_mean"] + 0.2
    nothing = figures(np.zeros((len(samples), 96, 96), np.float32), samples)
    assert nothing["iou_mean"] == 0.0 and nothing["occluder_in_mask"] == 0.0


# --- the network --------------------------------------------------------------------------

def test_network_gives_a_logit_per_pixel_and_masks_at_the_faces_size() -> None:
    net = SegNet(96).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 96, 96))
    assert out.shape == (2, 1, 96, 96) and out.dtype == torch.float32
    faces = np.random.default_rng(0).integers(0, 255, (3, 200, 200, 3), dtype=np.uint8)
    masks = predict_masks(net, faces)
    assert masks.shape == (3, 200, 200) and masks.dtype == np.float32
    assert masks.min() >= 0 and masks.max() <= 1
    with pytest.raises(ValueError):
        SegNet(100)


def test_save_load_round_trip_is_bit_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = SegNet(96)
    for m in net.modules():  # non-trivial BatchNorm statistics, so they must travel too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    net.eval()
    weights, card_path = save_segmenter(net, tmp_path / "seg", {"data": "test"})
    back, card = load_segmenter(tmp_path / "seg")
    assert card["data"] == "test" and card["architecture"]["resolution"] == 96
    for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b), k
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(net(x), back(x))
    # fp16 halves the file; the weights come back as their fp16 rounding
    save_segmenter(net, tmp_path / "half", {}, dtype="float16")
    half, _ = load_segmenter(tmp_path / "half")
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * weights.stat().st_size
    w = "head.weight"
    assert torch.equal(half.state_dict()[w], net.state_dict()[w].half().float())
    assert json.loads(card_path.read_text())["format"] == "facelab-segmenter-1"


def test_load_refuses_a_card_that_does_not_match_the_weights(tmp_path: Path) -> None:
    save_segmenter(SegNet(96), tmp_path / "seg", {})
    card = json.loads((tmp_path / "seg.json").read_text())
    card["architecture"]["widths"] = [8, 16, 32, 64, 128]
    (tmp_path / "seg.json").write_text(json.dumps(card))
    with pytest.raises(FacelabError, match="do not match") as e:
        load_segmenter(tmp_path / "seg")
    assert "\n" not in str(e.value)
    (tmp_path / "seg.json").write_text("{")
    with pytest.raises(FacelabError, match="card is unreadable"):
        load_segmenter(tmp_path / "seg")


def test_a_few_training_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    batch = make_batch(tiny_bank(), 0, 0, 4, Recipe(resolution=96, occlusion_p=1.0))
    net = SegNet(96)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = [fit.train_step(net, opt, batch) for _ in range(8)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    report = fit.run(net, lambda step: batch, steps=2, report_s=1e9, log=lambda s: None)
    assert report.steps == 2 and len(report.losses) == 1
