"""Training under kills, races, a read-only folder and divergence, and the progress it shows.

Real `facelab train` processes on the session's GRID faces with a tiny model: a second run
on a model is refused while the first lives, and takes over after a kill -9; SIGTERM to the
trainer or to its whole process group saves and stops like Ctrl-C; a read-only model folder
is one line before any training; a piped run shows progress from its first iteration; a
learning rate far too high rolls back and halves until the run goes on (and a resume keeps
the lowered rate). The loop's divergence rules run fast on a one-weight model.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from facelab import locks
from facelab.errors import FacelabError
from facelab.progress import NullReporter
from facelab.train import checkpoint
from facelab.train.loop import Loop
from facelab.train.run_options import TrainOptions
from facelab.workspace import Workspace
from tests.conftest import (
    Result,
    assert_one_line_error,
    copy_workspace,
    run_facelab,
    run_in_process,
)

TINY = ("--preset", "sae", "--resolution", "64", "--ae-dims", "32", "--e-dims", "8",
        "--d-dims", "8", "--d-mask-dims", "4", "--batch-size", "2")
RUN = ("--preview-every", "0", "--device", "cpu", "--backup-every", "0", "--precision", "fp32")
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
STATUS = re.compile(r"^\[(\d{7})\]\s+\d+ ms/iter  src \d")


# --- the loop's divergence rules on a one-weight model (fast) -------------------------------


class Quadratic:
    """A real `loop.Family`: one weight w trained by SGD on (w - 1)², saved by the real
    checkpoint writer. The error w - 1 is multiplied by (1 - 2·lr) each step: it doubles at
    lr 1.5 (the loss ×4: a jump far above its recent level), halves at 0.75."""

    def __init__(self, folder: Path, lr: float) -> None:
        self.folder = folder
        self.model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.zero_()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr)

    def step(self, iteration: int) -> tuple[float, float]:
        loss = (self.model.weight[0, 0] - 1) ** 2
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        value = loss.item()
        return value, value

    def save(self, iteration: int, history: list[list[float]], backup: bool) -> None:
        checkpoint.save(self.folder, "q", self.model, self.opt,
                        {"iteration": iteration, "history": history, "lr": self.lr},
                        arch="q", fixed_options={})

    def preview(self, iteration: int, history: list[list[float]]) -> None:
        pass

    def rollback(self) -> int:
        state = checkpoint.load(self.folder, "q", self.model, self.opt, expected_arch="q",
                                fixed_options={}, warn=print, restore_rng=False)
        return int(state["iteration"])

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        self.opt.param_groups[0]["lr"] = lr

    def close(self) -> None:
        pass


def _loop(family: Quadratic, reporter: NullReporter, target: int, start: int = 0,
          history: list[list[float]] | None = None, autosave: float = 60.0,
          every: int = 0) -> Loop:
    """A loop saving every `every` iterations (and every `autosave` minutes)."""
    opts = TrainOptions(model_name="q", autosave_minutes=autosave, backup_every=every,
                        preview_every=0, log_every=5)
    return Loop(family, opts, reporter, None, start=start, history=history or [],
                target=target)


def _saved(folder: Path) -> dict:
    return json.loads((folder / "q_state.json").read_text())


def test_a_jump_rolls_back_to_the_last_save_halves_the_lr_and_goes_on(tmp_path: Path) -> None:
    reporter = NullReporter()
    family = Quadratic(tmp_path, lr=1.5)
    done = _loop(family, reporter, target=70, every=25).run(None)  # saves at 25, 50, 70
    warned = [m for m in reporter.collected if "collapsed" in m]
    assert len(warned) == 1, reporter.collected
    assert "iteration 51 (the loss jumped to" in warned[0]
    assert "rolled back to iteration 50 and lowered the learning rate to 0.75" in warned[0]
    assert done.iteration == 70 and not done.stopped
    state = _saved(tmp_path)["state"]
    assert state["iteration"] == 70 and state["lr"] == 0.75  # a resume keeps it
    iterations = [row[0] for row in state["history"]]
    assert iterations == sorted(set(iterations))  # no row of the collapsed stretch
    after = [s for s, _ in done.losses[-20:]]  # from 50 on at 0.75: the error halves
    assert all(b == pytest.approx(a / 4, rel=1e-3) for a, b in itertools.pairwise(after))


def test_repeated_collapses_give_up_in_one_line_keeping_the_good_save(tmp_path: Path) -> None:
    family = Quadratic(tmp_path, lr=0.25)
    _loop(family, NullReporter(), target=5).run(None)  # a good save at iteration 5 (the end)
    before = (tmp_path / "q_weights.safetensors").read_bytes()
    cases = ((1e6, "the loss turned infinite", 60.0),  # no save on the way up
             (math.inf, "weights are not finite", 1e-9))  # saves, which the writer refuses
    for lr, why, autosave in cases:
        reporter = NullReporter()
        family = Quadratic(tmp_path, lr=0.25)
        history = _saved(tmp_path)["state"]["history"]
        family.rollback()
        family.set_lr(lr)
        with pytest.raises(FacelabError, match="diverged 3 times") as err:
            _loop(family, reporter, target=50, start=5, history=history,
                  autosave=autosave).run(None)
        assert why in str(err.value) and "\n" not in str(err.value)
        assert sum("rolled back to iteration 5" in m for m in reporter.collected) == 2
        assert (tmp_path / "q_weights.safetensors").read_bytes() == before
        assert _saved(tmp_path)["state"]["iteration"] == 5


# --- the real command -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, aligned_faces: Path) -> Workspace:
    return Workspace(copy_workspace(aligned_faces, tmp_path_factory.mktemp("rel") / "ws"))


class Train:
    """A `facelab train` process whose stderr lines are read as they come."""

    def __init__(self, ws: Workspace, name: str, *args: str, session: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "facelab", "-w", str(ws.root), "train", "--model-name",
             name, *TINY, *RUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=ENV, start_new_session=session)
        self.err: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"ended before {pattern.pattern!r}: {''.join(self.err)}")
            if found := pattern.search(line):
                return found

    def finish(self, timeout: float = 120) -> Result:
        rc = self.proc.wait(timeout)
        self.reader.join(10)
        assert self.proc.stdout is not None
        return Result(rc, self.proc.stdout.read(), "".join(self.err))

    def kill(self) -> None:
        """Whatever a failed test left running goes (its workers with it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@contextlib.contextmanager
def training(ws: Workspace, name: str, *args: str, session: bool = False) -> Iterator[Train]:
    run = Train(ws, name, *args, session=session)
    try:
        yield run
    finally:
        run.kill()


def _load(ws: Workspace, name: str) -> dict:
    """The save, loaded as the trainer loads it (verified), its weights all finite."""
    from facelab.train.models import build_model
    from facelab.train.saved import read_saved

    saved = read_saved(ws.model_dir, name)
    assert saved is not None
    mo = saved.options()
    model = build_model(mo)
    state = checkpoint.load(ws.model_dir, name, model, None, expected_arch=mo.arch,
                            fixed_options=saved.doc["fixed_options"], warn=print,
                            restore_rng=False)
    assert all(bool(torch.isfinite(v).all()) for v in model.state_dict().values())
    return state


def _alive_in_session(sid: int) -> list[str]:
    """Processes of session `sid` still running (zombies waiting for a reaper aside)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                alive.append(stat.parent.name)
    return alive


@pytest.mark.slow
def test_second_run_is_refused_and_sigterm_saves_like_ctrl_c(ws: Workspace) -> None:
    """Also the piped progress: a status line from the first iteration on (it used to
    come at iteration 25, minutes in on a busy CPU)."""
    with training(ws, "k") as first:
        assert int(first.wait_for(STATUS).group(1)) < 25
        # the second run from this process: the lock is still another process's
        second = run_in_process("-w", ws.root, "train", "--model-name", "k", *TINY, *RUN)
        assert_one_line_error(second, "model 'k' is in use", f"pid {first.proc.pid}")
        first.proc.send_signal(signal.SIGTERM)
        res = first.finish()
    assert res.rc == 0 and "Traceback" not in res.err, res.err
    it = _load(ws, "k")["iteration"]
    assert it >= 1 and f"stopped at iteration {it}" in res.out, res
    assert re.search(rf"^\[{it:07d}\] saved  src \d", res.err, re.M), res.err


@pytest.mark.slow
def test_sigterm_to_the_process_group_saves_and_leaves_no_worker(ws: Workspace) -> None:
    """A terminal closing or `timeout` signals the whole group, sample workers included:
    they used to die first and the trainer ended in a DataLoader traceback. (And --lr is a
    flag a resume may change.)"""
    with training(ws, "k", "--lr", "6e-5", session=True) as run:
        run.wait_for(STATUS)
        start = _load(ws, "k")["iteration"] if checkpoint.exists(ws.model_dir, "k") else 0
        os.killpg(run.proc.pid, signal.SIGTERM)
        res = run.finish()
        assert res.rc == 0 and "Traceback" not in res.err, res.err
        assert "killed by signal" not in res.err and "stopped at iteration" in res.out
        assert "learning rate 6e-05" in res.err
        state = _load(ws, "k")
        assert state["iteration"] > start and state["lr"] == 6e-5
        deadline = time.monotonic() + 10
        while _alive_in_session(run.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive_in_session(run.proc.pid)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_a_lock_the_next_takes_over(ws: Workspace) -> None:
    _train_here(ws, "stale", target_iteration=1)
    with training(ws, "stale", "--target-iteration", "2") as run:
        deadline = time.monotonic() + 120
        while (locks.holder(ws.root, "model-stale") or {}).get("pid") != run.proc.pid:
            assert run.proc.poll() is None and time.monotonic() < deadline, run.err
            time.sleep(0.05)
        run.proc.kill()  # kill -9 while it holds the lock
        run.proc.wait(30)
    res = run_facelab("-w", ws.root, "train", "--model-name", "stale", *RUN,
                      "--target-iteration", "1")  # past the lock, then a quick refusal
    assert res.rc == 1 and "already at iteration 1" in res.err, res
    assert f"left by a run that ended without finishing (pid {run.proc.pid})" in res.err


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """`folder` made unwritable even for root: a read-only bind mount, else the immutable
    attribute; skips (saying why) when this machine allows neither."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    ways = [(["mount", "--bind", str(folder), str(folder)], ["umount", str(folder)]),
            (["chattr", "+i", str(folder)], ["chattr", "-i", str(folder)])]
    for make, undo in ways:
        if shutil.which(make[0]) is None:
            continue
        if subprocess.run(make, capture_output=True).returncode != 0:
            continue
        if make[0] == "mount" and subprocess.run(
                ["mount", "-o", "remount,bind,ro", str(folder)],
                capture_output=True).returncode != 0:
            subprocess.run(undo, capture_output=True)
            continue
        try:
            yield
        finally:
            subprocess.run(undo, capture_output=True, check=True)
        return
    pytest.skip("cannot make a folder unwritable for root here (no bind mount, no chattr)")


