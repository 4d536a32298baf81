"""Piped runs (a log, `tee`, a job scheduler) show that a long step is alive."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import put_video


def test_a_piped_long_step_logs_its_progress(workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "FACELAB_PROGRESS_EVERY": "0"}
    proc = subprocess.run([sys.executable, "-m", "facelab", "-w", str(workspace), "video",
                           "extract", "dst"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [m.groups() for m in re.finditer(r"dst: \S+ → \S+: (\d+)/(\d+) \([\d.,]+/s, ETA",
                                              proc.stderr)]
    assert len(lines) >= 10, proc.stderr  # one per frame at interval 0
    done = [int(a) for a, _ in lines]
    assert done == sorted(done) and int(lines[-1][1]) >= done[-1]


def test_the_default_interval_keeps_a_short_piped_run_quiet(workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    env = {k: v for k, v in os.environ.items() if k != "FACELAB_PROGRESS_EVERY"}
    proc = subprocess.run([sys.executable, "-m", "facelab", "-w", str(workspace), "video",
                           "extract", "dst"], env={**env, "NO_COLOR": "1"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ETA" not in proc.stderr  # 30 s between lines: a 75-frame clip says nothing
