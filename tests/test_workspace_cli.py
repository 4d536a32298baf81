"""Workspace commands and the CLI's shared behaviour (options anywhere, help, consent)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from facelab.cli.app import app
from facelab.video.source import open_frames
from facelab.workspace import Workspace
from tests.conftest import ROOT, put_video, run_in_process


def test_init_creates_layout(facelab, tmp_path):
    ws = tmp_path / "w"
    res = facelab("workspace", "init", "-w", ws)
    assert res.rc == 0, res.err
    for d in ["data_src/aligned", "data_dst/aligned", "data_dst/merged", "model"]:
        assert (ws / d).is_dir(), d


@pytest.mark.slow
def test_common_options_before_and_after(facelab, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert facelab("-w", a, "workspace", "init").rc == 0
    assert facelab("workspace", "init", "-w", b).rc == 0
    assert (a / "model").is_dir() and (b / "model").is_dir()
    # the later (command-level) value wins
    c = tmp_path / "c"
    assert facelab("-w", a, "workspace", "init", "--workspace", c).rc == 0
    assert (c / "model").is_dir()


def test_default_workspace_is_cwd_workspace(facelab, tmp_path):
    assert facelab("workspace", "init", "--quiet", cwd=tmp_path).rc == 0
    assert (tmp_path / "workspace" / "data_dst" / "aligned").is_dir()


@pytest.mark.slow
def test_clear_moves_everything_to_trash(facelab, workspace, grid_b):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst").rc == 0
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*")
                    if p.is_file() and p.parts[len(workspace.parts)] != ".locks")
    res = facelab("-w", workspace, "workspace", "clear", input="n\n")
    assert res.rc != 0  # declined: nothing moved
    assert (workspace / "data_dst.mpg").exists()
    res = facelab("-w", workspace, "workspace", "clear", "--yes")
    assert res.rc == 0, res.err
    assert not (workspace / "data_dst.mpg").exists()
    assert (workspace / "data_dst" / "aligned").is_dir()  # layout re-created, empty
    assert not list((workspace / "data_dst").glob("*.png"))
    (batch,) = (workspace / ".trash").iterdir()
    after = sorted(p.relative_to(batch) for p in batch.rglob("*") if p.is_file())
    assert after == before
    assert (batch / "data_dst.mpg").read_bytes() == grid_b.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("frames,holds", [("png", "75 images"),
                                          ("video", "75 frames kept in the video")])
def test_info_counts(facelab, workspace, grid_b, frames, holds):
    put_video(workspace, "dst", grid_b)
    assert facelab("-w", workspace, "video", "extract", "dst", "--frames", frames).rc == 0
    res = facelab("-w", workspace, "workspace", "info")
    assert res.rc == 0, res.err
    assert "data_dst.mpg" in res.out and "25 fps" in res.out
    lines = [ln for ln in res.out.splitlines() if ln.strip().startswith("│ data_dst/ ")]
    assert len(lines) == 1 and holds in lines[0]


@pytest.mark.slow
def test_workspace_is_relocatable(facelab, tmp_path, grid_b):
    ws = tmp_path / "one"
    ws.mkdir()
    put_video(ws, "dst", grid_b)
    assert facelab("-w", ws, "video", "extract", "dst", "--frames", "png").rc == 0
    # the rest by the same CLI in this process (no start-up each)
    kept = tmp_path / "kept"
    kept.mkdir()
    put_video(kept, "dst", grid_b)
    assert run_in_process("-w", kept, "video", "extract", "dst").rc == 0  # kept in its video
    for f in [*ws.rglob("*.json"), *kept.rglob("*.json")]:
        assert str(tmp_path) not in f.read_text(), f  # no absolute paths inside
    moved = tmp_path / "renamed"
    shutil.move(ws, moved)
    copy = tmp_path / "backup"
    shutil.copytree(moved, copy)
    for w in (moved, copy):
        assert run_in_process("-w", w, "video", "extract", "dst").rc == 0  # still complete
        res = run_in_process("-w", w, "video", "assemble", "--frames", w / "data_dst")
        assert res.rc == 0, res.err
        assert (w / "result.mp4").is_file()
    moved_kept = tmp_path / "kept_renamed"
    shutil.move(kept, moved_kept)
    res = run_in_process("-w", moved_kept, "video", "extract", "dst")
    assert res.rc == 0 and "skipped" in res.out, res.out + res.err
    frames = open_frames(Workspace(moved_kept), "dst")
    assert len(frames) == 75 and frames.read(frames.names[-1]).shape == (288, 360, 3)


def _commands(group, path=()):
    import typer.main

    cmd = typer.main.get_command(group)
    stack = [(cmd, path)]
    while stack:
        c, p = stack.pop()
        yield p
        for name, sub in getattr(c, "commands", {}).items():
            stack.append((sub, (*p, name)))


#: Every command's `--help` through the real CLI app, in one `python` process: a process
#: per command spent a second and a half starting for each of some 36 commands.
HELPS = """
import contextlib, io, json, sys
from facelab.cli.app import app
helps = {}
for path in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app([*path, "--help"], prog_name="facelab")
            rc = 0
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    helps[" ".join(path)] = [rc, out.getvalue(), err.getvalue()]
with open(sys.argv[2], "w") as f:
    json.dump(helps, f)
"""


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, list]:
    """Command path → [exit status, stdout, stderr] of `facelab PATH --help`."""
    found = tmp_path_factory.mktemp("helps") / "helps.json"
    proc = subprocess.run(
        [sys.executable, "-c", HELPS, json.dumps(sorted(_commands(app))), str(found)],
        cwd=ROOT, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(found.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(_commands(app)))
def test_every_help_says_consent(helps, path):
    rc, out, err = helps[" ".join(path)]
    assert rc == 0, err
    assert "consent" in out.lower(), path


def test_version(facelab):
    res = facelab("--version")
    assert res.rc == 0 and res.out.startswith("facelab ")