@pytest.mark.slow
def test_read_only_model_folder_is_one_line_before_training(tmp_path: Path,
                                                           aligned_faces: Path) -> None:
    root = Workspace(copy_workspace(aligned_faces, tmp_path / "ws"))
    root.model_dir.mkdir(exist_ok=True)
    with unwritable(root.model_dir):
        with contextlib.suppress(OSError):
            (root.model_dir / "probe").touch()
            pytest.fail("the folder is still writable")
        res = run_facelab("-w", root.root, "train", "--model-name", "ro", *TINY, *RUN,
                          "--target-iteration", "1")
    # one line, before any training (it used to train until its first save)
    assert_one_line_error(res, f"Cannot write in {root.model_dir}", "make it writable")


def _train_here(ws: Workspace, name: str, **kw: object) -> list[str]:
    """A tiny SAE model trained in this process (no workers); what it reported."""
    from facelab.train.trainer import train

    tiny = {"resolution": 64, "ae_dims": 32, "e_dims": 8, "d_dims": 8, "d_mask_dims": 4}
    new = {} if checkpoint.exists(ws.model_dir, name) else {
        "preset": "sae", "overrides": tiny, "batch_size": 2}
    said = NullReporter()
    train(ws, TrainOptions(model_name=name, device="cpu", precision="fp32", preview_every=0,
                           backup_every=0, workers=0, **new, **kw), said)  # type: ignore[arg-type]
    return said.collected


@pytest.mark.slow
def test_a_learning_rate_far_too_high_is_rolled_back_and_halved(ws: Workspace) -> None:
    """A learning rate of 40 turns this model's loss NaN within a few steps; 10 does not
    (measured): the run rolls back (a new model to its first weights, a saved one to its
    save), halves the rate until it holds, goes on and saves the rate; a resume without
    --lr keeps it. No save ever holds a non-finite weight."""
    pattern = re.compile(r"rolled back to iteration (\d+) and lowered the learning rate to "
                         r"(\d+)")
    _train_here(ws, "div", target_iteration=2)  # a good save at the default rate
    for name, start, target in (("div-new", 0, 6), ("div", 2, 8)):
        said = _train_here(ws, name, lr=40.0, target_iteration=target)
        collapses = [m.groups() for m in map(pattern.search, said) if m]
        assert collapses, said
        assert collapses == [(str(start), "20"), (str(start), "10")][:len(collapses)], said
        state = _load(ws, name)
        assert state["iteration"] == target and state["lr"] == 40 / 2 ** len(collapses)
    said = _train_here(ws, "div", target_iteration=9)
    assert f"learning rate {state['lr']:g}" in said[0], said
    assert _load(ws, "div")["lr"] == state["lr"]
