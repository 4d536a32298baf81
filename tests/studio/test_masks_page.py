"""The mask editor in Debian's chromium against the real server, on GRID speaker A's real
aligned faces (dst: one face per frame, 75 frames): polygons drawn with the mouse land in
the face's metadata where the clicks were, every documented key does what it says, a mask
is copied along the shot, and bad requests and paths are refused with a sentence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facelab.faces.faceimage import read_meta
from facelab.faceset.polygons import get_polygons, polygon_mask, set_polygons
from tests.conftest import copy_workspace
from tests.studio.conftest import Studio, screenshot, studio_server, wait_until

SQUARE = [[60, 60], [190, 60], [190, 200], [60, 200]]


@pytest.fixture(scope="module")
def studio(aligned_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A private copy of the session's workspace (the tests move and rewrite its faces;
    each test works on its own frames)."""
    ws = copy_workspace(aligned_faces, tmp_path_factory.mktemp("masks_page") / "ws")
    with studio_server(ws) as s:
        yield s


def face(studio: Studio, n: int, folder: str = "aligned") -> Path:
    return studio.ws / "data_dst" / folder / f"{n:05d}_0.jpg"


def _open(page: Any, studio: Studio, n: int) -> None:
    page.goto(f"{studio.url}#/masks?side=dst&face={n:05d}_0.jpg")
    _at(page, n)


def _box(page: Any, key: str) -> str:
    return page.evaluate(f"document.getElementById('masks').dataset.{key}")


def _idle(page: Any) -> None:
    wait_until(page, "(() => { const b = document.getElementById('masks');"
                     " return b && b.dataset.ready === '1' && !b.dataset.busy; })()")


def _at(page: Any, n: int, folder: str = "aligned") -> None:
    _idle(page)
    wait_until(page, f"document.getElementById('masks').dataset.face === "
                     f"'{folder}/{n:05d}_0.jpg'")


def _clicks(page: Any, size: int, pts: list[list[float]], button: str) -> list[list[float]]:
    """Click at face pixels `pts` (through the canvas's on-screen box); returns where the
    clicks really were, in face pixels (the mouse moves by whole CSS pixels)."""
    box = page.locator("#mask-canvas").bounding_box()
    k = box["width"] / size
    where = []
    for x, y in pts:
        cx, cy = round(box["x"] + (x + 0.5) * k), round(box["y"] + (y + 0.5) * k)
        page.mouse.click(cx, cy, button=button)
        where.append([(cx - box["x"]) / k - 0.5, (cy - box["y"]) / k - 0.5])
    return where


def _close(page: Any) -> None:
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.click(box["x"] + 5, box["y"] + 5, button="middle")


def _near(got: list[list[float]], want: list[list[float]]) -> None:
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert abs(gx - wx) <= 1 and abs(gy - wy) <= 1, (got, want)


@pytest.mark.slow
def test_polygons_drawn_with_the_mouse_are_saved_where_clicked(studio: Studio,
                                                                page: Any) -> None:
    _open(page, studio, 10)
    size = read_meta(face(studio, 10)).size
    include = _clicks(page, size, SQUARE, "left")
    assert _box(page, "points") == "4" and _box(page, "polys") == "0"
    _close(page)  # middle click
    assert _box(page, "polys") == "1"
    hole = [[100, 100], [150, 100], [125, 150]]
    exclude = _clicks(page, size, hole, "right")
    _clicks(page, size, [[20, 20]], "left")  # an include point while the exclude is open:
    assert _box(page, "points") == "7"       # refused (one type per polygon)
    page.mouse.move(*_screen(page, size, 125, 125))
    page.mouse.wheel(0, -100)  # wheel up: the last point undone
    wait_until(page, "document.getElementById('masks').dataset.points === '6'")
    page.mouse.wheel(0, 100)  # wheel down: redone
    wait_until(page, "document.getElementById('masks').dataset.points === '7'")
    _close(page)
    assert _box(page, "dirty") == "1"
    screenshot(page, "studio_masks.png")
    page.keyboard.press("x")  # X: save
    _idle(page)
    assert _box(page, "dirty") == "0"
    polys = get_polygons(face(studio, 10))
    assert [p["type"] for p in polys] == ["include", "exclude"]
    _near(polys[0]["pts"], include)
    _near(polys[1]["pts"], exclude)
    mask = polygon_mask(polys, size)
    assert mask[80, 80] == 1 and mask[115, 125] == 0 and mask[30, 30] == 0

    page.reload()  # read back by the page from the face's metadata
    _at(page, 10)
    assert _box(page, "polys") == "2" and _box(page, "points") == "7"


