"""`workspace clear` never pulls a workspace from under a running stage."""

from __future__ import annotations

import time

from tests.conftest import assert_one_line_error, lock_holder


def test_clear_is_refused_while_a_stage_holds_a_lock(facelab, workspace):
    assert facelab("-w", workspace, "workspace", "init", "-q").rc == 0
    with lock_holder(workspace, "merge") as holder:
        res = facelab("-w", workspace, "workspace", "clear", "--yes")
        assert_one_line_error(res, "in use by", f"pid {holder.pid}")
        assert (workspace / "model").is_dir() and not (workspace / ".trash").exists()
    # the holder is gone (killed): its lock is stale, clear goes ahead and keeps .locks/
    time.sleep(0.1)
    res = facelab("-w", workspace, "workspace", "clear", "--yes")
    assert res.rc == 0, res.err
    assert (workspace / ".locks").is_dir()
    assert not list((workspace / ".trash").glob("*/.locks"))
