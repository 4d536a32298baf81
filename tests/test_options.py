"""Options declared once: a field added to an options dataclass is a CLI flag with its range
enforced; every real options class refuses each out-of-range value itself (so library callers
get the CLI's checks); the moved CLI checks live in the library; command summaries are one
paragraph each."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from facelab.cli.app import app as facelab_app
from facelab.cli.common import command
from facelab.cli.options import build, cli_specs, flags, with_flags
from facelab.errors import FacelabError
from facelab.faces.extract import FaceExtractOptions
from facelab.faces.extractor import ExtractorOptions
from facelab.merge.options import MergeOptions
from facelab.options import OptionSpec, option, specs
from facelab.swap import SwapOptions
from facelab.train.models import FIXED_OPTIONS, PRESETS, ModelOptions
from facelab.train.run_options import TrainOptions
from tests.conftest import assert_one_line_error, run_facelab

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}


@dataclass(frozen=True)
class SharperMerge(MergeOptions):
    """MergeOptions with one option more: the only edit adding an option takes."""

    sharpen: int = option(0, range=(0, 10), help="Sharpen the merged face.")


def _app() -> typer.Typer:
    app = typer.Typer()

    @with_flags(flags(SharperMerge))
    def merge(**given: Any) -> None:
        opts = build(SharperMerge, given)
        typer.echo(f"sharpen={opts.sharpen} erode={opts.erode}")

    command(app, "merge")(merge)
    command(app, "other")(lambda: None)  # two commands, so `merge` is a sub-command
    return app


def test_a_field_added_is_a_flag_with_its_range_enforced() -> None:
    app = _app()
    res = runner.invoke(app, ["merge", "--help"], env=WIDE)
    assert res.exit_code == 0
    assert "--sharpen" in res.stdout and "A whole number from 0 to 10." in res.stdout
    assert "--erode" in res.stdout  # the inherited ones are there too

    res = runner.invoke(app, ["merge", "--sharpen", "3", "--erode", "-5"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "sharpen=3 erode=-5"

    res = runner.invoke(app, ["merge", "--sharpen", "11"], env=WIDE)
    assert res.exit_code == 1 and res.stdout == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == ["error: --sharpen must be a whole number from 0 to 10, not 11."]


@pytest.mark.parametrize("command_line, classes", [
    (["merge"], [MergeOptions]),
    (["swap"], [SwapOptions, MergeOptions]),
    (["extract"], [FaceExtractOptions, ExtractorOptions]),
    (["train"], [TrainOptions, ModelOptions]),
])
def test_real_commands_take_every_declared_flag(command_line: list[str],
                                                classes: list[type]) -> None:
    res = runner.invoke(facelab_app, [*command_line, "--help"], env=WIDE)
    assert res.exit_code == 0, res.output
    for cls in classes:
        for s in cli_specs(cls):
            assert s.flag in res.stdout, (cls.__name__, s.flag)


# --- every real options class checks itself --------------------------------------------------

BASES: dict[type, Any] = {
    ModelOptions: ModelOptions(),
    MergeOptions: MergeOptions(),
    ExtractorOptions: ExtractorOptions(),
    FaceExtractOptions: FaceExtractOptions(),
    TrainOptions: TrainOptions(model_name="m"),
    SwapOptions: SwapOptions(src=Path("a.mp4"), dst=Path("b.mp4"), output=Path("c.mp4")),
}


def _bad_values(s: OptionSpec) -> list[Any]:
    """Values just outside what `s` declares."""
    words = s.allowed()
    if words is not None:
        return ["no-such-choice"]
    lo, hi = s.range or (None, None)
    step = s.step or 1
    bad: list[Any] = ["7"]  # a string where a number belongs
    if hi is not None:
        bad.append(hi + step)
    if lo is not None:
        bad.append(lo - step)
    if s.step and lo is not None:
        bad.append(lo + s.step // 2)
    if s.above is not None:
        bad.append(s.above)
    return bad


CASES = [(cls, s, v) for cls in BASES for s in specs(cls)
         if s.allowed() is not None or s.range or s.above is not None for v in _bad_values(s)]


def test_every_class_is_covered_and_accepts_its_defaults() -> None:
    assert {cls for cls, _, _ in CASES} == set(BASES)
    for base in BASES.values():
        assert base.validate() is base


@pytest.mark.parametrize("cls, spec, value", CASES,
                         ids=[f"{c.__name__}.{s.name}={v!r}" for c, s, v in CASES])
def test_out_of_range_is_refused_naming_the_flag(cls: type, spec: OptionSpec,
                                                 value: Any) -> None:
    with pytest.raises(FacelabError) as e:
        replace(BASES[cls], **{spec.name: value}).validate()
    msg = str(e.value)
    assert msg.startswith(spec.flag) and msg.endswith(".") and "\n" not in msg, msg


def test_fixed_options_come_from_the_declarations() -> None:
    assert {s.name for s in specs(ModelOptions) if s.fixed} == FIXED_OPTIONS
    assert {"preset", "resolution", "arch", "ae_dims", "learn_mask"} <= FIXED_OPTIONS
    assert "batch_size" not in FIXED_OPTIONS
    assert dataclasses.fields(ModelOptions)[0].name == "preset"
    from facelab.options import spec

    assert spec(ModelOptions, "preset").allowed() == tuple(PRESETS)


def test_train_lr_default_is_the_familys() -> None:
    """None: each family's own rate (SAE: train.step.LR, DeepFaceLab's; meshswap: its
    refiner's), as the trainers apply it."""
    from facelab.meshswap.train import LR as REFINER_LR
    from facelab.train.step import LR

    assert TrainOptions(model_name="m").lr is None
    assert LR == 5e-5 and REFINER_LR != LR


