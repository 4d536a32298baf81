"""`workspace clear` never pulls a workspace from under a running stage."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.conftest import assert_one_line_error

HOLD = """
import sys, time
from pathlib import Path
from facelab.locks import hold
with hold(Path(sys.argv[1]), "merge", "the merge"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_clear_is_refused_while_a_stage_holds_a_lock(facelab, workspace):
    assert facelab("-w", workspace, "workspace", "init", "-q").rc == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(workspace)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        res = facelab("-w", workspace, "workspace", "clear", "--yes")
        assert_one_line_error(res, "in use by", f"pid {holder.pid}")
        assert (workspace / "model").is_dir() and not (workspace / ".trash").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed): its lock is stale, clear goes ahead and keeps .locks/
    time.sleep(0.1)
    res = facelab("-w", workspace, "workspace", "clear", "--yes")
    assert res.rc == 0, res.err
    assert (workspace / ".locks").is_dir()
    assert not list((workspace / ".trash").glob("*/.locks"))
