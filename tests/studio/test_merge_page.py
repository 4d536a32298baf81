"""The merge page in Debian's chromium against the real server: the session's quick swap
(GRID, dst kept in its MPEG-1 video) with a tiny SAE model, its result beside it. Changing
erode by the page's key changes the served frame; a range set with the page's keys lands
in data_dst/merge.json; "merge all" runs the real `facelab merge`, whose PNGs equal the
previews the server serves, pixel for pixel, ranged frames included; bad values are
refused with the declaration's sentence; the result and dst play, with verify's report."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode

import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.merge.options import MergeOptions
from facelab.merge.ranges import load_ranges
from facelab.workspace import Workspace
from tests.conftest import Swapped
from tests.studio.conftest import Studio, screenshot, studio_server, wait_until
from tests.test_merge_preview import MODEL, _tiny_model

pytestmark = pytest.mark.slow  # a real model, a real merge, a real browser

FIRST, LAST = 20, 24  # the range the test sets with the page's keys
COMPARED = (1, FIRST - 1, FIRST, LAST, LAST + 1, 75)


@pytest.fixture(scope="module")
def studio(quick_swap: Swapped, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """quick_swap's workspace (files linked: merge only writes new files) with the tiny
    model alone and swap's result video in it."""
    root = tmp_path_factory.mktemp("merge_page") / "ws"
    shutil.copytree(quick_swap.ws, root, copy_function=os.link, ignore=shutil.ignore_patterns(
        "merged", "merged_video", ".locks", ".trash", ".studio", "swap_*"))
    _tiny_model(Workspace(root))
    os.link(quick_swap.out, root / "result.mp4")
    with studio_server(root) as s:
        yield s


