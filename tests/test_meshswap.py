"""meshswap on real GRID faces: descriptors that follow the mouth and eyes, retrieval that
answers a blink with a blink, a target shape that keeps src's proportions and dst's
expression, warps that are exact where they should be, and bad src facesets refused in one
sentence naming the footage to add."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.faces.faceimage import FaceMeta, read_face, write_face
from facelab.meshswap import descriptors as ds
from facelab.meshswap.descriptors import describe, describe_faces, meshes_of
from facelab.meshswap.geometry import neutral_mask, neutral_mesh, similarity, target_mesh
from facelab.meshswap.retrieval import (
    MIN_FACES,
    Index,
    candidate_weights,
    check_variety,
    eyes_closed,
    mouth_open,
)
from facelab.meshswap.warp import blend, face_mask, plan_warp, warp, warp_candidates
from tests.conftest import data_file

MOUTH, EYE_L, EYE_R = (ds.FEATURES.index(k) for k in ("mouth", "eye_left", "eye_right"))


@dataclasses.dataclass
class Person:
    """One speaker's aligned faces, every frame of a GRID clip, read back from face JPGs."""

    images: list[np.ndarray]
    metas: list[FaceMeta]
    folder: Path  # the face JPGs

    @property
    def meshes(self) -> np.ndarray:
        return meshes_of(self.metas)

    @property
    def desc(self) -> np.ndarray:
        return describe_faces(self.metas)

    @property
    def pose(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([m.yaw for m in self.metas]), np.array([m.pitch for m in self.metas]))


