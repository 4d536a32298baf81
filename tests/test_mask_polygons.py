"""Mask polygons in the face metadata (faceset/polygons.py) and the labelling flow
(faceset/labels.py), on GRID speaker A's real aligned faces."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.faces.faceimage import read_face, read_meta, update_meta
from facelab.faces.facetype import transform_points
from facelab.faceset import labels
from facelab.faceset.folder import resolve
from facelab.faceset.ops import trash_files, undo
from facelab.faceset.polygons import (
    clear_polygons,
    copy_forward,
    get_polygons,
    map_polygons,
    polygon_mask,
    set_polygons,
)
from facelab.faceset.sort import sort_faceset
from facelab.jpeg import SOS, segments
from facelab.locks import Busy
from facelab.workspace import Workspace
from tests.conftest import lock_holder

SQUARE = [[10, 10], [30, 10], [30, 30], [10, 30]]
HOLE = [[15, 15], [25, 15], [25, 25], [15, 25]]


@pytest.fixture
def ws(aligned_faces: Path, tmp_path: Path) -> Workspace:
    """A workspace holding a copy of dst's 75 aligned faces (one face per frame)."""
    root = tmp_path / "ws"
    shutil.copytree(aligned_faces / "data_dst" / "aligned", root / "data_dst" / "aligned")
    return Workspace(root)


def aligned(ws: Workspace, name: str) -> Path:
    return ws.aligned_dir("dst") / name


def pixel_bytes(face: Path | bytes) -> bytes:
    """The JPG from its first SOS on: the entropy-coded pixels."""
    data = face if isinstance(face, bytes) else face.read_bytes()
    sos = next(s for s in segments(data) if s.marker == SOS)
    return data[sos.start:]


def square_at(xy: np.ndarray, half: float = 3.0) -> list[list[float]]:
    x, y = (float(v) for v in xy)
    return [[x - half, y - half], [x + half, y - half], [x + half, y + half],
            [x - half, y + half]]


def moved(meta, mat: np.ndarray, rect_shift: tuple[int, int]) -> None:
    """Make `meta` the same face after the whole frame moved by the 2×3 similarity `mat`
    (its aligned crop, pixels and aligned landmarks are then unchanged)."""
    full = np.vstack([mat, [0, 0, 1]])
    meta.source_landmarks = transform_points(meta.source_landmarks, mat)
    meta.frame_to_face = (np.vstack([meta.frame_to_face, [0, 0, 1]]) @ np.linalg.inv(full))[:2]
    x0, y0, x1, y1 = meta.source_rect
    dx, dy = rect_shift
    meta.source_rect = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)


def test_polygon_mask_square_hole_and_order() -> None:
    inc = {"type": "include", "pts": SQUARE}
    exc = {"type": "exclude", "pts": HOLE}
    want = np.zeros((64, 64), np.float32)
    want[10:31, 10:31] = 1  # the outline's pixels belong to the polygon
    m = polygon_mask([inc], 64)
    assert m.dtype == np.float32 and m.shape == (64, 64)
    np.testing.assert_array_equal(m, want)
    want[15:26, 15:26] = 0
    np.testing.assert_array_equal(polygon_mask([inc, exc], 64), want)
    # painted in order: an include after the exclude fills back (an island in the hole)...
    island = {"type": "include", "pts": [[19, 19], [21, 19], [21, 21], [19, 21]]}
    with_island = want.copy()
    with_island[19:22, 19:22] = 1
    np.testing.assert_array_equal(polygon_mask([inc, exc, island], 64), with_island)
    # ...and an exclude drawn before any include cuts nothing
    np.testing.assert_array_equal(polygon_mask([exc, inc], 64), polygon_mask([inc], 64))
    assert not polygon_mask([], 64).any()
    # sub-pixel vertices: the same square nudged inside its pixels paints the same pixels
    nudged = [[x + (0.3 if x == 10 else -0.3), y + (0.3 if y == 10 else -0.3)]
              for x, y in SQUARE]
    np.testing.assert_array_equal(polygon_mask([{"type": "include", "pts": nudged}], 64),
                                  polygon_mask([inc], 64))
    for bad in (0, 5000, True, 64.0):
        with pytest.raises(FacelabError, match="mask size"):
            polygon_mask([inc], bad)  # type: ignore[arg-type]