def _screen(page: Any, size: int, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#mask-canvas").bounding_box()
    k = box["width"] / size
    return box["x"] + (x + 0.5) * k, box["y"] + (y + 0.5) * k


@pytest.mark.slow
def test_keys_walk_save_skip_confirm_and_undo(studio: Studio, page: Any) -> None:
    _open(page, studio, 50)
    assert page.inner_text("#mask-pos") == "50 / 75"
    for key, n in (("c", 51), ("Shift+C", 61), ("q", 60), ("z", 59), ("Shift+Z", 49),
                   ("Shift+Q", 39)):
        page.keyboard.press(key)
        _at(page, n)
    assert page.inner_text("#mask-pos") == "39 / 75"
    assert page.locator("#mask-help").inner_text().count("\n") >= 10  # the keys are listed
    page.keyboard.press("h")  # H hides the help, M the mask overlay
    assert not page.locator("#mask-help").is_visible()
    page.keyboard.press("h")
    assert page.locator("#mask-help").is_visible()
    page.keyboard.press("m")
    assert _box(page, "overlay") == "0"
    page.keyboard.press("m")
    assert _box(page, "overlay") == "1"

    # an edit is saved when the face is left (C), never lost
    size = read_meta(face(studio, 39)).size
    _clicks(page, size, SQUARE[:3], "left")
    _close(page)
    page.keyboard.press("c")
    _at(page, 40)
    assert len(get_polygons(face(studio, 39))) == 1

    # W: to aligned_skipped/, the next face shown
    _open(page, studio, 70)
    page.keyboard.press("w")
    _at(page, 71)
    assert face(studio, 70, "aligned_skipped").is_file() and not face(studio, 70).exists()
    # E: saved and moved to aligned_confirmed/
    _clicks(page, size, SQUARE, "left")
    _close(page)
    page.keyboard.press("e")
    _at(page, 72)
    confirmed = face(studio, 71, "aligned_confirmed")
    assert confirmed.is_file() and not face(studio, 71).exists()
    assert len(get_polygons(confirmed)) == 1
    # Ctrl+Z: the confirm undone (the face back in aligned/, shown), then the skip
    page.keyboard.press("Control+z")
    _at(page, 71)
    assert face(studio, 71).is_file() and not confirmed.exists()
    page.keyboard.press("Control+z")
    _at(page, 70)
    assert face(studio, 70).is_file()


@pytest.mark.slow
def test_copy_mask_to_the_next_faces(studio: Studio, page: Any) -> None:
    set_polygons(face(studio, 20), [{"type": "include", "pts": SQUARE}])
    _open(page, studio, 20)
    page.fill("#copy-count", "3")
    page.click("#mask-copy")
    _idle(page)
    for n in (21, 22, 23):
        polys = get_polygons(face(studio, n))
        assert len(polys) == 1 and polys[0]["type"] == "include", n
    assert get_polygons(face(studio, 24)) == []
    strip = page.locator("#mask-strip .thumb .dot")
    assert strip.count() == 4  # 20 to 23 marked in the strip

    # faces with polygons are kept, unless "replace" is ticked
    set_polygons(face(studio, 20), [{"type": "exclude", "pts": SQUARE[:3]}])
    page.reload()
    _at(page, 20)
    page.fill("#copy-count", "2")
    page.click("#mask-copy")
    _idle(page)
    assert get_polygons(face(studio, 21))[0]["type"] == "include"
    page.check("#copy-replace")
    page.click("#mask-copy")
    _idle(page)
    for n, kind in ((21, "exclude"), (22, "exclude"), (23, "include")):
        assert get_polygons(face(studio, n))[0]["type"] == kind, n


@pytest.mark.slow
def test_bad_bodies_and_paths_are_refused(studio: Studio) -> None:
    url = "/api/masks/dst/face/aligned/00030_0.jpg"
    before = face(studio, 30).read_bytes()
    three = [[1, 2], [3, 4], [5, 6]]
    for body in ({}, {"polys": 3}, {"polys": [], "more": 1}, [1],
                 {"polys": [{"type": "other", "pts": three}]},
                 {"polys": [{"type": "include", "pts": three[:2]}]},
                 {"polys": [{"type": "include", "pts": [[1e9, 2], *three[1:]]}]},
                 {"polys": [{"type": "include", "pts": [[9000, 2], *three[1:]]}]},
                 {"polys": [{"type": "include", "pts": [["a", 2], *three[1:]]}]},
                 {"polys": [{"type": "include", "pts": three}] * 1001}):
        status, _, data = studio.request("PUT", url, body=body)
        msg = json.loads(data)["error"]
        assert status == 400 and msg.endswith(".") and "\n" not in msg, (body, data)
    for raw in (b'{"polys": [{"type": "include", "pts": [[NaN, 1], [2, 3], [4, 5]]}]}',
                b"{nope"):
        status, _, data = _raw_put(studio, url, raw)
        assert status == 400 and json.loads(data)["error"].endswith("."), data
    assert face(studio, 30).read_bytes() == before

    outside = studio.ws.parent / "secret.jpg"
    outside.write_bytes(before)
    (studio.ws / "data_dst" / "aligned" / "evil.jpg").symlink_to(outside)
    (studio.ws / "data_dst" / "aligned" / "inner.jpg").symlink_to(face(studio, 31))
    listed = {f["name"] for f in studio.json("GET", "/api/masks/dst")["faces"]}
    assert "00031_0.jpg" in listed and not {"evil.jpg", "inner.jpg"} & listed
    for path in ("/api/masks/dst/face/aligned/..", "/api/masks/dst/face/../00001_0.jpg",
                 "/api/masks/dst/face/aligned_trash/00001_0.jpg",
                 "/api/masks/dst/face/aligned/%252e%252e", "/api/masks/dst/face/aligned/%2e%2e",
                 "/api/masks/dst/face/aligned/..%2f..%2fdata_dst.mpg",
                 "/api/masks/dst/face/aligned/evil.jpg/image",
                 "/api/masks/dst/face/aligned/inner.jpg/image",
                 "/api/masks/dst/face/aligned/.hidden.jpg",
                 "/api/masks/both/face/aligned/00001_0.jpg",
                 "/api/masks/dst/face/aligned/00001_0.jpg%00.png/image"):
        status, _, data = studio.request("GET", path)
        assert status in (400, 403, 404) and b"\xff\xd8" not in data, (path, status, data)
    status, _, data = studio.request("PUT", "/api/masks/dst/face/aligned/evil.jpg",
                                     body={"polys": []})
    assert status == 403 and outside.read_bytes() == before
    status, _, data = studio.request("POST", "/api/masks/dst/face/aligned/00030_0.jpg/copy",
                                     body={"count": 0})
    assert status == 400 and b"whole number" in data


@pytest.mark.slow
def test_undo_here_undoes_only_a_skip_or_confirm(studio: Studio) -> None:
    """The faces page's trash (or a sort) is the side's last change: the mask editor's undo
    refuses it with a sentence instead of undoing it behind the user's back."""
    name = sorted(p.name for p in (studio.ws / "data_src" / "aligned").glob("*.jpg"))[0]
    status, _, data = studio.request("POST", "/api/masks/src/undo")
    assert status == 400 and b"nothing to undo" in data
    studio.json("POST", "/api/faces/src/trash", {"names": [name]})
    status, _, data = studio.request("POST", "/api/masks/src/undo")
    assert status == 400 and b"not a skip or confirm" in data, data
    assert (studio.ws / "data_src" / "aligned_trash" / name).is_file()
    studio.json("POST", "/api/faces/src/undo")
    moved = studio.json("POST", f"/api/masks/src/face/aligned/{name}/skip", {})
    assert moved["to"] == {"name": name, "folder": "aligned_skipped"}
    undone = studio.json("POST", "/api/masks/src/undo")
    assert undone["to"] == {"name": name, "folder": "aligned"}
    assert (studio.ws / "data_src" / "aligned" / name).is_file()


def _raw_put(studio: Studio, path: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(studio.base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("PUT", path, body=raw, headers={
            "Cookie": f"facelab_studio={studio.token}", "X-Facelab-Studio": "1",
            "Content-Type": "application/json"})
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_a_damaged_face_is_shown_as_such_and_walked_past(studio: Studio, page: Any) -> None:
    damaged = studio.ws / "data_dst" / "aligned" / "zz_damaged.jpg"
    damaged.write_bytes(face(studio, 75).read_bytes()[:300])
    try:
        _open(page, studio, 75)
        page.keyboard.press("c")
        _idle(page)
        wait_until(page, "document.getElementById('masks').dataset.face === ''")
        assert "zz_damaged.jpg" in page.inner_text(".mask-wrap .bad")
        assert page.inner_text("#mask-pos") == "76 / 76"
        page.keyboard.press("q")
        _at(page, 75)
    finally:
        damaged.unlink()
