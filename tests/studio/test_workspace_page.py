"""The workspace page in Debian's chromium against the real server: each stage's state as
the files on disk say, a stage run from its generated form with its output streamed, and
the job's stream kept for a late subscriber."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import copy_workspace, data_file, put_video
from tests.studio.conftest import events as _events
from tests.studio.conftest import screenshot, studio_server, wait_until


@pytest.mark.slow
def test_the_page_shows_each_stage_as_the_files_say(aligned_faces: Path, tmp_path: Path,
                                                     page: Any) -> None:
    ws = copy_workspace(aligned_faces, tmp_path / "ws")
    src_faces = len(list((ws / "data_src" / "aligned").glob("*.jpg")))
    dst_faces = len(list((ws / "data_dst" / "aligned").glob("*.jpg")))
    missing = ws / "data_dst" / "aligned_missing.txt"
    n_missing = len(missing.read_text().split()) if missing.exists() else 0
    with studio_server(ws) as s:
        page.goto(s.url)
        page.wait_for_selector("#ws-body[data-loaded]")
        assert "token" not in page.url  # traded for the cookie, out of the address bar
        assert f"{src_faces} in data_src/aligned" in page.inner_text("#card-faces-src")
        assert f"{dst_faces} in data_dst/aligned" in page.inner_text("#card-faces-dst")
        assert "75 png images" in page.inner_text("#card-frames-dst")
        assert page.get_attribute("#card-faces-dst [data-missing]", "data-missing") == \
            str(n_missing)
        assert "Train a model" in page.inner_text("#next-step")
        assert page.inner_text("#card-model").count("none yet") == 1
        screenshot(page, "studio_workspace.png")


@pytest.mark.slow
def test_a_stage_runs_from_its_form_with_progress(tmp_path: Path, page: Any) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    put_video(ws, "src", data_file("grid/speaker_b.mpg"))
    put_video(ws, "dst", data_file("grid/speaker_a_1.mpg"))
    with studio_server(ws) as s:
        page.goto(s.url)
        page.wait_for_selector("#ws-body[data-loaded]")
        assert "Extract the src frames" in page.inner_text("#next-step")
        page.click("#card-frames-dst button[data-stage=video-extract]")
        form = page.wait_for_selector("form[data-stage=video-extract]")
        assert page.input_value("form select[name=side]") == "dst"
        assert "--fps" in form.inner_text()  # the flags of `video extract`, with their help
        page.select_option("form select[name=fmt]", "video")
        page.click("form button[type=submit]")
        wait_until(page,
            "document.querySelector('#job-state').textContent === 'done'", 60)
        assert page.inner_text("#job-command") == "facelab video extract dst --frames=video"
        page.click("#job-toggle")
        assert "dst: 75 frames, kept in data_dst.mpg" in page.inner_text("#job-log")
        wait_until(page, "document.querySelector('#card-frames-dst').innerText"
                   ".includes('75 kept in the video')")
        assert (ws / "data_dst" / "frames_index.json").is_file()
        # the same job's stream, for a subscriber that comes after its end
        events = _events(s)
        lines = [d["text"] for kind, d in events if kind == "line"]
        assert events[-1][0] == "end" and events[-1][1]["state"] == "done"
        assert lines[-1].startswith("dst: 75 frames, kept in data_dst.mpg")
        assert [d["n"] for kind, d in events if kind == "line"] == list(range(len(lines)))
        assert [d["text"] for k, d in _events(s, len(lines) - 1) if k == "line"] == lines[-1:]
