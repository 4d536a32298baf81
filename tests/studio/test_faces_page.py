"""The faces page in Debian's chromium against the real server: the faces on disk in a grid,
landmarks on hover, metadata on click, trash and undo moving the real files, and a large
faceset drawn a few rows at a time."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facelab.faceset.folder import DEBUG_HEAD
from facelab.fsutil import atomic_path
from facelab.studio.faces_page import listing
from facelab.studio.thumbnails import THUMB, thumbnail
from tests.conftest import copy_workspace
from tests.studio.conftest import Studio, screenshot, studio_server, wait_until

MANY = 1000


@pytest.fixture(scope="module")
def studio(aligned_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A copy of the session's workspace whose dst faceset is made MANY faces by copying."""
    ws = copy_workspace(aligned_faces, tmp_path_factory.mktemp("faces_page") / "ws")
    dst = ws / "data_dst" / "aligned"
    real = sorted(dst.glob("*.jpg"))
    for i in range(MANY - len(real)):
        shutil.copyfile(real[i % len(real)], dst / f"copy_{i:05d}.jpg")
    with studio_server(ws) as s:
        yield s


def _open(page: Any, studio: Studio, side: str) -> None:
    page.goto(f"{studio.url}#/faces?side={side}")
    page.wait_for_selector("#grid[data-loaded]")


def _all_thumbs_loaded(page: Any) -> None:
    wait_until(page, "[...document.querySelectorAll('#grid .face img')].every("
                           "i => i.complete && i.naturalWidth > 0)")


@pytest.mark.slow
def test_trash_and_undo_move_the_files(studio: Studio, page: Any) -> None:
    aligned = studio.ws / "data_src" / "aligned"
    trash = studio.ws / "data_src" / "aligned_trash"
    names = sorted(p.name for p in aligned.glob("*.jpg"))
    _open(page, studio, "src")
    assert page.inner_text("#faces-count") == f"{len(names)} faces"
    cells = page.locator("#grid .face")
    assert cells.count() == len(names)  # a small faceset: every row is in view
    _all_thumbs_loaded(page)
    assert list((studio.ws / ".studio").rglob("*.jpg")), "thumbnails are cached"

    cells.nth(1).hover()  # the landmarks overlay of the face under the mouse
    wait_until(page, "(() => { const i = document.querySelector('#face-preview');"
                           " return i.src.includes('/debug/') && i.complete &&"
                           " i.naturalWidth > 100; })()")
    cells.nth(0).click()
    cells.nth(2).click(modifiers=["Shift"])
    wait_until(page, f"document.querySelector('#face-meta').textContent"
                           f".includes('{names[2]}')")
    assert "\nyaw: " in page.inner_text("#face-meta")
    assert page.inner_text("#faces-count") == f"{len(names)} faces, 3 selected"
    screenshot(page, "studio_faces.png")

    page.keyboard.press("Delete")
    wait_until(page, f"document.querySelector('#faces-count').textContent"
                           f" === '{len(names) - 3} faces'")
    assert sorted(p.name for p in trash.glob("*.jpg")) == names[:3]
    assert sorted(p.name for p in aligned.glob("*.jpg")) == names[3:]

    page.keyboard.press("Control+z")
    wait_until(page, f"document.querySelector('#faces-count').textContent"
                           f" === '{len(names)} faces'")
    assert sorted(p.name for p in aligned.glob("*.jpg")) == names
    assert not list(trash.glob("*.jpg"))


@pytest.mark.slow
def test_a_large_faceset_draws_only_the_rows_in_view(studio: Studio, page: Any) -> None:
    _open(page, studio, "dst")
    assert page.inner_text("#faces-count") == f"{MANY} faces"
    drawn = page.locator("#grid .face").count()
    assert 0 < drawn < 400, drawn
    _all_thumbs_loaded(page)
    page.eval_on_selector("#grid", "g => { g.scrollTop = g.scrollHeight; }")
    last = sorted(p.name for p in (studio.ws / "data_dst" / "aligned").glob("*.jpg"))[-1]
    page.wait_for_selector(f"#grid .face[title='{last}']")
    assert page.locator("#grid .face").count() < 400
    _all_thumbs_loaded(page)


def test_listing_and_thumbnails_follow_the_faces(tmp_path: Path) -> None:
    """Faces only (no hidden file, overlay, other file or symlink); a renamed face keeps its
    cached thumbnail, one written again gets a new one (and, written as facelab writes, a
    new key in the listing, which versions the page's own cache)."""
    folder = tmp_path / "aligned"
    folder.mkdir()
    rng = np.random.default_rng(0)
    jpeg = cv2.imencode(".jpg", rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))[1]
    for name in ("00002_0.jpg", "00001_0.jpg", ".facelab-tmp-1.jpg", "notes.txt"):
        (folder / name).write_bytes(jpeg.tobytes())
    (folder / "00001_0_debug.jpg").write_bytes(DEBUG_HEAD + jpeg.tobytes()[2:])
    (folder / "link.jpg").symlink_to(folder / "00001_0.jpg")
    names, keys = listing(folder)
    assert names == ["00001_0.jpg", "00002_0.jpg"] and len(set(keys)) == 2
    cache = tmp_path / "cache"
    first = thumbnail(cache, folder / "00001_0.jpg")
    assert cv2.imread(str(first)).shape == (THUMB, THUMB, 3)
    (folder / "00001_0.jpg").rename(folder / "00000.jpg")
    assert thumbnail(cache, folder / "00000.jpg") == first
    time.sleep(0.02)
    (folder / "00000.jpg").write_bytes(jpeg.tobytes())  # the same file written again
    assert thumbnail(cache, folder / "00000.jpg") != first
    with atomic_path(folder / "00002_0.jpg") as tmp:  # as facelab writes a face
        tmp.write_bytes(jpeg.tobytes())
    assert listing(folder)[1][1] != keys[1]


def test_selection_keys_do_what_the_help_says(studio: Studio, page: Any) -> None:
    n = len(list((studio.ws / "data_src" / "aligned").glob("*.jpg")))
    _open(page, studio, "src")
    cells = page.locator("#grid .face")

    def says(text: str) -> None:
        wait_until(page, f"document.querySelector('#faces-count').textContent === '{text}'")

    cells.nth(0).click()
    says(f"{n} faces, 1 selected")
    cells.nth(2).click(modifiers=["Control"])  # Ctrl-click toggles one face in
    says(f"{n} faces, 2 selected")
    cells.nth(0).click(modifiers=["Control"])  # and out
    says(f"{n} faces, 1 selected")
    page.keyboard.press("Control+a")
    says(f"{n} faces, {n} selected")
    page.keyboard.press("Escape")
    says(f"{n} faces")
