"""The mask editor's segmenter panel (issue 18) in Debian's chromium against the real
server: fine-tune the dst segmenter from the page's form on the faces labelled with
polygons, "label this one" from the list of faces it is least sure of, write every face's
mask and see it over the face (N toggles it). Each is the real `facelab mask` CLI as a job,
with the generic segmenter shipped in the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facelab.faces.faceimage import read_meta
from facelab.faceset.polygons import set_polygons
from tests.conftest import copy_workspace
from tests.studio.conftest import screenshot, studio_server, wait_until

pytestmark = pytest.mark.slow  # PyTorch jobs and a browser

FACE = [[40, 40], [216, 40], [216, 236], [40, 236]]  # a labelled face region, face pixels


def _job_done(page: Any, stage: str, timeout: float = 180) -> None:
    wait_until(page, "(() => { const s = document.querySelector('#job-state');"
                     " const c = document.querySelector('#job-command');"
                     f" return s && c && c.textContent.includes('{stage}') &&"
                     " ['done', 'failed', 'cancelled', 'partial'].includes(s.textContent); })()",
               timeout)
    assert page.inner_text("#job-state") == "done", page.inner_text("#job-log")


def test_segmenter_panel_trains_lists_and_shows_masks(aligned_faces: Path, tmp_path: Path,
                                                       page: Any) -> None:
    ws = copy_workspace(aligned_faces, tmp_path / "ws")
    dst = ws / "data_dst" / "aligned"
    names = sorted(p.name for p in dst.glob("*.jpg"))
    for n in names[:4]:
        set_polygons(dst / n, [{"type": "include", "pts": FACE}])
    with studio_server(ws) as s:
        url = f"/api/masks/dst/face/aligned/{names[10]}/mask"
        status, _, data = s.request("GET", url)
        assert status == 404 and b"facelab mask apply" in data, data
        page.goto(f"{s.url}#/masks?side=dst")
        wait_until(page, "document.getElementById('masks')?.dataset.ready === '1'")

        # fine-tune from the form (a few steps), then the list of faces to label next
        page.click("#net-train")
        form = "form[data-stage=mask-train]"
        page.wait_for_selector(form)
        page.fill(f"{form} input[name=steps]", "3")
        page.click(f"{form} button[type=submit]")
        _job_done(page, "mask train")
        assert (ws / "segmenter" / "dst.safetensors").is_file()
        wait_until(page, "Number(document.getElementById('mask-net').dataset.worst) > 0", 30)
        entry = page.locator("#worst-list button").first
        target = entry.get_attribute("data-face")
        assert target and target.split("/")[1] not in names[:4]  # an unlabelled face
        entry.click()
        wait_until(page, f"document.getElementById('masks').dataset.face === '{target}'")

        # write every face's mask: it shows over the face, N hides and shows it
        page.click("#net-apply")
        _job_done(page, "mask apply")
        wait_until(page, "document.getElementById('masks').dataset.net === '1'", 30)
        for n in names:
            meta = read_meta(dst / n)
            assert meta.mask is not None and meta.mask.shape == (meta.size, meta.size), n
        status, headers, data = s.request("GET", url)
        assert status == 200 and headers["content-type"] == "image/png"
        mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask, read_meta(dst / names[10]).mask)
        assert 0.2 < (mask > 127).mean() < 0.95  # a face, not everything nor nothing
        page.locator("#mask-canvas").focus()
        page.keyboard.press("n")
        wait_until(page, "document.getElementById('masks').dataset.net === '0'")
        page.keyboard.press("n")
        wait_until(page, "document.getElementById('masks').dataset.net === '1'")
        screenshot(page, "studio_masks_segmenter.png")

        # the list again from its own button
        page.evaluate("document.getElementById('mask-net').dataset.worst = ''")
        page.click("#net-worst")
        _job_done(page, "mask worst")
        wait_until(page, "Number(document.getElementById('mask-net').dataset.worst) === 10", 30)
