"""Jobs run the real CLI: progress lines arrive as it works, the result is on disk, a second
job is refused, cancel stops it the Ctrl-C way, and a CLI run holding the stage's lock is
refused by the CLI itself. Forms come from the options' declarations."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from facelab import locks
from facelab.errors import FacelabError
from facelab.studio.forms import form, form_args
from facelab.studio.jobs import JobBusy, JobRunner
from facelab.workspace import Workspace
from tests.conftest import copy_workspace, data_file, lock_holder, put_video
from tests.studio.conftest import events as _events
from tests.studio.conftest import studio_server


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` runs (a zombie left for init to reap does not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def _clip_ws(tmp_path: Path) -> Workspace:
    ws = tmp_path / "ws"
    ws.mkdir()
    put_video(ws, "dst", data_file("grid/speaker_a_1.mpg"))
    return Workspace(ws)


@pytest.mark.slow
def test_a_stage_runs_streams_its_progress_and_refuses_a_second(tmp_path: Path) -> None:
    ws = _clip_ws(tmp_path)
    runner = JobRunner(ws, env={"FACELAB_PROGRESS_EVERY": "0"})  # a line per frame
    job = runner.start(["video", "extract", "dst"], "video-extract")
    with pytest.raises(JobBusy, match="A job is running"):
        runner.start(["video", "extract", "src"])
    assert runner.wait(job, 120)
    assert job.state == "done", job.lines
    progress = [ln for ln in job.lines if re.search(r"frames_index.json: \d+/\d+ \(", ln)]
    assert len(progress) > 10, job.lines  # "<what>: 12/75 (40.1/s, ETA 0:01)"
    assert job.progress is not None and job.progress["done"] == 75
    assert job.lines[-1].startswith("dst: 75 frames, kept in data_dst.mpg")
    assert (ws.root / "data_dst" / "frames_index.json").is_file()
    again = runner.start(["video", "extract", "dst"], "video-extract")  # one at a time: free
    assert runner.wait(again, 60) and again.state == "done"
    assert "skipped, already done" in again.lines[-1]


@pytest.mark.slow
def test_a_killed_studio_loses_no_job_and_cancel_stops_it(tmp_path: Path) -> None:
    ws = _clip_ws(tmp_path)
    first = JobRunner(ws).start(["video", "extract", "dst"])
    assert first.proc is not None and first.proc.wait(60) == 0
    pid = None
    try:
        with studio_server(ws.root) as s:
            job = s.json("POST", "/api/jobs", {"stage": "extract",
                                               "values": {"side": "dst", "debug": False}})
            pid = job["pid"]
            assert job["command"] == "facelab extract dst --no-debug"
            status, _, body = s.request("POST", "/api/jobs", body={
                "stage": "video-extract", "values": {"side": "src"}})
            assert status == 409 and b"A job is running (facelab extract dst" in body
            status, _, body = s.request("POST", "/api/jobs", body={
                "stage": "merge", "values": {"model_name": "m", "erode": 999}})
            assert status == 400 and b"--erode must be a whole number from -200 to 200" in body
            s.proc.kill()  # the server dies; the job goes on
            s.proc.wait()
        os.kill(job["pid"], 0)
        with studio_server(ws.root) as s:
            again = s.json("GET", "/api/jobs/current")
            assert again["pid"] == job["pid"] and again["adopted"] and again["state"] == "running"
            s.json("POST", "/api/jobs/current/cancel")
            end = _events(s)[-1]
            assert end[0] == "end" and end[1]["state"] == "cancelled", end
        assert not group_alive(job["pid"]), "something of the job's process group runs on"
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    assert locks.holder(ws.root, "faces-dst") is None


@pytest.mark.slow
def test_cancel_stops_every_rank_of_a_data_parallel_training(aligned_faces: Path,
                                                              tmp_path: Path) -> None:
    """The train form's nproc field (from TrainOptions' declaration) starts the real
    launcher with 2 ranks; cancel (Ctrl-C to the job's process group, as the studio's
    button) ends the launcher and both ranks with rank 0's one save."""
    ws = Workspace(copy_workspace(aligned_faces, tmp_path / "ws"))
    args = form_args("train", {
        "model_name": "dp", "preset": "quick96", "resolution": 64, "ae_dims": 32,
        "e_dims": 8, "d_dims": 8, "d_mask_dims": 8, "batch_size": 2, "device": "cpu",
        "precision": "fp32", "preview_every": 0, "nproc": 2}, ws)
    assert "--nproc=2" in args
    runner = JobRunner(ws, env={"FACELAB_PROGRESS_EVERY": "1"})
    job = runner.start(args, "train")
    try:
        deadline = time.monotonic() + 180
        while not any("ms/iter" in ln for ln in job.lines) and time.monotonic() < deadline:
            assert job.running, job.lines
            time.sleep(0.2)
        assert any("2 ranks" in ln for ln in job.lines), job.lines
        runner.cancel()
        assert runner.wait(job, 120) and job.state == "cancelled", job.lines
        assert not group_alive(job.pid), "a rank of the job runs on"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    doc = json.loads((ws.model_dir / "dp_state.json").read_text())["state"]
    assert doc["ranks"] == 2 and doc["iteration"] >= 1
    assert sum(bool(re.match(r"\[\d+\] saved", ln)) for ln in job.lines) == 1, job.lines
    assert "stopped at iteration" in job.lines[-1], job.lines