@pytest.mark.slow
def test_set_get_clear_round_trip_keeps_the_pixels(ws: Workspace) -> None:
    face = aligned(ws, "00003_0.jpg")
    before, before_meta = face.read_bytes(), read_meta(face)
    assert get_polygons(face) == []  # a face written before any polygon reads as before
    polys = [{"type": "include", "pts": [[20.5, 30.25], [200, 30], [120, 240]]},
             {"type": "exclude", "pts": np.array([[100.0, 100], [140, 100], [120, 130]])}]
    stored = set_polygons(face, polys)
    assert stored == get_polygons(face) == [
        {"type": "include", "pts": [[20.5, 30.25], [200.0, 30.0], [120.0, 240.0]]},
        {"type": "exclude", "pts": [[100.0, 100.0], [140.0, 100.0], [120.0, 130.0]]}]
    assert pixel_bytes(face) == pixel_bytes(before)
    np.testing.assert_array_equal(read_face(face)[0],
                                  cv2.imdecode(np.frombuffer(before, np.uint8), cv2.IMREAD_COLOR))
    after = read_meta(face)
    after.mask_polys = []
    assert after == before_meta  # nothing else in the metadata changed
    mask = polygon_mask(get_polygons(face), read_meta(face).size)
    assert mask[200, 10] == 0 and mask[60, 120] == 1 and mask[110, 120] == 0  # [y, x]
    clear_polygons(face)
    assert get_polygons(face) == [] and face.read_bytes() == before


@pytest.mark.slow
def test_malformed_polygons_are_refused_in_one_sentence(ws: Workspace) -> None:
    face = aligned(ws, "00004_0.jpg")
    before = face.read_bytes()
    tri = [[0, 0], [10, 0], [0, 10]]
    bad = {
        "not a list": "polygons", "a dict": {"type": "include", "pts": tri},
        "two points": [{"type": "include", "pts": tri[:2]}],
        "unknown kind": [{"type": "add", "pts": tri}],
        "other key names": [{"kind": "include", "points": tri}],
        "an extra key": [{"type": "include", "pts": tri, "id": 1}],
        "NaN": [{"type": "exclude", "pts": [[0, 0], [math.nan, 1], [2, 2]]}],
        "infinity": [{"type": "exclude", "pts": [[0, 0], [math.inf, 1], [2, 2]]}],
        "a string number": [{"type": "include", "pts": [[0, 0], ["1.5", 1], [2, 2]]}],
        "a boolean": [{"type": "include", "pts": [[0, 0], [True, 1], [2, 2]]}],
        "a huge integer": [{"type": "include", "pts": [[0, 0], [10 ** 400, 1], [2, 2]]}],
        "three numbers": [{"type": "include", "pts": [[0, 0, 0], [1, 1, 1], [2, 2, 2]]}],
        "far outside the face": [{"type": "include", "pts": [[0, 0], [900, 1], [2, 2]]}],
        "too many polygons": [{"type": "include", "pts": tri}] * 1001,
    }
    for why, polys in bad.items():
        with pytest.raises(FacelabError) as e:
            set_polygons(face, polys)
        msg = str(e.value)
        assert msg.startswith("The mask polygons are invalid (") and msg.endswith(")."), why
        assert "\n" not in msg and "Traceback" not in msg, why
    assert face.read_bytes() == before  # nothing written


