"""Help that reads at 80 columns, in a terminal and through a pipe (issue 15, item 13), and
the small CLI points found with it: README's `--force` claim, `sort` without `--by`,
`import-dfl`'s face types, `workspace info`'s title, `eval` after `swap -o`.

The help runs are the real CLI in a subprocess with COLUMNS=80 and stdout a pipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from facelab.cli.options import cli_specs
from facelab.merge.options import MergeOptions
from facelab.train.models import ModelOptions
from facelab.train.run_options import TrainOptions
from tests.conftest import ROOT, assert_one_line_error, run_facelab

PYTHON_TYPES = re.compile(r"<(bool|int|float|str|path|Path|int range|float range|list\[.*?\])>")


def help_at_80(*command: str) -> str:
    """`facelab COMMAND --help` as a user reads it piped into `less` at 80 columns."""
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("TERMINAL_WIDTH", None)
    proc = subprocess.run([sys.executable, "-m", "facelab", *command, "--help"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command, classes, sentence", [
    (["train"], [TrainOptions, ModelOptions],
     "Supervise the decoder at several scales: can sharpen faster, costs some speed."),
    (["merge"], [MergeOptions], "Merge every frame again (those of --frames when given), also "
                                "those already made with this model and these options."),
])
def test_option_help_reads_at_80_columns(command: list[str], classes: list[type],
                                         sentence: str) -> None:
    text = help_at_80(*command)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text and "..." not in text  # nothing cut
    assert not PYTHON_TYPES.search(text), PYTHON_TYPES.search(text)
    assert sentence in flat(text)
    for cls in classes:
        for s in cli_specs(cls, exclude=("preset",) if cls is ModelOptions else ()):
            # the whole flag on one line, and its description in one piece: no word broken
            # at a hyphen or inside a path, nothing squeezed away
            assert any(re.search(rf"(^|\s){re.escape(s.flag)}(\s|$)", line) for line in lines), \
                s.flag
            assert flat(s.describe()) in flat(text), s.flag


def test_command_summaries_end_at_a_sentence_and_keep_paths_whole() -> None:
    text = help_at_80()
    section = text.split("\nCommands:\n", 1)[1]
    entries: list[str] = []
    for line in section.splitlines():
        if re.match(r"^  \S", line):
            entries.append(line.strip())
        elif line.strip() and entries:
            entries[-1] += " " + line.strip()
    assert len(entries) >= 10
    for entry in entries:
        summary = entry.split(None, 1)[1]
        assert summary.endswith((".", ".)")) and not summary.endswith("..."), entry
    # a path in a summary is never split over two lines (copy and grep keep working)
    for path in ("data_<side>/aligned/<frame>_<i>.jpg", "data_dst/merged/<frame>.png",
                 "WORKSPACE/model/."):
        assert any(path in line for line in text.splitlines()), path


def test_readme_force_claim_holds_for_every_stage_it_names() -> None:
    import typer

    from facelab.cli.app import app

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    claim = flat(readme).split("`--force` redoes it (", 1)[1].split(")", 1)[0]
    stages = re.findall(r"`([a-z ]+)`", claim)
    assert "merge" in stages and len(stages) >= 5
    for stage in stages:
        cmd = typer.main.get_command(app)
        for word in stage.split():
            cmd = cmd.commands[word]  # type: ignore[attr-defined]
        assert any("--force" in p.opts for p in cmd.params), stage


def test_sort_without_by_lists_the_methods(tmp_path: Path) -> None:
    from facelab.faceset.methods import METHODS

    res = run_facelab("-w", tmp_path / "ws", "sort", "src", timeout=60)
    assert_one_line_error(res, "--by")
    listed = {line.split()[0] for line in res.out.splitlines()[1:] if line.strip()}
    assert listed == set(METHODS)
    assert "near-duplicates dropped" in res.out  # `final`'s whole first paragraph


def test_import_dfl_reads_every_face_type_its_refusal_lists(tmp_path: Path) -> None:
    import pickle

    from facelab.errors import FacelabError
    from facelab.faces.dfl import read_dfl
    from tests.test_dfl import jpeg_with_app15
    from tests.test_import_dfl import dfl_meta

    def face(face_type: str) -> Path:
        path = tmp_path / f"{face_type}.jpg"
        meta = dfl_meta("00000.png") | {"face_type": face_type}
        path.write_bytes(jpeg_with_app15(pickle.dumps(meta, protocol=4)))
        return path

    with pytest.raises(FacelabError, match="mark_only") as refused:
        read_dfl(face("mark_only"))
    readable = re.search(r"reads \((.*)\)", str(refused.value)).group(1)
    names = [n.strip() for n in readable.replace("or facelab's", ",").split(",") if n.strip()]
    for name in names:  # it refused 'full' while listing it as readable
        assert read_dfl(face(name)).face_type in ("half", "mid-full", "full", "whole-face",
                                                  "head"), name
    assert "full" in names and "full_face" in names
    assert read_dfl(face("full")).face_type == "full"


def test_workspace_info_names_the_folder_once(tmp_path: Path) -> None:
    from facelab.workspace import Workspace

    Workspace(tmp_path / "workspace").init()
    res = run_facelab("workspace", "info", cwd=tmp_path, timeout=60)
    assert res.rc == 0, res.err
    assert "workspace workspace" not in res.out.lower()
    assert f"Workspace {tmp_path.resolve() / 'workspace'}" in res.out


def test_eval_finds_the_output_swap_recorded(tmp_path: Path) -> None:
    """`swap -o OUT` writes the result outside the workspace and records it in swap.json;
    `eval -w W` takes the newest result, that one, not only result.*."""
    from facelab.eval.run import EvalInputs, resolve, workspace_result
    from facelab.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.init()
    (ws.root / "data_dst.mp4").write_bytes(b"dst")
    old = ws.root / "result.mp4"
    old.write_bytes(b"an older result")
    os.utime(old, (1_000_000, 1_000_000))
    out = tmp_path / "elsewhere" / "out.mp4"
    out.parent.mkdir()
    out.write_bytes(b"the swap's result")
    (ws.root / "swap.json").write_text(json.dumps({"train_seconds": 1.0, "output": str(out)}))
    assert workspace_result(ws) == out
    assert resolve(ws, EvalInputs()).result == out
    os.utime(old)  # assembled by hand after the swap: now the newest
    assert workspace_result(ws) == old


def test_merge_force_makes_every_frame_again(tmp_path: Path) -> None:
    """`merge --force` (README: every stage takes it; merge answered "No such option"):
    frames already made with this model and these options are made again."""
    from facelab.merge.merger import merge
    from facelab.merge.options import MergeOptions
    from facelab.progress import NullReporter
    from tests.test_merge_resume import tiny_merge_workspace

    ws = tiny_merge_workspace(tmp_path / "ws", frames=2)
    # done: a plain rerun would merge 0 frames
    merge(ws, "m", MergeOptions(), NullReporter(), workers=1, precision="fp32")
    res = run_facelab("-w", ws.root, "merge", "--model-name", "m", "--precision", "fp32",
                      "--force", timeout=120)
    assert res.rc == 0 and "Merged 2 frame(s)" in res.out, res
