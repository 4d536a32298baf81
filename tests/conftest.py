"""Shared fixtures: real clips from ../shared/data (skipped with a reason when absent) and a
runner for the real `facelab` command in a subprocess."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the C2PA signing key facelab makes on first use goes to $XDG_CONFIG_HOME/facelab: never
# the real ~/.config in tests. Set at import, before any fixture's subprocess inherits it.
_CONFIG = tempfile.mkdtemp(prefix="facelab-test-config-")
os.environ["XDG_CONFIG_HOME"] = _CONFIG
atexit.register(shutil.rmtree, _CONFIG, True)
DATA = Path(os.environ.get("FACELAB_TEST_DATA", ROOT.parent / "shared" / "data"))


def data_file(rel: str) -> Path:
    path = DATA / rel
    if not path.is_file():
        pytest.skip(f"test data {path} is absent (see ../shared/data/README.md)")
    return path


@pytest.fixture
def grid_b() -> Path:
    return data_file("grid/speaker_b.mpg")


@pytest.fixture
def grid_a1() -> Path:
    return data_file("grid/speaker_a_1.mpg")


@pytest.fixture
def pexels() -> Path:
    return data_file("pexels/woman_pose_variety.mp4")


@dataclass
class Result:
    rc: int
    out: str
    err: str


def run_facelab(*args: str | os.PathLike[str], cwd: Path | None = None,
                input: str | None = None, timeout: float = 600) -> Result:
    """Run the real CLI as a user would (a new process, real stdout/stderr)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "facelab", *map(str, args)], cwd=cwd, env=env, input=input,
        capture_output=True, text=True, timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_in_process(*args: str | os.PathLike[str], input: str | None = None) -> Result:
    """The same CLI app called in this process (typer's runner), with run_facelab's
    terminal: parsing, output, one-line errors and exit status, without the seconds a new
    Python with PyTorch takes to start. For calls whose subject is not the process itself
    (signals, locks across processes, what a crash prints): those keep run_facelab. An
    exception the CLI did not turn into an exit status is raised here."""
    from unittest import mock

    from typer.testing import CliRunner

    from facelab.cli import ui
    from facelab.cli.app import app

    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    with contextlib.ExitStack() as stack:
        for console in (ui.out, ui.err):  # as in a new process: no colour, COLUMNS wide
            stack.enter_context(mock.patch.object(console, "_width", None))
            stack.enter_context(mock.patch.object(console, "_color_system", None))
        res = runner.invoke(app, list(map(str, args)), input=input, prog_name="facelab")
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res.exit_code, res.stdout, res.stderr)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """PyTorch on `n` threads for a while: on a busy 2-core machine a second thread spins
    at barriers and slows every step instead of speeding it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture
def facelab():
    return run_facelab


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def put_video(ws: Path, side: str, source: Path) -> Path:
    """Copy a clip into the workspace as data_<side>.<ext>."""
    dest = ws / f"data_{side}{source.suffix}"
    shutil.copyfile(source, dest)
    return dest


@pytest.fixture(scope="session")
def aligned_faces(tmp_path_factory) -> Path:
    """A workspace with GRID speaker B's faces as src (8 fps, 24) and speaker A's as dst
    (all 75 frames, as PNGs), extracted once per session by the real CLI. Copy it
    (`copy_workspace`) before training in it, so test modules do not see each other's
    models."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")
    root = tmp_path_factory.mktemp("aligned") / "ws"
    root.mkdir()
    for side, clip in (("src", "grid/speaker_b.mpg"), ("dst", "grid/speaker_a_1.mpg")):
        put_video(root, side, data_file(clip))
        # dst as PNG frames: the route the merge tests read frames from (the video route,
        # dst kept in its video, is tests/test_merge_stream.py's)
        fmt = ("--frames", "png") if side == "dst" else ("--fps", "8")
        res = run_facelab("-w", root, "video", "extract", side, *fmt)
        assert res.rc == 0, res.err
        res = run_facelab("-w", root, "extract", side, "--no-debug")
        assert res.rc == 0, res.err
    return root


def copy_workspace(src: Path, dest: Path) -> Path:
    """A private copy of a prepared workspace."""
    shutil.copytree(src, dest)
    return dest


@pytest.fixture(scope="session")
def full_src_faces(aligned_faces: Path, tmp_path_factory) -> Path:
    """`aligned_faces` with GRID speaker B's every frame as src (75 faces: meshswap's
    retrieval needs its blinks and open mouths, which 8 fps misses), extracted once per
    session by the real CLI for the meshswap tests. Copy it before writing in it."""
    root = copy_workspace(aligned_faces, tmp_path_factory.mktemp("full_src") / "ws")
    shutil.rmtree(root / "data_src")
    for args in (("video", "extract", "src"), ("extract", "src", "--no-debug")):
        res = run_facelab("-w", root, *args)
        assert res.rc == 0, res.err
    return root


#: The tiny `facelab swap`: one iteration of quick96 (batch 2), src sampled at 5 fps.
QUICK_SWAP = ("--iterations", "1", "--preset", "quick96", "--batch-size", "2",
              "--src-fps", "5")


@dataclass
class Swapped:
    """A finished `facelab swap`: its workspace, its output (outside the workspace, so the
    workspace's swap.json is how eval finds it), its two clips and what it printed."""

    ws: Path
    out: Path
    src: Path
    dst: Path
    res: Result


@pytest.fixture(scope="session")
def quick_swap(tmp_path_factory) -> Swapped:
    """GRID speaker B onto speaker A by the real `facelab swap ... QUICK_SWAP`, once per
    session (about a minute on two cores): tests/test_swap.py checks the swap itself,
    tests/test_eval.py evaluates its result in a copy of the workspace."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")
    root = tmp_path_factory.mktemp("swap")
    src, dst = data_file("grid/speaker_b.mpg"), data_file("grid/speaker_a_1.mpg")
    ws, out = root / "ws", root / "result.mp4"
    res = run_facelab("-w", ws, "swap", src, dst, "-o", out, *QUICK_SWAP)
    assert res.rc == 0, res.err
    return Swapped(ws, out, src, dst, res)


def assert_one_line_error(res: Result, *words: str) -> None:
    """A user error: non-zero exit, exactly one line on stderr, no traceback."""
    assert res.rc != 0, res
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {res.err!r}"
    assert "Traceback" not in res.err
    assert lines[0].startswith("error:"), lines[0]
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


HOLD_LOCK = """
import sys, time
from pathlib import Path
from facelab import locks
with locks.hold(Path(sys.argv[1]), sys.argv[2], "it"):
    print("held", flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def lock_holder(root: Path, name: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding lock `name` of workspace `root` until the block ends (or the
    test kills it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root), name], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()
