"""The training page in Debian's chromium against the real server and a real (tiny) run:
started from the page's form, the live preview and loss graph, DeepFaceLab's keys (P
preview now, S save now while training goes on, Space next view, Enter save and stop);
and the loop's save-now and preview-now requests, and the status lines the page reads."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from facelab.progress import NULL
from facelab.studio.train_page import parse_status
from facelab.train.loop import Loop, RunControl
from facelab.train.run_options import TrainOptions
from tests.conftest import copy_workspace
from tests.studio.conftest import screenshot, studio_server, wait_until

#: the smallest model the train tests use (tests/test_train_cli.py's TINY_FLAGS), on CPU
TINY = {"preset": "sae", "resolution": "64", "ae_dims": "32", "e_dims": "8", "d_dims": "8",
        "d_mask_dims": "4", "batch_size": "2", "target_iteration": "100000",
        "preview_every": "0", "backup_every": "0", "device": "cpu"}
SELECTS = {"precision": "fp32", "preview_history": "true"}


class Recorder:
    """A family that steps instantly and records what the loop asked of it; `requests`
    maps an iteration to the requests a caller makes while that step runs."""

    def __init__(self, control: RunControl, requests: dict[int, tuple[str, ...]]) -> None:
        self.control, self.requests = control, requests
        self.saves: list[int] = []
        self.previews: list[int] = []

    def step(self, iteration: int) -> tuple[float, float]:
        for name in self.requests.get(iteration, ()):
            getattr(self.control, name).set()
        return 1.0, 1.0

    def save(self, iteration: int, history: list[list[float]], backup: bool) -> None:
        self.saves.append(iteration)

    def preview(self, iteration: int, history: list[list[float]]) -> None:
        self.previews.append(iteration)

    def rollback(self) -> int:
        raise AssertionError("no collapse here")

    lr = 1.0

    def set_lr(self, lr: float) -> None:
        pass

    def close(self) -> None:
        pass


def test_save_and_preview_requests_are_honoured_once_and_training_goes_on() -> None:
    control = RunControl()
    family = Recorder(control, {3: ("save_now",), 5: ("preview_now",),
                                7: ("save_now", "preview_now"), 9: ("preview_now",)})
    opts = TrainOptions(model_name="r", preview_every=10, autosave_minutes=60, backup_every=0)
    done = Loop(family, opts, NULL, None, start=0, history=[], target=12).run(control)
    assert (done.iteration, done.stopped) == (12, False)
    assert family.saves == [4, 8, 12]  # on request after iterations 4 and 8, then the end
    assert family.previews == [6, 8, 10, 12]  # the request at 10 is the scheduled one
    assert not control.save_now.is_set() and not control.preview_now.is_set()
    # a plain Event still stops a run (the library's callers before RunControl)
    stop = threading.Event()
    stop.set()
    family = Recorder(control, {})
    assert Loop(family, opts, NULL, None, start=0, history=[], target=5).run(stop).stopped


def test_status_lines_as_the_page_reads_them() -> None:
    st = parse_status("[0000043]     54 ms/iter  src 4.0731  dst 3.9877  ETA 1:30:02")
    assert st == {"iteration": 43, "ms": 54.0, "eta": "1:30:02", "labels": ["src", "dst"],
                  "losses": [4.0731, 3.9877]}
    st = parse_status("[0000007]   1203 ms/iter  refiner 0.2000")
    assert st is not None and st["labels"] == ["refiner"] and st["eta"] is None
    assert parse_status("[0000007]   1203 ms/iter  src nan  dst 0.5")["losses"] == [None, 0.5]
    for other in ("[0000043] saved  src 4.0731  dst 3.9877", "Loading PyTorch …", ""):
        assert parse_status(other) is None


def _saved_iteration(ws: Path) -> int:
    return int(json.loads((ws / "model" / "t_state.json").read_text())["state"]["iteration"])


def _value(page: Any, sel: str, key: str) -> str:
    return page.eval_on_selector(sel, f"e => e.dataset.{key} || ''")


@pytest.mark.slow
def test_training_from_the_page_with_its_keys(aligned_faces: Path, tmp_path: Path,
                                              page: Any, monkeypatch: Any) -> None:
    # one PyTorch thread for the job: on cores shared with the browser and the server, two
    # spinning OpenMP threads make the tiny model's iterations ten times slower
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ws = copy_workspace(aligned_faces, tmp_path / "ws")
    model = ws / "model"
    with studio_server(ws) as s:
        status, _, data = s.request("POST", "/api/train/request", body={"request": "save"})
        assert status == 400 and b"No training is running" in data
        for bad in ("x", ["save"], None):
            status, _, data = s.request("POST", "/api/train/request", body={"request": bad})
            assert status == 400 and b"one of save, preview" in data, data
        page.goto(s.url + "#/train")
        form = "form[data-stage=train]"
        page.wait_for_selector(form)  # no model yet: the form is open
        page.click(f"{form} details summary")
        page.fill(f"{form} input[name=model_name]", "t")
        for name, value in TINY.items():
            if name == "preset":
                page.select_option(f"{form} select[name=preset]", value)
            else:
                page.fill(f"{form} input[name={name}]", value)
        for name, value in SELECTS.items():
            page.select_option(f"{form} select[name={name}]", value)
        page.click(f"{form} button[type=submit]")
        # S while the CLI is still starting (its default action for SIGUSR1 would end it):
        # refused in a sentence, and the run goes on
        wait_until(page, "document.querySelector('#job-state').textContent === 'running'")
        status, _, data = s.request("POST", "/api/train/request", body={"request": "save"})
        assert status == 400 and b"still starting" in data, data
        # live: the iteration, the speed, the ETA and the loss graph follow the run
        wait_until(page, "Number(document.querySelector('#tr-iteration').dataset.value) > 0", 60)
        wait_until(page, "Number(document.querySelector('#tr-loss').dataset.points) >= 2", 30)
        assert "it/s" in page.inner_text("#tr-speed")
        assert page.inner_text("#tr-eta").count(":") == 2
        assert page.inner_text("#tr-saved") == "not saved yet"
        wait_until(page, "!document.querySelector('#tr-save').disabled", 30)
        # P: the preview now (--preview-every 0: there is none before)
        assert not (model / "t_preview.png").exists()
        page.keyboard.press("p")
        wait_until(page, "document.querySelector('#tr-image').dataset.version && "
                   "document.querySelector('#tr-image').naturalWidth > 0", 30)
        assert (model / "t_preview.png").is_file()
        assert page.inner_text("#job-state") == "running"
        # S: a save while training goes on, twice: the saved iteration advances
        page.keyboard.press("s")
        wait_until(page, "Number(document.querySelector('#tr-saved').dataset.iteration) > 0", 30)
        first = _saved_iteration(ws)
        assert first > 0 and int(_value(page, "#tr-saved", "iteration")) == first
        wait_until(page, "Number(document.querySelector('#tr-iteration').dataset.value) > "
                   f"{first}", 30)
        page.keyboard.press("S")
        wait_until(page, "Number(document.querySelector('#tr-saved').dataset.iteration) > "
                   f"{first}", 30)
        assert _saved_iteration(ws) > first
        assert s.json("GET", "/api/jobs/current")["state"] == "running"
        # Space: the next view, through the kinds the model writes, and round again
        kinds = [_value(page, "#tr-view", "kind")]
        for _ in range(3):
            page.keyboard.press(" ")
            kinds.append(_value(page, "#tr-view", "kind"))
        assert kinds == ["grid", "history", "loss", "grid"], kinds
        assert int(_value(page, "#tr-loss-all", "points")) >= 2
        wait_until(page, "Number(document.querySelector('#tr-loss').dataset.points) >= 4", 30)
        screenshot(page, "studio_train.png")
        # Enter: save and stop; the job ends cleanly at the saved iteration
        page.keyboard.press("Enter")
        wait_until(page, "document.querySelector('#job-state').textContent === 'cancelled'", 60)
        job = s.json("GET", "/api/jobs/current?tail=3")
        assert job["rc"] == 0, job["tail"]
        final = _saved_iteration(ws)
        assert final > first and f"stopped at iteration {final}" in job["tail"][-1]
        wait_until(page, "document.querySelector('#tr-stop').disabled "
                   f"&& document.querySelector('#tr-saved').dataset.iteration === '{final}'")
