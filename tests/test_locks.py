"""One writer per workspace stage: a second process is refused in one line naming the
holder, a lock left by a killed process is taken over (and said so), and a process may
take a lock it holds again."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from facelab import locks
from facelab.faceset.folder import Faceset
from facelab.faceset.sort import sort_faceset
from facelab.workspace import Workspace
from tests.conftest import assert_one_line_error, run_facelab
from tests.conftest import lock_holder as holder
from tests.test_faceimage import write_faces
from tests.test_leftovers import make_dst

TRY = """
import sys
from pathlib import Path
from facelab import locks
try:
    with locks.hold(Path(sys.argv[1]), sys.argv[2], "it"):
        print("free")
except locks.Busy:
    print("busy")
"""


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def seen_by_another_process(root: Path, name: str) -> str:
    res = subprocess.run([sys.executable, "-c", TRY, str(root), name], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_second_process_is_refused_and_a_killed_holders_lock_taken_over(tmp_path: Path) -> None:
    with holder(tmp_path, "merge") as proc:
        with pytest.raises(locks.Busy) as refused, \
                locks.hold(tmp_path, "merge", "The merge of this workspace"):
            pytest.fail("took a lock another live process holds")
        msg = str(refused.value)
        assert msg.startswith("The merge of this workspace is in use by `")
        assert f"(pid {proc.pid} on " in msg and "\n" not in msg
        assert (locks.holder(tmp_path, "merge") or {}).get("pid") == proc.pid
        with locks.hold(tmp_path, "assemble", "another stage") as stale:  # other locks: free
            assert stale is None
        kill9(proc)
        assert locks.holder(tmp_path, "merge") is None  # the kernel released its flock
        with locks.hold(tmp_path, "merge", "The merge") as stale:
            assert stale is not None and stale["pid"] == proc.pid
            line = locks.took_over(stale)
            assert f"(pid {proc.pid})" in line and "ended without releasing it" in line
            assert seen_by_another_process(tmp_path, "merge") == "busy"
    with locks.hold(tmp_path, "merge", "The merge") as stale:
        assert stale is None  # released cleanly last time: nothing stale to report


def test_reentrant_within_a_process(tmp_path: Path) -> None:
    with locks.hold(tmp_path, "faces-src", "it") as outer:
        assert outer is None
        with locks.hold(tmp_path, "faces-src", "it") as inner:
            assert inner is None
        assert seen_by_another_process(tmp_path, "faces-src") == "busy"  # outer still holds
    assert seen_by_another_process(tmp_path, "faces-src") == "free"


def test_assemble_refused_while_held_then_takes_over_a_killed_holders_lock(
        tmp_path: Path) -> None:
    ws = make_dst(tmp_path / "ws").root
    args = ("-w", ws, "video", "assemble", "--frames", ws / "data_dst")
    with holder(ws, "assemble") as proc:
        res = run_facelab(*args, timeout=120)
        assert_one_line_error(res, "in use by", f"pid {proc.pid}")
        assert not (ws / "result.mp4").exists()
        kill9(proc)
        res = run_facelab(*args, timeout=120)
    assert res.rc == 0, res.err
    assert f"Took over the lock left by `-c {ws} assemble` (pid {proc.pid})" in res.err
    assert (ws / "result.mp4").is_file()


def test_faceset_sort_refused_while_face_extraction_holds_the_side(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.init()
    aligned = ws.aligned_dir("src")
    write_faces(aligned, 2)
    before = sorted(p.name for p in aligned.iterdir())
    with holder(ws.root, "faces-src") as proc:  # the lock `facelab extract src` holds
        res = run_facelab("-w", ws.root, "sort", "src", "--by", "origname", timeout=120)
        assert_one_line_error(res, "data_src/aligned", "in use by", f"pid {proc.pid}")
        # the same folder named as --dir is the same faceset, under the same lock
        with pytest.raises(locks.Busy, match=f"pid {proc.pid}"):
            sort_faceset(Faceset(aligned, str(aligned), f"--dir {aligned}"), "origname")
    assert sorted(p.name for p in aligned.iterdir()) == before


def test_reentrant_in_one_thread_refused_from_another(tmp_path: Path) -> None:
    """The studio serves requests on threads: a second thread of the process holding a lock
    is refused like another process, while the holding thread may take it again."""
    import threading

    outcome: list[str] = []

    def other() -> None:
        try:
            with locks.hold(tmp_path, "merge", "the merge"):
                outcome.append("taken")
        except locks.Busy as exc:
            outcome.append(str(exc))

    with locks.hold(tmp_path, "merge", "the merge"):
        with locks.hold(tmp_path, "merge", "the merge"):  # same thread: re-entrant
            pass
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(outcome) == 1 and outcome[0].startswith("the merge is in use by")
    t = threading.Thread(target=other)  # released: the other thread now takes it
    t.start()
    t.join()
    assert outcome[1] == "taken"