@pytest.mark.slow
def test_a_cli_run_holding_the_lock_refuses_the_job(tmp_path: Path) -> None:
    ws = _clip_ws(tmp_path)
    runner = JobRunner(ws)
    with lock_holder(ws.root, "video-dst"):
        job = runner.start(["video", "extract", "dst"])
        assert runner.wait(job, 60)
    assert job.state == "failed" and job.rc == 1
    assert job.lines[-1].startswith("error:") and "in use by" in job.lines[-1]
    assert not (ws.root / "data_dst" / "frames_index.json").exists()


def test_forms_come_from_the_declarations(tmp_path: Path) -> None:
    spec = form("merge")
    erode = next(f for f in spec["fields"] if f["name"] == "erode")
    assert erode["range"] == [-200, 200] and erode["default"] == 0
    assert erode["help"].startswith("Shrink (positive)")
    mode = next(f for f in spec["fields"] if f["name"] == "mode")
    assert mode["kind"] == "choice" and "seamless" in mode["choices"]
    ws = Workspace(tmp_path)
    args = form_args("merge", {"model_name": "m", "erode": 5, "mode": "overlay",
                               "to_video": False, "audio": True}, ws)
    assert args == ["merge", "--model-name=m", "--to-frames", "--mode=overlay", "--erode=5"]
    with pytest.raises(FacelabError, match="--erode must be a whole number from -200 to 200"):
        form_args("merge", {"model_name": "m", "erode": 500}, ws)
    with pytest.raises(FacelabError, match="--model-name is required"):
        form_args("merge", {}, ws)
    with pytest.raises(FacelabError, match="no option"):
        form_args("merge", {"model_name": "m", "--force": True}, ws)
    assert form_args("extract", {"side": "dst", "face_type": "half"}, ws) == \
        ["extract", "dst", "--face-type=half"]
    with pytest.raises(FacelabError, match="--resolution must be 64–256 in steps of 16"):
        form_args("train", {"model_name": "m", "resolution": 100}, ws)
    train = {f["name"]: f for f in form("train")["fields"]}
    assert "interactive" not in train and train["resolution"]["fixed"]
    assert "meshswap" in train["preset"]["choices"]
    with pytest.raises(FacelabError, match=r"'\.\.' parts"):
        form_args("assemble", {"output": "../elsewhere.mp4"}, ws)