# --- the checks the CLI alone made, now the library's ----------------------------------------


def test_moved_checks_are_in_the_library() -> None:
    with pytest.raises(FacelabError, match=r"^--size must be a whole number from 16 to 4096"):
        FaceExtractOptions(extractor=ExtractorOptions(size=8))
    with pytest.raises(FacelabError, match=r"^--jpeg-quality must be a whole number from 1 to"):
        FaceExtractOptions(jpeg_quality=0)
    with pytest.raises(FacelabError, match=r"^--autosave-minutes must be more than 0"):
        TrainOptions(model_name="m", autosave_minutes=0)
    with pytest.raises(FacelabError, match=r"^--iterations must be a whole number, 1 or more"):
        replace(BASES[SwapOptions], iterations=0)
    with pytest.raises(FacelabError, match=r"^--target-iteration must be"):
        TrainOptions(model_name="m", target_iteration=-1)
    with pytest.raises(FacelabError, match=r"^Unknown model option"):
        TrainOptions(model_name="m", overrides={"bogus": 1})
    with pytest.raises(FacelabError, match="not both"):
        replace(BASES[SwapOptions], iterations=5, minutes=1.0)
    with pytest.raises(FacelabError, match="must end in"):
        replace(BASES[SwapOptions], output=Path("c.txt"))


def test_the_cli_reports_the_librarys_sentence(tmp_path: Path) -> None:
    ws = ("-w", tmp_path / "ws")
    assert_one_line_error(run_facelab(*ws, "extract", "src", "--size", "8"),
                          "--size must be a whole number from 16 to 4096, not 8.")
    assert_one_line_error(run_facelab(*ws, "merge", "--model-name", "m", "--erode", "300"),
                          "--erode must be a whole number from -200 to 200, not 300.")
    assert_one_line_error(run_facelab(*ws, "swap", "a.mp4", "b.mp4", "-o", "c.mp4",
                                      "--iterations", "0"), "--iterations must be")
    assert_one_line_error(run_facelab(*ws, "demo", "--minutes", "0"), "--minutes must be")
    assert not (tmp_path / "ws").exists()  # refused before anything was written


# --- `facelab --help` ------------------------------------------------------------------------


def _commands(group: Any) -> list[Any]:
    found = []
    for cmd in group.commands.values():
        found += _commands(cmd) if hasattr(cmd, "commands") else [cmd]
    return found


def test_command_summaries_are_clean_paragraphs() -> None:
    cli = typer.main.get_command(facelab_app)
    commands = _commands(cli)
    assert len(commands) > 20
    for cmd in commands:
        for paragraph in (cmd.help or "").split("\n\n"):
            assert paragraph and "\n" not in paragraph, (cmd.name, cmd.help)
    res = runner.invoke(facelab_app, ["--help"], env=WIDE)
    assert "merged frame is marked as synthetic" in " ".join(res.stdout.split())