@pytest.mark.slow
def test_copy_forward_follows_the_face_and_stays_on_its_track(ws: Workspace) -> None:
    src = aligned(ws, "00010_0.jpg")
    a = read_meta(src)
    size = a.size
    nose = square_at(a.landmarks[30])
    set_polygons(src, [{"type": "include", "pts": nose},
                       {"type": "exclude", "pts": [[0, 0], [40, 0], [0, 40]]}])
    # frame 11: the same face after the camera panned 20 px and rolled 5° (the aligned
    # crop is then the same: a moved frame, built from the real face's own metadata)
    b_path = aligned(ws, "00011_0.jpg")
    b = read_meta(b_path)
    unmoved = map_polygons(read_meta(src).mask_polys, a, b)
    t = math.radians(5)
    c = np.mean(b.source_landmarks, axis=0)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    moved(b, np.hstack([rot, (c - rot @ c + [20, 8])[:, None]]), (20, 8))
    update_meta(b_path, b)
    # frames 12 and 17 also hold another person, far to the right, found first (face 0);
    # frame 17 lost our face: the run must end there, not jump to the other person
    others = {}
    for frame, ours in ((12, "00012_1.jpg"), (17, None)):
        other = aligned(ws, f"{frame:05d}_0.jpg")
        if ours:
            shutil.copyfile(other, aligned(ws, ours))
            m = read_meta(aligned(ws, ours))
            m.face_index, m.original_name = 1, ours
            update_meta(aligned(ws, ours), m)
        o = read_meta(other)
        moved(o, np.array([[1.0, 0, 150], [0, 1, 0]]), (150, 0))
        update_meta(other, o)
        others[other] = other.read_bytes()
    # frame 13 was confirmed, 14 already has its own polygons, 15 was skipped (W)
    confirmed = labels.confirm(ws, "dst", "00013_0.jpg")
    own = [{"type": "include", "pts": [[1, 1], [5, 1], [1, 5]]}]
    set_polygons(aligned(ws, "00014_0.jpg"), own)
    skipped = labels.skip(ws, "dst", "00015_0.jpg")
    skipped_bytes = skipped.read_bytes()

    out = copy_forward(ws, "dst", "00010_0.jpg", 10)
    assert [p.name for p in out] == ["00011_0.jpg", "00012_1.jpg", "00013_0.jpg",
                                     "00016_0.jpg"]  # 14 and 15 kept, the run ends at 17
    assert out[2] == confirmed and skipped.read_bytes() == skipped_bytes
    for other, data in others.items():
        assert other.read_bytes() == data, other.name  # the other person is untouched
    assert get_polygons(aligned(ws, "00014_0.jpg")) == own
    # the pan and roll are followed exactly: the mask is where it would be without them
    got = get_polygons(b_path)
    for p, q in zip(got, unmoved, strict=True):
        np.testing.assert_allclose(p["pts"], q["pts"], atol=1e-2)
    # through the frame alone the pan would have carried the mask off the nose
    frame_only = transform_points(transform_points(np.array(nose), a.face_to_frame()),
                                  b.frame_to_face)
    assert np.abs(frame_only - np.array(got[0]["pts"])).max() > 10
    for p in out:
        m = read_meta(p)
        centre = np.mean(m.mask_polys[0]["pts"], axis=0)
        assert np.linalg.norm(centre - m.landmarks[30]) < 0.02 * size, p.name
        assert m.mask_polys[1]["type"] == "exclude"
    # overwrite replaces the face's own polygons and links through to the end of the run
    out = copy_forward(ws, "dst", "00010_0.jpg", 3, overwrite=True)
    assert [p.name for p in out] == ["00011_0.jpg", "00012_1.jpg", "00013_0.jpg"]
    for bad in (0, -1, 10_001, True, 2.0):
        with pytest.raises(FacelabError, match="number of faces"):
            copy_forward(ws, "dst", "00010_0.jpg", bad)  # type: ignore[arg-type]
    with pytest.raises(FacelabError, match="no mask polygons"):
        copy_forward(ws, "dst", "00030_0.jpg", 3)


