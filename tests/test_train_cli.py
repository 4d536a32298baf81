"""`facelab train` options and `--interactive`: answers piped into the real command end up in
the saved model; `?` helps, bad answers re-ask; a resume asks only on Enter; fixed options
stay fixed."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from facelab.cli import train_prompts as prompts
from facelab.train.models import ModelOptions, preset
from facelab.train.saved import peek
from facelab.workspace import Workspace
from tests.conftest import assert_one_line_error, copy_workspace, run_facelab, run_in_process

TINY_FLAGS = ("--preset", "sae", "--resolution", "64", "--ae-dims", "32", "--e-dims", "8",
              "--d-dims", "8", "--d-mask-dims", "4", "--batch-size", "2",
              "--target-iteration", "2")
RUN_FLAGS = ("--preview-every", "0", "--device", "cpu", "--backup-every", "0")


def _scripted(lines: list[str]) -> tuple[prompts.Ask, list[str], list[str]]:
    """An `Ask` answering `lines` in turn (then end of input), recording prompts and text."""
    feed, asked, said = iter(lines), [], []

    def ask_line(prompt: str) -> str | None:
        asked.append(prompt)
        return next(feed, None)

    return ask_line, asked, said


# --- the prompting core, without a process --------------------------------------------------


def test_ask_defaults_help_and_reask() -> None:
    ask_line, asked, said = _scripted(["", "?", "70", "abc", "96", "", "df-x", "df-ud"])
    specs = [prompts.PRESET, *prompts.CREATION[:3]]
    answers, current = prompts.ask(specs, preset("sae"), ask_line, said.append)
    assert answers == {"preset": "sae", "resolution": 96, "face_type": "full", "arch": "df-ud"}
    assert current.arch == "df-ud" and current.resolution == 96
    assert asked[1] == "Resolution [128] (? for help): " and len(asked) == 8
    assert said[0] == prompts.HELP["resolution"]
    assert "64–256 in steps of 16" in said[1] and "whole number" in said[2]
    assert "df or liae" in said[3]


def test_new_model_asks_by_preset_and_flags_are_defaults() -> None:
    ask_line, asked, _ = _scripted(["h64", "y"])  # then end of input: defaults
    got = prompts.new_model_answers("quick96", {"batch_size": 3}, ask_line, lambda _: None)
    assert got["preset"] == "h64" and got["lightweight"] is True and got["batch_size"] == 3
    assert not any("Resolution" in a for a in asked)  # h64's creation options are pinned
    assert len(asked) == 2 + len(prompts.CHANGEABLE)
    built = preset(got.pop("preset"), **got)
    assert built.lightweight and built.ae_dims == 512  # H64 halved

    ask_line, asked, _ = _scripted([""])
    got = prompts.new_model_answers("sae", {"ae_dims": 32}, ask_line, lambda _: None)
    assert got["ae_dims"] == 32 and len(asked) == 1 + 10 + len(prompts.CHANGEABLE)


def test_resume_asks_only_changeable_with_saved_defaults() -> None:
    saved = ModelOptions(batch_size=5, pixel_loss=True).__dict__
    ask_line, asked, _ = _scripted(["", "100", "n"])
    got = prompts.resume_answers(saved, {"sort_by_yaw": True}, ask_line, lambda _: None)
    assert got["target_iteration"] == 100 and got["random_flip"] is False
    assert got["batch_size"] == 5 and got["pixel_loss"] is True and got["sort_by_yaw"] is True
    assert {a.split(" [")[0] for a in asked} == {s.label for s in prompts.CHANGEABLE}
    assert "Batch size [5] (? for help): " in asked


def test_wait_for_enter_on_pipes() -> None:
    r, w = os.pipe()
    with os.fdopen(r) as stream, os.fdopen(w, "w") as writer:
        t0 = time.monotonic()
        assert not prompts.wait_for_enter(0.3, stream)  # nothing typed: waits, then no
        assert 0.25 < time.monotonic() - t0 < 2
        threading.Timer(0.1, lambda: (writer.write("\n"), writer.flush())).start()
        assert prompts.wait_for_enter(5, stream)
        writer.close()
        t0 = time.monotonic()
        assert not prompts.wait_for_enter(5, stream)  # end of input: at once
        assert time.monotonic() - t0 < 1


# --- the real command on real faces ---------------------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory, aligned_faces: Path) -> Workspace:
    return Workspace(copy_workspace(aligned_faces, tmp_path_factory.mktemp("cli") / "ws"))


def _train(ws: Workspace, *args: str, input: str | None = "") -> object:
    return run_facelab("-w", ws.root, "train", "--model-name", "cli", *args, *RUN_FLAGS,
                       input=input)


def _train_here(ws: Workspace, *args: str, input: str | None = "") -> object:
    """`_train` by the same CLI in this process: for runs refused before any prompt or
    training, where a new process would only add its start-up."""
    return run_in_process("-w", ws.root, "train", "--model-name", "cli", *args, *RUN_FLAGS,
                          input=input)


def _options(ws: Workspace) -> dict:
    doc = peek(ws.model_dir, "cli")
    assert doc is not None
    return doc["state"] | doc["state"]["options"]


@pytest.mark.slow
def test_interactive_new_then_resume_then_fixed_option(ws: Workspace) -> None:
    answers = [
        "",  # model: sae (from --preset)
        "?", "65", "64",  # resolution: help, a bad answer re-asks, then 64
        "", "df", "", "", "", "",  # face type, arch df, dims from the flags
        "n", "", "",  # learn mask off; multiscale, CA weights
        "", "", "n",  # preview history, target 2 (flag), random flip off
    ]  # the rest: end of input keeps the defaults
    res = _train(ws, *TINY_FLAGS, "--interactive", input="\n".join(answers) + "\n")
    assert res.rc == 0, res.err
    assert prompts.HELP["resolution"] in res.out
    assert res.out.count("Resolution [64]") == 3 and "64–256 in steps of 16" in res.out
    assert "Optimizer mode [1]" in res.out  # asked, and kept at end of input
    saved = _options(ws)
    assert (saved["iteration"], saved["resolution"], saved["arch"], saved["ae_dims"]) == (
        2, 64, "df", 32)
    assert saved["learn_mask"] is False and saved["random_flip"] is False
    assert saved["preset"] == "sae" and saved["batch_size"] == 2

    # resume: Enter within 2 s, then the changeable options (a flag is a default too)
    res = _train(ws, "--interactive", "--batch-size", "3", input="\n\n4\ny\n")
    assert res.rc == 0, res.err
    assert "Press Enter within 2 seconds" in res.out and "Resolution" not in res.out
    assert "Batch size [3]" in res.out
    saved = _options(ws)
    assert (saved["iteration"], saved["random_flip"], saved["batch_size"]) == (4, True, 3)

    # resume at end of input: no options asked, no 2 s wait, trains on
    t0 = time.monotonic()
    res = _train(ws, "--interactive", "--target-iteration", "5", input="")
    assert res.rc == 0, res.err
    assert "Press Enter" in res.out and "Batch size [" not in res.out
    assert "reached its target at iteration 5" in res.out, res.out
    assert _options(ws)["iteration"] == 5 and time.monotonic() - t0 < 120

    # without --interactive nothing is asked, even with input waiting
    res = _train_here(ws, "--ae-dims", "64", "--target-iteration", "6", input="\n\n\n")
    assert_one_line_error(res, "ae_dims", "cannot change")
    assert "Press Enter" not in res.out and "[" not in res.out
    res = _train_here(ws, "--face-type", "half", "--pixel-loss", "--target-iteration", "6",
                      input=None)
    assert_one_line_error(res, "face_type")
    assert _options(ws)["iteration"] == 5


@pytest.mark.slow
def test_bad_flag_values_are_one_line(tmp_path: Path) -> None:
    Workspace(tmp_path / "ws").init()
    args = ("-w", tmp_path / "ws", "train", "--model-name", "x", "--device", "cpu")
    assert_one_line_error(run_facelab(*args, "--precision", "fp8"), "precision")
    assert_one_line_error(run_facelab(*args, "--target-iteration", "-1"), "target")