def _image(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def _preview(studio: Studio, frame: int, **opts: Any) -> tuple[np.ndarray, dict[str, str]]:
    query = "&".join(f"{k}={v}" for k, v in {"model": MODEL, "output": "frames",
                                             "fmt": "png", "frame": frame, **opts}.items())
    status, headers, data = studio.request("GET", f"/api/merge/preview?{query}")
    assert status == 200, data
    return _image(data), headers


def _served(studio: Studio, page: Any, action: Any, **want: str
            ) -> tuple[np.ndarray, dict[str, str]]:
    """The frame the page shows after `action`, once its request's query holds `want`,
    as the server serves that query. (Playwright reads no body of a fetch the page has
    read as a blob, so the test asks again, as another client: renders are
    deterministic.)"""
    before = page.get_attribute("#merge-view", "data-seq")
    action()
    end = time.monotonic() + 60
    while True:
        q = parse_qs(page.get_attribute("#merge-view", "data-query") or "")
        if q.get("seq") != [before] and all(q.get(k) == [v] for k, v in want.items()):
            break
        assert time.monotonic() < end, (q, want)
        time.sleep(0.05)
    status, headers, data = studio.request(
        "GET", "/api/merge/preview?" + urlencode({**q, "client": ["test"]}, doseq=True))
    assert status == 200, data
    return _image(data), headers


def _press(page: Any, key: str, times: int = 1) -> None:
    for _ in range(times):
        page.keyboard.press(key)


def test_the_merge_page_previews_sets_ranges_and_merges(studio: Studio, page: Any) -> None:
    ws = Workspace(studio.ws)
    page.goto(f"{studio.url}#/merge")
    page.wait_for_selector("#page[data-ready]")
    page.select_option("#merge-output", "frames")  # merge all --to-frames: its batches
    wait_until(page, "(document.querySelector('#merge-view').dataset.query || '')"
                     ".includes('output=frames')", 60)
    page.locator(".merge-stage").click()  # focus off the select: keys work

    # erode by DeepFaceLab's key (W: +5) changes the face in the served frame
    base, _ = _served(studio, page, lambda: page.keyboard.press("r"), erode="0")
    eroded, headers = _served(studio, page, lambda: _press(page, "w", 4), erode="20")
    changed = (base != eroded).any(axis=-1)
    assert 100 < changed.sum() < changed.size / 4, changed.sum()  # the face, not the frame
    assert headers["x-frame"] == "00001.png"
    assert page.input_value("#opt-erode") == "20"

    # a range: [ at frame 20, ] at frame 24, other options, A applies them
    page.fill("#merge-frame", str(FIRST))
    page.press("#merge-frame", "Enter")
    page.locator(".merge-stage").click()
    _press(page, "[")
    _press(page, ".", LAST - FIRST)
    wait_until(page, f"document.querySelector('#merge-frame').value === '{LAST}'")
    _press(page, "]")
    _press(page, "w", 8)  # erode 60
    _press(page, "c", 2)  # colour rct → lct → mkl
    _press(page, "a")
    wait_until(page, f"document.querySelector('#range-list li[data-first=\"{FIRST}\"]')"
                     f" !== null")
    (got,) = load_ranges(ws)
    assert (got.first, got.last) == (FIRST, LAST)
    assert got.options["erode"] == 60 and got.options["color"] == "mkl"
    _press(page, "r")
    _press(page, "w", 4)  # back to erode 20 for the run; the range keeps its own
    wait_until(page, "document.querySelector('#merge-note').textContent.includes("
                     f"'in range {FIRST}-{LAST}')")
    screenshot(page, "studio_merge.png")

    # what the server previews for the run's options, each frame with its range
    want = {n: _preview(studio, n, erode=20) for n in COMPARED}
    assert want[FIRST][1]["x-range"] == f"{FIRST}-{LAST}" and want[1][1]["x-range"] == ""

    # merge all: the real `facelab merge` as a job, the page's options as its flags
    page.fill("#merge-workers", "1")  # one process, all cores: the preview's threads
    page.click("#merge-all")
    wait_until(page, "document.querySelector('#job-state').textContent === 'done'", 180)
    command = page.inner_text("#job-command")
    assert "--erode=20" in command and "--to-frames" in command and "--model-name=t" in command
    page.click("#job-toggle")
    assert f"{LAST - FIRST + 1} frame(s) took their options" in page.inner_text("#job-log")
    for n, (image, _) in want.items():
        merged = cv2.imread(str(ws.merged_dir / f"{n:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert merged.shape == image.shape and np.array_equal(merged, image), n

    # the result beside dst (an MPEG-1 dst transcoded for the browser), verify's report
    wait_until(page, "document.querySelector('#merge-verify') !== null", 60)
    assert page.get_attribute("#merge-verify", "data-verify") == "synthetic"
    detail = page.inner_text("#merge-verify-detail")  # its signed manifest first
    assert detail.startswith("C2PA manifest: valid, signed by facelab") and \
        "(self-signed)" in detail and "watermark" in detail, detail
    wait_until(page, "document.querySelector('#result-video').readyState >= 1 && "
                     "document.querySelector('#dst-video').readyState >= 1", 60)
    assert page.evaluate("Math.abs(document.querySelector('#result-video').duration - "
                         "document.querySelector('#dst-video').duration)") < 0.2


def test_renders_are_fast_and_bad_values_are_refused(studio: Studio) -> None:
    _preview(studio, 40)  # the model loaded, the frame's batch predicted
    times = []
    for erode in (10, 20, 30, 40, 50):
        start = time.perf_counter()
        _preview(studio, 40, erode=erode, fmt="jpg")
        times.append(1000 * (time.perf_counter() - start))
    assert statistics.median(times) < 300, times  # the goal, through HTTP

    def refused(method: str, path: str, body: Any = None) -> str:
        status, _, data = studio.request(method, path, body=body)
        assert status == 400, (status, data)
        return json.loads(data)["error"]

    sentence = "--erode must be a whole number from -200 to 200, not 300."
    with pytest.raises(FacelabError, match="erode"):
        MergeOptions(erode=300)
    assert refused("GET", f"/api/merge/preview?model={MODEL}&frame=1&erode=300") == sentence
    assert refused("POST", "/api/jobs", {"stage": "merge", "values": {
        "model_name": MODEL, "erode": 300}}) == sentence
    assert sentence.rstrip(".") in refused("POST", "/api/merge/ranges/set", {
        "first": 1, "last": 2, "options": {"erode": 300}})
    assert "--color must be one of" in refused(
        "GET", f"/api/merge/preview?model={MODEL}&frame=1&color=purple")
    assert "no option" in refused("GET", f"/api/merge/preview?model={MODEL}&frame=1&x=1")
    status, headers, data = studio.request("GET", "/api/merge/video/dst",
                                           headers={"Range": "bytes=0-99"})
    assert status == 206 and len(data) == 100 and headers["content-type"] == "video/mp4"


#: DeepFaceLab's merger keys as the page documents them: option → (increase, decrease, step)
STEP_KEYS = {"erode": ("w", "s", 5), "blur": ("e", "d", 5), "face_scale": ("u", "j", 1),
             "degrade": ("o", "l", 5), "color_degrade": ("p", ";", 5),
             "hist_threshold": ("i", "k", 5)}
CYCLE_KEYS = {"c": "color", "x": "mask", "n": "super_resolution"}


def test_each_documented_merge_key_does_what_its_help_says(studio: Studio, page: Any) -> None:
    page.goto(f"{studio.url}#/merge")
    page.wait_for_selector("#page[data-ready]")
    help_text = page.inner_text("#merge-help")
    page.locator(".merge-stage").click()
    _press(page, "r")

    def num(name: str) -> float:
        return float(page.input_value(f"#opt-{name}"))

    for name, (up, down, step) in STEP_KEYS.items():
        assert f"{up.upper()} / {down.upper()}" in help_text, name
        lo, hi = (float(page.get_attribute(f"#opt-{name}", a)) for a in ("min", "max"))
        before = num(name)
        _press(page, up)
        assert num(name) == min(hi, before + step), name
        _press(page, down)
        _press(page, down)
        assert num(name) == max(lo, min(hi, before + step) - 2 * step), name
        before = num(name)
        _press(page, f"Shift+{up.upper()}")  # Shift: ten steps
        assert num(name) == min(hi, before + 10 * step), name
    for key, name in CYCLE_KEYS.items():
        choices = page.eval_on_selector_all(f"#opt-{name} option", "os => os.map(o => o.value)")
        before = page.input_value(f"#opt-{name}")
        _press(page, key)
        assert page.input_value(f"#opt-{name}") == choices[(choices.index(before) + 1)
                                                           % len(choices)], name
    modes = page.eval_on_selector_all("#opt-mode option", "os => os.map(o => o.value)")
    for k in range(1, min(len(modes), 7) + 1):
        _press(page, str(k))
        assert page.input_value("#opt-mode") == modes[k - 1]
    _press(page, "r")  # R: every option back to its default
    defaults = studio.json("GET", "/api/merge/options")["fields"]
    for f in defaults:
        if f["kind"] in ("int", "float") and f["default"] is not None:
            assert num(f["name"]) == float(f["default"]), f["name"]

    frames = page.eval_on_selector("#merge-frame", "e => [e.min, e.max]")
    _press(page, "End")
    wait_until(page, f"document.querySelector('#merge-frame').value === '{frames[1]}'")
    _press(page, "Home")
    wait_until(page, f"document.querySelector('#merge-frame').value === '{frames[0]}'")
    _press(page, "Shift+>")  # Shift+. : ten frames on
    wait_until(page, f"document.querySelector('#merge-frame').value === '{int(frames[0]) + 10}'")
    _press(page, ",")
    wait_until(page, f"document.querySelector('#merge-frame').value === '{int(frames[0]) + 9}'")
    _press(page, "Tab")  # the dst frame instead of the merged one, and back
    assert page.is_visible("#merge-dst") and not page.is_visible("#merge-view")
    _press(page, "Tab")
    assert page.is_visible("#merge-view") and not page.is_visible("#merge-dst")
    _press(page, "h")
    assert not page.is_visible("#merge-help")
    _press(page, "h")
    assert page.is_visible("#merge-help")
