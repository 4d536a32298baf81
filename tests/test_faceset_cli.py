"""The curation commands as a user runs them: a killed sort is recoverable, errors are one
line, a clean-up session (sort, trash, restore, best N, undo) never loses a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from facelab.faceset.folder import resolve
from facelab.workspace import Workspace
from tests.conftest import assert_one_line_error, copy_workspace, run_facelab, run_in_process
from tests.test_faceset import state

pytestmark = pytest.mark.slow  # real footage or training (make test-fast skips it)

KILL = """
import os, signal, sys
from pathlib import Path
from facelab.faceset import journal
from facelab.faceset.folder import resolve
from facelab.faceset.sort import sort_faceset
from facelab.workspace import Workspace

k = int(sys.argv[2])
journal.STEP_HOOK = lambda n: os.kill(os.getpid(), signal.SIGKILL) if n == k else None
sort_faceset(resolve(Workspace(Path(sys.argv[1])), "dst", None), "hist")
"""


@pytest.fixture
def ws(aligned_faces: Path, tmp_path: Path) -> Path:
    return copy_workspace(aligned_faces, tmp_path / "ws")


@pytest.mark.parametrize("k", [40, 120])  # killed in the first phase, in the second
def test_killed_sort_then_undo_or_resume_loses_nothing(ws: Path, k: int, aligned_faces: Path,
                                                      tmp_path: Path) -> None:
    """Killed in the first phase: undo restores every name and byte; in the second: resume
    ends with the same files as a sort that was never interrupted."""
    fs = resolve(Workspace(ws), "dst", None)
    before = state(fs)
    proc = subprocess.run([sys.executable, "-c", KILL, str(ws), str(k)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert state(fs) != before
    res = run_facelab("-w", ws, "sort", "dst", "--by", "blur")
    assert_one_line_error(res, "unfinished `sort hist`", "faceset undo dst",
                          "faceset resume dst")
    if k == 40:  # roll it back
        res = run_facelab("-w", ws, "faceset", "undo", "dst")
        assert res.rc == 0, res.err
        assert "Undid `sort hist`" in res.out
        assert state(fs) == before
        return
    # or finish it: the same files as an uninterrupted sort
    res = run_facelab("-w", ws, "faceset", "resume", "dst")
    assert res.rc == 0 and "Finished `sort hist`" in res.out, res
    clean = copy_workspace(aligned_faces, tmp_path / "clean")
    res = run_facelab("-w", clean, "sort", "dst", "--by", "hist")
    assert res.rc == 0, res.err
    assert state(fs) == state(resolve(Workspace(clean), "dst", None))
    res = run_facelab("-w", ws, "faceset", "resume", "dst")
    assert res.rc == 0 and "Nothing was interrupted" in res.out, res
    res = run_facelab("-w", ws, "sort", "dst", "--by", "blur")
    assert res.rc == 0, res.err


def test_clean_up_session_never_loses_a_file(ws: Path) -> None:
    fs = resolve(Workspace(ws), "dst", None)
    before = state(fs)
    res = run_facelab("-w", ws, "sort", "dst", "--by", "final", "--target", "20")
    assert res.rc == 0 and "20 kept, 55 moved to the trash" in res.out, res
    victims = sorted(fs.folder.glob("*.jpg"))[:2]  # the rest by the CLI in this process
    res = run_in_process("-w", ws, "faceset", "trash", *victims)
    assert res.rc == 0 and "Moved 2 files" in res.out, res
    res = run_in_process("-w", ws, "faceset", "restore", "--all", "dst")
    assert res.rc == 0 and "Restored 57 files" in res.out, res
    assert len(fs.faces()) == 75
    res = run_in_process("-w", ws, "faceset", "undo", "dst", "--steps", "3")
    assert res.rc == 0 and res.out.count("Undid") == 3, res
    assert state(fs) == before
    res = run_in_process("-w", ws, "faceset", "add-debug", "dst")
    assert res.rc == 0 and "Wrote 75 debug overlays" in res.out, res
    res = run_in_process("-w", ws, "faceset", "remove-debug", "dst")
    assert res.rc == 0 and "Removed 75 debug overlays" in res.out, res
    res = run_in_process("-w", ws, "faceset", "stats", "src")
    assert res.rc == 0 and "24 faces" in res.out and "src lacks" in res.out, res
    assert (ws / "data_src" / "aligned_stats.png").is_file()
    assert state(fs) == before


def test_errors_are_one_line(ws: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_facelab("-w", ws, "sort", "--dir", empty, "--by", "blur"),
                          "holds no faces")
    assert_one_line_error(run_in_process("-w", ws, "sort", "src", "--by", "sharpest"),
                          "unknown sort method 'sharpest'", "blur", "final")
    assert_one_line_error(run_in_process("-w", ws, "sort", "src", "--by", "final",
                                         "--target", "5000"), "24 faces", "--target 5000")
    assert_one_line_error(run_in_process("-w", ws, "faceset", "undo", "src"), "nothing to undo")
    assert_one_line_error(run_in_process("-w", ws, "sort", "--by", "blur"), "src, dst or --dir")
