"""`facelab eval` on a real (tiny) swap: GRID B → A with 1 iteration, by the real CLI (the
session's, conftest's `quick_swap`); the eval.json layout, the HTML report, and one-line
errors for missing or unreadable inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Swapped, assert_one_line_error, copy_workspace, run_facelab

pytestmark = pytest.mark.slow  # real footage or training (make test-fast skips it)

pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")

SUMMARY_KEYS = {
    "identity_recognised_as_src", "identity_closer_to_src", "identity_top1",
    "identity_dist_src", "identity_dist_dst", "sharpness_ratio", "pose_error_deg",
    "expression_error", "expression_corr", "jitter_ratio", "background_psnr_db",
    "face_psnr_vs_dst_db", "face_ssim_vs_dst", "face_found_share", "frames",
}


@pytest.fixture(scope="module")
def swapped(tmp_path_factory, quick_swap: Swapped) -> Path:
    """A copy of the session's swapped workspace (eval writes eval.json and eval.html in it);
    its result lies outside, named by its swap.json."""
    return copy_workspace(quick_swap.ws, tmp_path_factory.mktemp("eval") / "ws")


@pytest.fixture(scope="module")
def evaluated(swapped: Path) -> tuple[Path, dict]:
    res = run_facelab("-w", swapped, "eval", "--identity-every", "8", "--max-frames", "40",
                      "--identity-faces", "8", "-q")
    assert res.rc == 0, res.err
    assert "recognised as src" in res.out and "eval.json" in res.out
    return swapped, json.loads((swapped / "eval.json").read_text())


def test_eval_json_has_the_summary_and_a_row_per_frame(evaluated):
    _ws, doc = evaluated
    s = doc["summary"]
    assert set(s) >= SUMMARY_KEYS
    assert s["frames"] == 40 and len(doc["frames"]) == 40
    assert s["face_found_share"] >= 0.9
    assert 30 < s["background_psnr_db"] < 100  # re-encoded mp4: close, not identical
    assert s["train_minutes"] is not None
    row = doc["frames"][0]
    assert {"frame", "dist_src", "dist_dst", "pose_error_deg", "mouth_dst", "mouth_result",
            "sharpness_ratio", "background_psnr_db"} <= set(row)
    # one iteration cannot have learned src: the face is still dst's and eval says so
    if s["identity_dist_src"] is not None:
        assert s["identity_recognised_as_src"] == 0.0
        assert s["identity_dist_dst"] < s["identity_dist_src"]


def test_report_is_one_html_file_with_its_plots(evaluated):
    ws, _ = evaluated
    text = (ws / "eval.html").read_text()
    assert text.startswith("<!doctype html>")
    assert text.count("data:image/png;base64,") >= 5  # curves and distributions
    assert text.count("data:image/jpeg;base64,") >= 3  # the dst | result strip
    assert "src=\"http" not in text and "src='http" not in text  # self-contained


def test_inputs_given_explicitly_and_outputs_elsewhere(swapped: Path, quick_swap: Swapped,
                                                      tmp_path: Path):
    out, report = tmp_path / "a.json", tmp_path / "a.html"
    res = run_facelab("eval", "--result", quick_swap.out, "--dst",
                      swapped / "data_dst.mpg", "--src", swapped / "data_src" / "aligned",
                      "--out", out, "--report", report, "--max-frames", "6",
                      "--identity-every", "6", "--identity-faces", "4", "-q", cwd=tmp_path)
    assert res.rc == 0, res.err
    assert json.loads(out.read_text())["summary"]["frames"] == 6
    assert report.is_file()


def test_missing_or_unreadable_result_is_one_line_exit_2(swapped: Path, tmp_path: Path):
    res = run_facelab("-w", swapped, "eval", "--result", tmp_path / "nope.mp4")
    assert_one_line_error(res, "nope.mp4", "does not exist")
    assert res.rc == 2
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    res = run_facelab("-w", swapped, "eval", "--result", bad)
    assert_one_line_error(res, "bad.mp4")
    assert res.rc == 2
    res = run_facelab("-w", tmp_path / "empty", "eval")
    assert_one_line_error(res, "result")
    assert res.rc == 2
    assert not (tmp_path / "eval.json").exists()


def test_occluders_kept_end_to_end(swapped: Path, tmp_path: Path):
    """`eval --occluders`: a region over the mouth of dst's faces (aligned-face polygons,
    placed through dst's extracted faces) was painted over by the swap, so little of it is
    dst's own; a region of the background (frame pixels) is all dst's own."""
    mouth = [[[88, 150], [168, 150], [168, 200], [88, 200]]]  # aligned whole-face, 256 px
    aligned = {"face_type": "whole-face", "size": 256,
               "faces": [{"frame": i, "occluders": mouth} for i in range(4)]}
    corner = {"frames": [{"frame": i, "occluders": [[[2, 2], [40, 2], [40, 30], [2, 30]]]}
                         for i in range(4)]}
    kept = {}
    for name, doc in (("mouth", aligned), ("corner", corner)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        out = tmp_path / f"{name}-eval.json"
        res = run_facelab("-w", swapped, "eval", "--occluders", path, "--out", out,
                          "--report", tmp_path / f"{name}.html", "--max-frames", "4",
                          "--identity-every", "4", "--identity-faces", "4", "-q")
        assert res.rc == 0, res.err
        s = json.loads(out.read_text())["summary"]
        assert s["occlusion_frames"] == 4 and s["occlusion_pixels"] > 4 * 1000
        kept[name] = s["occlusion_kept"]
    assert kept["corner"] > 0.98
    assert kept["mouth"] < 0.5
