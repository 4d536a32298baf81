"""Faceset curation on real extracted faces: each sort keeps its promise on constructed
cases, final picks a covering best N, every operation undoes to the exact bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.faces.faceimage import read_face, read_meta, update_meta, write_face
from facelab.faces.pose import pose_from_68
from facelab.faceset import journal
from facelab.faceset.combine import combine
from facelab.faceset.debug import add_debug, remove_debug
from facelab.faceset.features import CACHE, load_features
from facelab.faceset.final import STEP
from facelab.faceset.folder import Faceset, is_debug, resolve
from facelab.faceset.ops import recover_names, restore_files, trash_files, undo
from facelab.faceset.sort import sort_faceset
from facelab.faceset.stats import faceset_stats
from facelab.workspace import Workspace
from tests.conftest import copy_workspace

# iBUG 68: the index each point takes in a mirrored face (left ↔ right).
MIRROR68 = np.array([*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30,
                     *range(35, 30, -1), 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                     *range(54, 47, -1), *range(59, 54, -1), *range(64, 59, -1),
                     67, 66, 65])


@pytest.fixture
def ws(aligned_faces: Path, tmp_path: Path) -> Workspace:
    return Workspace(copy_workspace(aligned_faces, tmp_path / "ws"))


def side(ws: Workspace, name: str = "src") -> Faceset:
    return resolve(ws, name, None)


def snapshot(*folders: Path) -> dict[str, str]:
    """Every visible file of the folders: relative name → hash of its bytes."""
    out = {}
    for d in folders:
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    out[f"{d.name}/{p.name}"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def state(fs: Faceset) -> dict[str, str]:
    return snapshot(fs.folder, fs.trash)


def add_variant(fs: Faceset, base: Path, name: str, image: np.ndarray | None = None,
                **changes) -> Path:
    """A new face `name` made from `base` with another image and/or metadata fields."""
    img, meta = read_face(base)
    for k, v in changes.items():
        setattr(meta, k, v)
    meta.original_name = name
    dest = fs.folder / name
    write_face(dest, img if image is None else image, meta)
    return dest


def order_of(fs: Faceset) -> list[str]:
    """Original names in the current (sorted) file order."""
    return [read_meta(p).original_name for p in fs.faces()]


@pytest.mark.slow
def test_blurred_copy_sorts_after_its_original(ws: Workspace) -> None:
    fs = side(ws)
    faces = fs.faces()[:3]
    for f in faces:
        img, _ = read_face(f)
        add_variant(fs, f, f"blur_{f.name}", cv2.GaussianBlur(img, (0, 0), 2.5))
        add_variant(fs, f, f"motion_{f.name}", cv2.blur(img, (15, 1)))
    sort_faceset(fs, "blur")
    order = order_of(fs)
    for f in faces:
        assert order.index(f.name) < order.index(f"blur_{f.name}")
    sort_faceset(fs, "motion-blur")
    order = order_of(fs)
    for f in faces:
        assert order.index(f.name) < order.index(f"motion_{f.name}")
    assert all(n.startswith(("blur_", "motion_")) for n in order[-6:])  # blurred: the end


def flipped(path: Path) -> tuple[np.ndarray, dict]:
    """A face mirrored properly: pixels, landmarks (points renumbered left ↔ right), the
    frame transform, yaw and roll; the mesh is dropped (its mirror map is not ours)."""
    img, m = read_face(path)
    s, w = m.size, m.source_size[0]
    face_flip = np.array([[-1, 0, s - 1], [0, 1, 0], [0, 0, 1]], np.float64)
    frame_flip = np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]], np.float64)
    f2f = face_flip @ np.vstack([m.frame_to_face, [0, 0, 1]]) @ frame_flip
    lm = m.landmarks[MIRROR68].copy()
    lm[:, 0] = s - 1 - lm[:, 0]
    src = m.source_landmarks[MIRROR68].copy()
    src[:, 0] = w - 1 - src[:, 0]
    return np.ascontiguousarray(img[:, ::-1]), dict(
        landmarks=lm, source_landmarks=src, frame_to_face=f2f[:2], yaw=-m.yaw,
        roll=-m.roll, mesh=None, source_filename=f"flipped_{m.source_filename}")


def test_flipped_face_sorts_to_the_other_yaw_end(ws: Workspace) -> None:
    fs = side(ws)
    sort_faceset(fs, "yaw")
    right = fs.faces()[-1]  # the face turned furthest to the image's right
    yaws = [pose_from_68(read_meta(p).landmarks)[0] for p in fs.faces()]
    assert yaws == sorted(yaws)
    name = read_meta(right).original_name
    img, changes = flipped(right)
    add_variant(fs, right, "flipped.jpg", img, **changes)
    sort_faceset(fs, "yaw")
    order = order_of(fs)
    assert order[0] == "flipped.jpg" and order[-1] == name
    sort_faceset(fs, "pitch")
    # the sort reads the feature cache, which keeps 6 decimals: ties there may come in
    # either order at full precision
    pitches = [float(np.round(pose_from_68(read_meta(p).landmarks)[1], 6)) for p in fs.faces()]
    assert pitches == sorted(pitches)


def test_image_measures(ws: Workspace) -> None:
    fs = side(ws)
    base = fs.faces()[5]
    img, meta = read_face(base)
    half = img.copy()
    half[:, : img.shape[1] // 2] = 0
    add_variant(fs, base, "half_black.jpg", half)
    add_variant(fs, base, "dark.jpg", (img * 0.5).astype(np.uint8))
    add_variant(fs, base, "small.jpg", frame_to_face=meta.frame_to_face * [[2], [2]])
    sort_faceset(fs, "black")
    assert order_of(fs)[-1] == "half_black.jpg"
    sort_faceset(fs, "brightness")
    order = order_of(fs)
    assert order.index(base.name) < order.index("dark.jpg")
    sort_faceset(fs, "face-size")
    order = order_of(fs)
    assert order[-1] == "small.jpg" and order.index(base.name) < order.index("small.jpg")
    sort_faceset(fs, "hue")
    assert len(order_of(fs)) == 27


def test_hist_groups_alike_and_dissim_puts_odd_first(ws: Workspace) -> None:
    fs = side(ws)
    base = fs.faces()[10]
    img, _ = read_face(base)
    add_variant(fs, base, "twin.jpg", np.clip(img.astype(int) + 1, 0, 255).astype(np.uint8))
    odd = img.copy()
    odd[..., 2] = 255  # a strong red cast: unlike every other face
    add_variant(fs, base, "odd.jpg", odd)
    sort_faceset(fs, "hist")
    order = order_of(fs)
    assert abs(order.index("twin.jpg") - order.index(base.name)) == 1
    sort_faceset(fs, "hist-dissim")
    assert order_of(fs)[0] == "odd.jpg"


def test_origname_and_one_face(ws: Workspace) -> None:
    fs = side(ws)
    originals = [p.name for p in fs.faces()]
    sort_faceset(fs, "hist")
    sort_faceset(fs, "origname")
    assert order_of(fs) == originals
    first = fs.faces()[0]
    second = add_variant(fs, first, "zz_second.jpg", face_index=1)
    before = len(fs.faces())
    rep = sort_faceset(fs, "one-face")
    assert rep.trashed == 2 and len(fs.faces()) == before - 2
    assert {p.name for p in fs.trash.iterdir()} == {first.name, second.name}


def yaw_cells(poses: np.ndarray) -> int:
    return len(set(np.floor(poses[:, 0] / STEP).astype(int)))


def test_final_keeps_a_covering_best_n(ws: Workspace) -> None:
    fs = side(ws, "dst")
    recs = load_features(fs, fs.faces(), ("pose",))
    poses = np.array([r["pose"] for r in recs])
    total = len(recs)
    rep = sort_faceset(fs, "final", target=20)
    assert (rep.kept, rep.trashed) == (20, total - 20)
    assert len(fs.faces()) == 20 and len(list(fs.trash.iterdir())) == total - 20
    kept = np.array([pose_from_68(read_meta(p).landmarks)[:2] for p in fs.faces()])
    assert np.all(np.diff(kept[:, 0]) >= 0)  # ordered by yaw
    rng = np.random.default_rng(0)
    for _ in range(10):
        pick = poses[rng.choice(total, 20, replace=False)]
        assert yaw_cells(kept) >= yaw_cells(pick)
        assert np.ptp(kept[:, 0]) >= np.ptp(pick[:, 0]) - STEP


@pytest.mark.slow
def test_sort_undo_restores_names_and_bytes(ws: Workspace) -> None:
    fs = side(ws, "dst")
    before = state(fs)
    sort_faceset(fs, "hist")
    sort_faceset(fs, "final", target=30)
    sort_faceset(fs, "blur")
    assert state(fs) != before
    undone = undo(fs, steps=3)
    assert [op.command for op in undone] == ["sort blur", "sort final", "sort hist"]
    assert state(fs) == before
    with pytest.raises(FacelabError, match="nothing to undo"):
        undo(fs)


def test_recover_names_after_several_sorts(ws: Workspace) -> None:
    fs = side(ws)
    before = state(fs)
    for by in ("blur", "yaw", "hist"):
        sort_faceset(fs, by)
    recover_names(fs)
    assert state(fs) == before
    assert recover_names(fs) is None  # nothing left to rename


def test_face_without_original_name_gets_one_and_undo_restores_bytes(ws: Workspace) -> None:
    fs = side(ws)
    target = fs.faces()[3]
    meta = read_meta(target)
    meta.original_name = None
    update_meta(target, meta)
    before = state(fs)
    sort_faceset(fs, "hist")
    recover_names(fs)
    assert set(state(fs)) == set(before)  # every name back, that face's included
    undo(fs, steps=2)
    assert state(fs) == before  # bytes too: its metadata without original_name again


def crash_at(k: int):
    def hook(n: int) -> None:
        if n == k:
            raise RuntimeError("simulated crash")
    return journal.step_hook(hook)


@pytest.mark.slow
def test_crash_mid_sort_then_undo_or_resume(ws: Workspace) -> None:
    fs = side(ws, "dst")
    before = state(fs)
    with crash_at(100), pytest.raises(RuntimeError):  # 75 faces: inside the second phase
        sort_faceset(fs, "hist")
    assert state(fs) != before
    with pytest.raises(FacelabError, match=r"unfinished `sort hist`.*undo dst.*faceset resume dst"):
        sort_faceset(fs, "blur")
    undo(fs)
    assert state(fs) == before

    clean = Workspace(copy_workspace(ws.root, ws.root.parent / "clean"))
    sort_faceset(side(clean, "dst"), "hist")
    with crash_at(30), pytest.raises(RuntimeError):  # inside the first phase
        sort_faceset(fs, "hist")
    with crash_at(5), pytest.raises(RuntimeError):  # the undo itself crashes
        undo(fs)
    with pytest.raises(FacelabError, match="unfinished undo of `sort hist`"):
        sort_faceset(fs, "hist")
    rep = sort_faceset(fs, "hist", resume=True)  # finishes the undo, then sorts
    assert rep.resumed is not None and rep.resumed.state == "undone"
    assert state(fs) == state(side(clean, "dst"))


def test_trash_restore_and_undo(ws: Workspace) -> None:
    fs = side(ws)
    before = state(fs)
    victims = fs.faces()[:3]
    trash_files(victims)
    assert len(fs.faces()) == 21 and sorted(p.name for p in fs.trash.iterdir()) == \
        sorted(p.name for p in victims)
    restore_files([fs.trash / victims[0].name])
    assert len(fs.faces()) == 22
    restore_files(None, fs)
    assert state(fs) == before
    undo(fs, steps=3)
    assert state(fs) == before
    with pytest.raises(FacelabError, match="one folder"):
        trash_files([victims[0], side(ws, "dst").faces()[0]])


def test_debug_overlays(ws: Workspace) -> None:
    fs = side(ws)
    faces = fs.faces()
    assert add_debug(fs) == len(faces)
    debug = fs.debug_files()
    assert len(debug) == len(faces) and all(is_debug(p) for p in debug)
    assert fs.faces() == faces  # overlays are never faces …
    from facelab.faces.facetype import FaceType
    from facelab.faceset.folder import list_faces
    from facelab.train.data import Faceset as TrainingFaces

    assert list_faces(fs.folder) == faces  # … nor for training, merging or eval
    assert len(TrainingFaces(fs.folder, 64, FaceType.WHOLE_FACE.value)) == len(faces)
    assert cv2.imread(str(debug[0])).shape == (256, 256, 3)  # any viewer opens them
    with pytest.raises(FacelabError, match="24 debug overlays: run `facelab faceset remove"):
        sort_faceset(fs, "blur")
    theirs = fs.folder / "mine_debug.jpg"
    cv2.imwrite(str(theirs), np.zeros((8, 8, 3), np.uint8))
    assert remove_debug(fs) == len(faces)
    assert theirs.exists() and not fs.debug_files()


def test_combine_copies_and_undo_removes_copies(ws: Workspace, tmp_path: Path) -> None:
    src, dst = side(ws), side(ws, "dst")
    target = Faceset(tmp_path / "person", "person", "--dir person")
    op, skipped = combine([src.folder, dst.folder], target)
    names = [p.name for p in target.faces()]
    assert op.files == len(names) == 24 + 75 and skipped == 0
    assert len(set(names)) == len(names) and any(n.endswith("_1.jpg") for n in names)
    copied = target.folder / "00001_0_1.jpg"
    assert copied.read_bytes() == (dst.folder / "00001_0.jpg").read_bytes()
    undo(target)
    assert target.faces() == [] and len(src.faces()) == 24


@pytest.mark.slow
def test_stats_and_feature_cache(ws: Workspace) -> None:
    fs = side(ws)
    png = ws.root / "stats.png"
    rep = faceset_stats(fs, fs, side(ws, "dst"), png)
    assert rep.count == 24 and rep.lacking is not None and rep.cells >= 1
    assert cv2.imread(str(png)) is not None
    assert (fs.folder / CACHE).exists()
    first = [r.values for r in load_features(fs, fs.faces(), ("pose", "blur"))]
    sort_faceset(fs, "blur")  # renames keep the cache valid (keyed by content)
    again = {r.hash: r.values for r in load_features(fs, fs.faces(), ("pose", "blur"))}
    assert sorted(map(str, first)) == sorted(map(str, again.values()))


def test_features_from_worker_processes_match_in_process(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool path (normally 256+ misses) in chunks of 5: same values, same order."""
    from facelab.faceset import features

    fs = side(ws)
    names = ("pose", "blur", "hist", "hsv")
    serial = [(r.path, r.values) for r in load_features(fs, fs.faces(), names, jobs=1)]
    (fs.folder / CACHE).unlink()
    monkeypatch.setattr(features, "MIN_POOL", 1)
    monkeypatch.setattr(features, "CHUNK", 5)
    pooled = [(r.path, r.values) for r in load_features(fs, fs.faces(), names, jobs=2)]
    assert pooled == serial


def test_errors_are_one_sentence(ws: Workspace, tmp_path: Path) -> None:
    fs = side(ws)
    with pytest.raises(FacelabError, match="Unknown sort method 'nope'"):
        sort_faceset(fs, "nope")
    with pytest.raises(FacelabError, match="24 faces, not more than --target 100"):
        sort_faceset(fs, "final", target=100)
    with pytest.raises(FacelabError, match="--target applies to --by final"):
        sort_faceset(fs, "blur", target=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FacelabError, match="holds no faces"):
        sort_faceset(Faceset(empty, str(empty), "--dir"), "blur")
