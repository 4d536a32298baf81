"""`facelab swap` end to end on two GRID clips, with a handful of iterations (the swap
itself a real process; the checks after it by the same CLI in this process)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests.conftest import (
    QUICK_SWAP,
    Swapped,
    assert_one_line_error,
    data_file,
    run_facelab,
    run_in_process,
)

pytestmark = pytest.mark.slow  # real footage or training (make test-fast skips it)

pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")


def test_swap_keeps_frames_rate_audio_and_is_marked(quick_swap: Swapped):
    """The session's quick swap (conftest: B onto A, its output outside the workspace)."""
    src, dst, out, ws, res = (quick_swap.src, quick_swap.dst, quick_swap.out, quick_swap.ws,
                              quick_swap.res)
    assert res.rc == 0, res.err
    assert "Result:" in res.out and "iteration 1" in res.out
    with av.open(str(dst)) as a, av.open(str(out)) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        frames_a = sum(1 for _ in a.decode(va))
        frames_b = sum(1 for _ in b.decode(vb))
        assert frames_b == frames_a == 75
        assert Fraction(vb.average_rate) == Fraction(va.average_rate) == 25
        assert b.streams.audio and abs(float(b.duration) / 1e6 - 3.0) < 0.1
    assert run_in_process("verify", out).rc == 0
    # the output lies outside the workspace: swap recorded it, so eval finds it
    from facelab.eval.run import workspace_result
    from facelab.workspace import Workspace

    assert workspace_result(Workspace(ws)) == out
    # again: everything is done, nothing is redone
    again = run_in_process("-w", ws, "swap", src, dst, "-o", out, *QUICK_SWAP)
    assert again.rc == 0 and "up to date" in again.out, again
    # a different dst in the same workspace is refused
    other = run_in_process("-w", ws, "swap", src, data_file("grid/speaker_c.mpg"), "-o", out,
                        *QUICK_SWAP)
    assert_one_line_error(other, "already holds another")


def test_default_swap_is_meshswap_ready_without_training(tmp_path: Path):
    """The default model needs no training: src's own faces, moved onto dst's; the result is
    marked, and a rerun has nothing to do."""
    src, dst = data_file("grid/speaker_a_1.mpg"), data_file("grid/speaker_b.mpg")
    out, ws = tmp_path / "result.mp4", tmp_path / "ws"
    res = run_facelab("-w", ws, "swap", src, dst, "-o", out)
    assert res.rc == 0, res.err
    # the checks after it by the same CLI in this process (no start-up each)
    assert run_in_process("verify", out).rc == 0
    info = run_in_process("-w", ws, "model", "info", "swap")
    assert "meshswap" in info.out and "Index: 75 src faces" in info.out, info
    again = run_in_process("-w", ws, "swap", src, dst, "-o", out)
    assert again.rc == 0 and "up to date" in again.out, again


def test_swap_bad_input_is_one_line(tmp_path: Path):
    dst = data_file("grid/speaker_a_1.mpg")
    res = run_facelab("-w", tmp_path / "ws", "swap", tmp_path / "missing.mp4", dst, "-o",
                      tmp_path / "r.mp4")
    assert_one_line_error(res, "does not exist")
    res = run_facelab("-w", tmp_path / "ws", "swap", dst, dst, "-o", tmp_path / "r.gif")
    assert_one_line_error(res, ".mp4")


def test_faceless_src_says_so_once_plainly(tmp_path: Path):
    """A faceless src cut short: the swap warns that it breaks and stops on the real problem,
    no face in any frame, named with its frame count and video; a rerun says exactly that
    again (it said "run `facelab extract src`", which had run)."""
    from tests.test_extract_faces import faceless_clip

    src = faceless_clip(tmp_path / "pattern.mp4", frames=12, cut=300)
    dst = faceless_clip(tmp_path / "dst.mp4")
    ws, out = tmp_path / "ws", tmp_path / "out.mp4"
    res = run_facelab("-w", ws, "swap", src, dst, "-o", out)
    assert res.rc == 1 and "Traceback" not in res.err, res
    last = res.err.strip().splitlines()[-1]
    assert last.startswith("error: No face was found in any of the ") and "data_src.mp4" in last
    res = run_facelab("-w", ws, "swap", src, dst, "-o", out)
    assert_one_line_error(res, "No face was found in any of the", "frames of data_src.mp4",
                          "clearly visible")
    assert "extract src" not in res.err and not out.exists()