@pytest.mark.slow
def test_skip_confirm_undo_and_refused_names(ws: Workspace) -> None:
    data = ws.frames_dir("dst")
    poly = [{"type": "include", "pts": [[10, 10], [90, 10], [50, 90]]}]
    set_polygons(aligned(ws, "00005_0.jpg"), poly)
    pixels = pixel_bytes(aligned(ws, "00005_0.jpg"))
    skipped = labels.skip(ws, "dst", "00005_0.jpg")
    assert skipped == data / "aligned_skipped" / "00005_0.jpg"
    assert not aligned(ws, "00005_0.jpg").exists() and get_polygons(skipped) == poly
    assert labels.labelled_faces(ws, "dst") == [skipped]
    conf = labels.confirm(ws, "dst", "aligned_skipped/00005_0.jpg")  # skipped → confirmed
    assert conf == data / "aligned_confirmed" / "00005_0.jpg" and not skipped.exists()
    assert labels.confirm(ws, "dst", conf) == conf  # already there: nothing moves
    labels.confirm(ws, "dst", "00006_0.jpg")
    # a name already taken in the target folder gets a suffix; nothing is overwritten
    shutil.copyfile(aligned(ws, "00007_0.jpg"), data / "aligned_skipped" / "00007_0.jpg")
    assert labels.skip(ws, "dst", "00007_0.jpg").name == "00007_0_1.jpg"
    assert labels.labelled_faces(ws, "dst") == [conf]
    assert labels.labelled_faces(ws, "dst", ("aligned",)) == []
    # undo brings them back, in reverse order, through the faceset's journal
    assert [op.command for op in labels.undo(ws, "dst", 2)] == ["skip 00007_0.jpg",
                                                                 "confirm 00006_0.jpg"]
    assert aligned(ws, "00007_0.jpg").exists() and aligned(ws, "00006_0.jpg").exists()
    undo(resolve(ws, "dst", None), 2)  # `facelab faceset undo dst` undoes them alike
    assert get_polygons(aligned(ws, "00005_0.jpg")) == poly
    assert pixel_bytes(aligned(ws, "00005_0.jpg")) == pixels
    assert sorted(p.name for p in (data / "aligned_confirmed").iterdir()) == []
    for bad in ("../aligned/00008_0.jpg", "aligned_trash/00008_0.jpg", "/etc/passwd",
                "00008_0.png", ".facelab-journal", "aligned/x/00008_0.jpg", "",
                "a\\b.jpg", "nothere.jpg"):
        with pytest.raises(FacelabError) as e:
            labels.skip(ws, "dst", bad)
        assert "\n" not in str(e.value) and str(e.value).endswith("."), bad
    with pytest.raises(FacelabError, match="Unknown side"):
        labels.skip(ws, "both", "00008_0.jpg")
    (data / "aligned" / "link.jpg").symlink_to(aligned(ws, "00008_0.jpg"))
    with pytest.raises(FacelabError, match="is a link"):
        labels.skip(ws, "dst", "link.jpg")
    # another process holding the side's lock (an extraction, a sort) refuses the writes
    with lock_holder(ws.root, "faces-dst"):
        with pytest.raises(Busy, match="in use"):
            set_polygons(aligned(ws, "00008_0.jpg"), poly)
        with pytest.raises(Busy, match="in use"):
            labels.skip(ws, "dst", "00008_0.jpg")


@pytest.mark.slow
def test_polygons_survive_sort_trash_and_undo(ws: Workspace) -> None:
    fs = resolve(ws, "dst", None)
    want = {}
    for i, name in enumerate(("00020_0.jpg", "00040_0.jpg", "00060_0.jpg")):
        polys = [{"type": "include", "pts": [[10.0 + i, 10.0], [100.0, 10.0], [50.0, 90.0]]}]
        set_polygons(aligned(ws, name), polys)
        want[name] = (polys, pixel_bytes(aligned(ws, name)))

    def by_original() -> dict[str, Path]:
        return {read_meta(p).original_name: p for p in fs.faces()}

    def check(where: dict[str, Path]) -> None:
        for name, (polys, pixels) in want.items():
            assert get_polygons(where[name]) == polys, name
            assert pixel_bytes(where[name]) == pixels, name

    report = sort_faceset(fs, "yaw")
    assert report.moved > 0
    now = by_original()
    assert now["00020_0.jpg"].name != "00020_0.jpg"  # renamed by the sort
    check(now)
    assert len(labels.labelled_faces(ws, "dst")) == 3
    # the shot's next faces are found by their metadata once their names are gone
    out = copy_forward(ws, "dst", now["00020_0.jpg"].name, 2)
    assert [read_meta(p).original_name for p in out] == ["00021_0.jpg", "00022_0.jpg"]
    clear_polygons(out[0])
    clear_polygons(out[1])
    trash_files([now["00040_0.jpg"]])
    trashed = ws.frames_dir("dst") / "aligned_trash" / now["00040_0.jpg"].name
    assert get_polygons(trashed) == want["00040_0.jpg"][0]
    undo(fs, 2)  # the trash, then the sort
    check({n: aligned(ws, n) for n in want})