def _extract(clip: Path, folder: Path) -> Person:
    import av

    from facelab.faces.extractor import Extractor, ExtractorOptions

    ex = Extractor(ExtractorOptions(detector="fast", device="cpu"))
    folder.mkdir()
    images, metas = [], []
    with av.open(str(clip)) as box:
        for i, frame in enumerate(box.decode(video=0)):
            img = np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
            faces = ex.run(img)
            assert faces, f"no face in frame {i} of {clip.name}"
            path = folder / f"{i:05d}_0.jpg"
            write_face(path, faces[0].image, faces[0].meta(f"{i:05d}.png", img.shape[1::-1]))
            image, meta = read_face(path)  # through the file, as a faceset is read
            images.append(image)
            metas.append(meta)
    return Person(images, metas, folder)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict[str, Person]:
    """Speaker B (src) and speaker A (dst): all 75 frames each, blinks and speech included
    (about 5 s of extraction, once for the module)."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")
    pytest.importorskip("av")
    root = tmp_path_factory.mktemp("meshswap")
    return {"src": _extract(data_file("grid/speaker_b.mpg"), root / "b"),
            "dst": _extract(data_file("grid/speaker_a_1.mpg"), root / "a")}


def close_eyes(image: np.ndarray, meta: FaceMeta) -> tuple[np.ndarray, FaceMeta]:
    """A blink made from an open-eyed face: each upper lid (and the iris under it) moved
    nearly onto the lower lid in the mesh, the image warped along with it."""
    mesh = meta.mesh.copy()
    for upper, lower, iris in ((ds.EYE_LEFT_UPPER, ds.EYE_LEFT_LOWER, ds.IRIS_LEFT),
                               (ds.EYE_RIGHT_UPPER, ds.EYE_RIGHT_LOWER, ds.IRIS_RIGHT)):
        down = 0.9 * (meta.mesh[list(lower)] - meta.mesh[list(upper)])
        mesh[list(upper)] += down
        mesh[list(iris)] += down.mean(0)
    shut = warp(image, meta.mesh, plan_warp(mesh, image.shape[:2]))
    return shut, dataclasses.replace(meta, mesh=mesh)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    err = ((a.astype(np.float64) - b)[mask > 0] ** 2).mean()
    return float(10 * np.log10(255**2 / max(err, 1e-10)))


def ratios(mesh: np.ndarray) -> np.ndarray:
    """Identity measures, unchanged by pose and size: nose length, face width, nose width
    and eye width, each over the outer-eye-corner distance (3-D)."""
    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(mesh[..., a, :] - mesh[..., b, :], axis=-1)
    iod = dist(33, 263)
    return np.stack([dist(168, 2), dist(234, 454), dist(129, 358),
                     (dist(33, 133) + dist(362, 263)) / 2], -1) / iod[..., None]


# -- descriptors ------------------------------------------------------------------------


@pytest.mark.slow
def test_mouth_and_eye_descriptors_follow_the_68_landmarks(grid):
    for person in grid.values():
        lm = np.stack([m.landmarks for m in person.metas])
        size = np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1)
        lips = np.linalg.norm(lm[:, 62] - lm[:, 66], axis=-1) / size
        d = person.desc
        wide, shut = int(lips.argmax()), int(lips.argmin())
        assert d[wide, MOUTH] > d[shut, MOUTH] + 0.15, (d[wide, MOUTH], d[shut, MOUTH])
        assert np.corrcoef(lips, d[:, MOUTH])[0, 1] > 0.95
        # the eye on the image's left is 68-point 36–41: the blink frames agree
        lids = (np.linalg.norm(lm[:, 37] - lm[:, 41], axis=-1)
                + np.linalg.norm(lm[:, 38] - lm[:, 40], axis=-1)) / size
        assert np.corrcoef(lids, d[:, EYE_L])[0, 1] > 0.95
        blink = int(lids.argmin())
        assert d[blink, [EYE_L, EYE_R]].max() < 0.5 * np.median(d[:, EYE_L])
        assert np.abs(d[:, :2] - np.c_[person.pose]).max() == 0  # pose from the metadata


def test_descriptors_of_a_stack_match_one_by_one_and_refuse_bad_shapes():
    rng = np.random.default_rng(0)
    meshes = rng.normal(0, 50, (4, 478, 3)) + 128
    all_at_once = describe(meshes, np.arange(4.0), -np.arange(4.0))
    for i in range(4):
        assert np.allclose(describe(meshes[i], float(i), -float(i)), all_at_once[i])
    assert describe(meshes[:, :468], 0.0, 0.0)[:, 6:].tolist() == [[0.0, 0.0]] * 4  # no iris
    with pytest.raises(ValueError):
        describe(meshes[:, :68], 0.0, 0.0)


# -- retrieval --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_blinking_dst_face_retrieves_the_blinking_src_face(grid):
    src, dst = grid["src"], grid["dst"]
    open_src = np.flatnonzero(~eyes_closed(src.desc))
    base = int(np.flatnonzero(neutral_mask(src.desc))[0])
    shut_img, shut_meta = close_eyes(src.images[base], src.metas[base])
    assert not np.array_equal(shut_img, src.images[base])
    metas = [src.metas[i] for i in open_src] + [shut_meta]
    index = Index(describe_faces(metas))
    assert eyes_closed(index.descriptors[-1:], index.descriptors)[0]

    calm = np.flatnonzero(neutral_mask(dst.desc))
    j = int(calm[len(calm) // 2])
    _, dst_shut = close_eyes(dst.images[j], dst.metas[j])
    query = describe_faces([dst_shut])[0]
    assert index.nearest(query, 3)[0][0] == len(metas) - 1
    # the same through the target mesh (src's shape, dst's expression), as the swap asks
    src_neutral = neutral_mesh(meshes_of(metas[:-1]))
    dst_neutral = neutral_mesh(dst.meshes)
    target = target_mesh(src_neutral, dst_shut.mesh, dst_neutral)
    assert index.nearest(describe(target, dst_shut.yaw, dst_shut.pitch), 1)[0][0] == len(metas) - 1
    # and an open-eyed dst face does not
    assert index.nearest(describe_faces([dst.metas[j]])[0], 1)[0][0] != len(metas) - 1


@pytest.mark.slow
def test_real_blinks_and_speech_retrieve_their_like(grid):
    src, dst = grid["src"], grid["dst"]
    index = Index(src.desc)
    targets = target_mesh(neutral_mesh(src.meshes, src.desc), dst.meshes,
                          neutral_mesh(dst.meshes, dst.desc))
    query = describe(targets, *dst.pose)
    near, dist = index.nearest(query, 3)
    assert near.shape == dist.shape == (len(dst.metas), 3)
    assert (np.diff(dist, axis=1) >= 0).all()
    blinks = np.flatnonzero(eyes_closed(dst.desc))
    assert len(blinks) >= 3  # speaker A blinks three times in the clip
    assert eyes_closed(src.desc)[near[blinks, 0]].all()
    talking = np.flatnonzero(mouth_open(dst.desc))
    assert mouth_open(src.desc)[near[talking, 0]].mean() > 0.8


def test_nearest_orders_by_weighted_distance():
    d = np.zeros((5, len(ds.FEATURES)))
    d[:, 0] = [0, 5, 10, 20, 40]  # yaw, degrees
    d[4, MOUTH] = 0.05
    index = Index(d)
    q = np.zeros(len(ds.FEATURES))
    q[0] = 12
    near, dist = index.nearest(q, 3)
    assert near.tolist() == [2, 1, 3]
    assert np.allclose(dist, [0.2, 0.7, 0.8])  # 10° is one unit
    assert index.nearest(q, 99)[0].tolist() == [2, 1, 3, 0, 4]
    w = candidate_weights(dist)
    assert np.isclose(w.sum(), 1) and (np.diff(w) < 0).all()


def test_faces_without_a_mesh_are_named():
    meta = FaceMeta(face_type="full", size=64, landmarks=np.zeros((68, 2)),
                    source_landmarks=np.zeros((68, 2)), frame_to_face=np.eye(2, 3),
                    source_filename="00001.png", source_rect=(0, 0, 10, 10),
                    source_size=(64, 64), face_index=0, yaw=0, pitch=0, roll=0,
                    detector="x", score=1, original_name="00001_0.jpg")
    with pytest.raises(FacelabError, match=r"00001_0\.jpg has no FaceMesh mesh.*extract"):
        describe_faces([meta])


@pytest.mark.slow
def test_a_poor_src_faceset_is_one_sentence_naming_what_to_add(grid):
    d = grid["src"].desc
    check_variety(d)  # speaker B's clip blinks and talks: enough
    cases = {
        "small": (d[:10], ["has 10 faces", f"at least {MIN_FACES}", "add more src footage"]),
        "no blink": (d[~eyes_closed(d)], ["eyes closed in 0 of", "src blinks", "--preset quick96"]),
        "no speech": (d[~mouth_open(d)], ["mouth open in 0 of", "src talks"]),
        "neutral only": (d[neutral_mask(d)], ["faces blink or talk", "eyes closed in",
                                              "mouth open in", "src blinks and talks"]),
    }
    for name, (faces, words) in cases.items():
        with pytest.raises(FacelabError) as err:
            check_variety(faces)
        msg = str(err.value)
        assert "\n" not in msg and msg.endswith("."), (name, msg)
        for w in words:
            assert w in msg, (name, w, msg)


# -- geometry ---------------------------------------------------------------------------


@pytest.mark.slow
def test_target_keeps_src_shape_and_follows_dst_expression(grid):
    src, dst = grid["src"], grid["dst"]  # two different men
    src_neutral = neutral_mesh(src.meshes, src.desc)
    dst_neutral = neutral_mesh(dst.meshes, dst.desc)
    target = target_mesh(src_neutral, dst.meshes, dst_neutral)
    assert target.shape == dst.meshes.shape
    own, theirs = ratios(src_neutral), ratios(dst_neutral)
    gap = np.abs(own - theirs)
    assert gap[0] > 0.03  # B's nose is longer for his eye spacing than A's
    to_src = np.abs(ratios(target) - own).sum(1)
    to_dst = np.abs(ratios(target) - theirs).sum(1)
    assert np.median(to_src) < 0.4 * np.median(to_dst), (np.median(to_src), np.median(to_dst))
    assert (np.abs(ratios(target)[:, 0] - own[0]) < np.abs(ratios(target)[:, 0] - theirs[0])).all()
    # expression: dst's mouth and eyes, frame by frame
    t = describe(target, *dst.pose)
    d = dst.desc
    for k in (MOUTH, EYE_L, EYE_R):
        assert np.corrcoef(t[:, k], d[:, k])[0, 1] > 0.98
    assert np.abs(t[:, MOUTH] - d[:, MOUTH]).max() < 0.05
    # pose and place: dst's (the rigid points land where dst's are)
    rigid = similarity(target, dst.meshes)
    assert np.allclose(rigid.scale, 1, atol=0.03)
    assert np.abs(np.degrees(np.arccos(np.clip((np.trace(rigid.rot, axis1=-2, axis2=-1) - 1) / 2,
                                               -1, 1)))).max() < 2
    # a person onto themself: their own face back, up to the neutral's approximation
    same = target_mesh(dst_neutral, dst.meshes, dst_neutral)
    assert np.abs(same - dst.meshes)[..., :2].max() < 1e-6


def test_similarity_recovers_a_known_pose():
    rng = np.random.default_rng(1)
    pts = rng.normal(0, 1, (478, 3))
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                    [-np.sin(angle), 0, np.cos(angle)]])
    moved = 3 * pts @ rot.T + [5, -2, 1]
    fit = similarity(pts, moved)
    assert np.isclose(fit.scale, 3) and np.allclose(fit.rot, rot)
    assert np.allclose(fit.apply(pts), moved) and np.allclose(fit.invert(moved), pts)


# -- warp -------------------------------------------------------------------------------


@pytest.mark.slow
def test_warp_onto_its_own_mesh_is_identity_and_a_shift_moves_pixels(grid):
    person = grid["src"]
    image, mesh = person.images[20], person.metas[20].mesh
    size = image.shape[:2]
    hull = face_mask(mesh, size)
    assert psnr(warp(image, mesh, plan_warp(mesh, size)), image, hull) > 40
    dx, dy = 6, -4
    moved = mesh + np.array([dx, dy, 0])
    shifted = warp(image, mesh, plan_warp(moved, size))
    expected = np.roll(image, (dy, dx), axis=(0, 1))
    inside = cv2.erode(face_mask(moved, size), np.ones((5, 5), np.uint8))
    assert psnr(shifted, expected, inside) > 40


@pytest.mark.slow
def test_warp_brings_one_frame_onto_another(grid):
    person = grid["src"]
    d = person.desc
    a = int(np.argmax(d[:, MOUTH]))  # mouth widest open …
    b = int(np.flatnonzero(neutral_mask(d))[0])  # … onto a closed, neutral one
    img_a, img_b = person.images[a], person.images[b]
    mesh_a, mesh_b = person.metas[a].mesh, person.metas[b].mesh
    region = cv2.erode(face_mask(mesh_b, img_b.shape[:2]), np.ones((9, 9), np.uint8))
    before = psnr(img_a, img_b, region)
    after = psnr(warp(img_a, mesh_a, plan_warp(mesh_b, img_b.shape[:2])), img_b, region)
    assert after > before + 2, (before, after)


def test_every_pixel_lies_in_the_triangle_that_owns_it():
    rng = np.random.default_rng(2)
    pts = np.concatenate([rng.uniform(20, 108, (200, 2)), [[64.0, 64.0]] * 2])  # a repeat
    plan = plan_warp(pts, (128, 120))
    assert (plan.owner >= 0).all()
    ys, xs = np.mgrid[0:128, 0:120]
    tri = plan.points[plan.triangles[plan.owner]]  # H×W×3×2
    p = np.stack([xs, ys], -1)[..., None, :]
    edge = np.roll(tri, -1, axis=-2) - tri
    cross = edge[..., 0] * (p - tri)[..., 1] - edge[..., 1] * (p - tri)[..., 0]
    area = np.sign(cross.sum(-1, keepdims=True))
    assert (cross * area >= -1e-6 * np.abs(edge).max()).all()  # inside or on an edge


def test_blend_weights_and_identical_candidates():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(blend([img, img, img], np.array([0.2, 0.3, 0.5])), img)
    other = np.zeros_like(img)
    half = blend([img, other], np.array([1.0, 1.0]))
    assert np.abs(half.astype(int) - img.astype(int) // 2).max() <= 1
    pts = rng.uniform(10, 54, (60, 2))
    out = warp_candidates([img, img], [pts, pts], pts, candidate_weights(np.array([0.5, 1.5])))
    assert np.array_equal(out, img)
    with pytest.raises(ValueError):
        blend([img], np.array([0.0]))
