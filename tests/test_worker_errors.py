"""A full (or read-only) disk is one line on stderr, never a traceback, whether a worker
process or the main one hit it (a worker's error crossing intact: tests/test_executor.py).

The full disk is real: a tiny tmpfs mounted on data_dst/merged (root may mount; elsewhere
a file-size limit on the CLI process gives the same kind of refusal, EFBIG, from real
writes)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from facelab.merge.merger import merge
from facelab.merge.options import MergeOptions
from facelab.merge.resume import complete_png
from facelab.progress import NullReporter
from facelab.workspace import Workspace
from tests.conftest import ROOT, Result, assert_one_line_error, run_facelab
from tests.test_merge_resume import tiny_merge_workspace

FRAMES = 9  # enough for the merge's two workers, on two cores or more

# ── a real full disk ────────────────────────────────────────────────────────────────────


def _mount(target: Path, options: str) -> bool:
    """Mount a tmpfs on `target`; False when this process may not."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                         capture_output=True)
    return res.returncode == 0


@contextmanager
def _mounted(target: Path, options: str) -> Iterator[bool]:
    target.mkdir(parents=True, exist_ok=True)
    ok = _mount(target, options)
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(target)], check=True)


def _limit_file_size() -> None:  # in the child, before exec: writes past 8 KB get EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


def _facelab(*args: str | os.PathLike[str], limited: bool) -> Result:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "facelab", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size if limited else None)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Workspace:
    return tiny_merge_workspace(tmp_path_factory.mktemp("disk") / "ws", FRAMES)


def test_full_disk_in_merge_is_one_line_and_keeps_what_was_done(tiny: Workspace,
                                                                tmp_path: Path) -> None:
    ws = Workspace(shutil.copytree(tiny.root, tmp_path / "ws"))
    with _mounted(ws.merged_dir, "size=40k") as tmpfs:  # two merged frames fit
        res = _facelab("-w", ws.root, "-q", "merge", "--model-name", "m", "--precision",
                       "fp32", limited=not tmpfs)
        assert_one_line_error(res, "while writing", "merged/000", ".png: ",
                               "run this again")
        assert res.rc == 1 and "part-" not in res.err
        assert not list(ws.merged_dir.glob(".*")), "a temporary file was left"
        kept = sorted(ws.merged_dir.glob("*.png"))
        assert len(kept) < FRAMES and all(complete_png(p) for p in kept)
        recorded = json.loads((ws.merged_dir / "merge.json").read_text())["frames"]
        assert {f"{s}.png" for s in recorded} <= {p.name for p in kept}
        if tmpfs:  # free some space, as the message says, and run it again
            subprocess.run(["mount", "-o", "remount,size=4m", str(ws.merged_dir)], check=True)
        rep = merge(ws, "m", MergeOptions(), NullReporter(), workers=1, precision="fp32")
        assert (rep.skipped, rep.merged_now) == (len(recorded), FRAMES - len(recorded))
        assert sorted(p.name for p in ws.merged_dir.glob("*.png") if complete_png(p)) == [
            f"{i:05d}.png" for i in range(1, FRAMES + 1)]


def test_read_only_disk_is_one_line(tmp_path: Path) -> None:
    """The main process's own writes: same one line."""
    with _mounted(tmp_path / "ro", "ro,size=64k") as tmpfs:
        if not tmpfs:
            pytest.skip("mounting a tmpfs needs root")
        res = run_facelab("-w", tmp_path / "ro" / "ws", "workspace", "init")
        assert_one_line_error(res, "Read-only file system at", "ro/ws", "run this again")
