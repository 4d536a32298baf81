"""`facelab train` and `facelab model list|info`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

from facelab.cli import train_launch
from facelab.cli import train_prompts as prompts
from facelab.cli.common import State, command, group, state, stop_on_signals
from facelab.cli.options import build, cli_specs, flags, pick, with_flags
from facelab.cli.ui import RichReporter, err, log_every, out
from facelab.errors import FacelabError
from facelab.lazy import lazy_module
from facelab.meshswap.options import FAMILY as MESHSWAP
from facelab.meshswap.options import MeshSwapOptions
from facelab.train.models import DEFAULT_PRESET, ModelOptions
from facelab.train.run_options import Ranks, TrainOptions

# PyTorch loads only when a command needs it, so `--help` and the other commands start fast
backups = lazy_module("facelab.train.backups")
checkpoint = lazy_module("facelab.train.checkpoint")
saved = lazy_module("facelab.train.saved")
trainer = lazy_module("facelab.train.trainer")

model_group = group("Inspect, back up and restore trained models in WORKSPACE/model/.")


def register(app: typer.Typer) -> None:
    command(app, "train")(train_cmd)
    app.add_typer(model_group, name="model")


# meshswap's own flags; the options both families have (--resolution, ...) come from SAE's
_MESHSWAP_ONLY = flags(MeshSwapOptions, unset=True,
                       exclude=tuple(s.name for s in cli_specs(ModelOptions)))


@with_flags(flags(TrainOptions), flags(ModelOptions, unset=True, exclude=("preset",)),
            _MESHSWAP_ONLY)
def train_cmd(
    preset: str | None = typer.Option(None, "--preset", help=prompts.PRESET_HELP),
    interactive: bool = typer.Option(False, "--interactive", help="Ask each option with its "
                                     "default (? for help), as DeepFaceLab does; an existing "
                                     "model waits 2 s for Enter to change its options."),
    **given: Any,
) -> None:
    """Train a model to turn dst faces into src faces, from data_src/aligned and
    data_dst/aligned. Saves every few minutes, on reaching the target and on Ctrl-C or
    SIGTERM (`kill -USR1 PID` saves now, `kill -USR2 PID` writes the preview now, and it
    goes on); run it again with the same name to continue where it stopped. Creation options
    (resolution, face type, arch, dims, masks) are fixed once a model exists; the others
    (and --lr) may change on any run. One run per model at a time; a run whose loss
    collapses (NaN, or far above its recent level) goes back to its last save with a lower
    learning rate. `--preset meshswap` trains the other model family (src's own faces,
    retrieved, warped and refined)."""
    # only the model options given (either family's): a resume keeps the rest
    model = {**pick(ModelOptions, given), **pick(MeshSwapOptions, given)}
    if preset is not None:
        model["preset"] = preset
    opts = _options(given, model)  # every flag checked before anything is asked
    st = state()
    st.ws.require()
    ranks = Ranks.from_env()  # under torchrun: one rank of a data-parallel run
    if interactive and ranks.world > 1:
        raise FacelabError("--interactive asks before the ranks start, and each torchrun "
                           "rank would ask alone: use `facelab train --nproc N "
                           "--interactive` instead.")
    if interactive:
        preset = model.pop("preset", None)
        model = _ask(st.ws.model_dir, opts.model_name, preset, model)
        model.setdefault("preset", preset)
        opts = _options(given, model)
    launching = opts.nproc > 1 and ranks.world == 1
    reporter = _reporter(st) if ranks.lead else RichReporter(quiet=True)
    if not launching:  # something at once: importing PyTorch and reading faces take seconds
        reporter.status(f"Loading PyTorch for model {opts.model_name!r} …")
    try:
        # Ctrl-C and SIGTERM alike: save, then stop; SIGUSR1 save now, SIGUSR2 preview now
        with stop_on_signals(requests=True) as stop:
            rep = (train_launch.launch(st.ws.root, opts, stop, quiet=st.quiet,
                                       verbose=st.verbose) if launching
                   else trainer.train(st.ws, opts, reporter, stop))
    finally:
        reporter.end()
    if not ranks.lead:
        return
    last = rep.losses[-1] if rep.losses else None
    meshswap = rep.family == MESHSWAP
    loss = "" if last is None else (f", last refiner loss {last[0]:.4f}" if meshswap
                                    else f", last loss src {last[0]:.4f} dst {last[1]:.4f}")
    if meshswap and not rep.options.refiner:
        out.print(f"Model {rep.model_name!r} (meshswap without a refiner) is built: its "
                  f"index is the whole training; saved in {st.ws.model_dir}.")
        return
    how = "stopped" if rep.stopped else "reached its target" if rep.iteration else "ran"
    where = rep.device if rep.ranks == 1 else f"{rep.ranks} ranks ({rep.device} on rank 0)"
    out.print(f"Model {rep.model_name!r} {how} at iteration {rep.iteration} "
              f"({rep.iteration - rep.start_iteration} this run, {rep.ms_per_iter:.0f} ms/iter "
              f"on {where}{loss}); saved in {st.ws.model_dir}.")


class _LoggedStatus(RichReporter):
    """Piped with FACELAB_PROGRESS_EVERY given (a studio job): the training status line
    (iteration, ms/iter, losses, ETA) logged every that many seconds instead of every
    STATUS_EVERY, so a page following the log shows the speed and losses as they go."""

    def __init__(self, every: float, quiet: bool, verbose: bool) -> None:
        super().__init__(quiet=quiet, verbose=verbose)
        self.every = every
        self._at: float | None = None

    def status(self, message: str, log: bool = False) -> None:
        if not (message and log) or self.quiet or err.is_terminal:
            super().status(message, log)
            return
        now = time.monotonic()
        if self._at is None or now - self._at >= self.every:
            self._at = now
            err.print(message, markup=False, soft_wrap=True)


def _reporter(st: State) -> RichReporter:
    if "FACELAB_PROGRESS_EVERY" in os.environ and not err.is_terminal:
        return _LoggedStatus(log_every(), st.quiet, st.verbose)
    return st.reporter


def _options(given: dict[str, Any], model: dict[str, Any]) -> TrainOptions:
    """The run's options: its own flags, and the model options given (None: not given)."""
    rest = dict(model)
    return build(TrainOptions, given, preset=rest.pop("preset", None),
                 batch_size=rest.pop("batch_size", None),
                 target_iteration=rest.pop("target_iteration", None), overrides=rest)


def _ask(folder: Path, name: str, preset: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The options asked on the terminal (a new model: all; an existing one: on Enter)."""
    checkpoint.check_name(name)
    doc = saved.peek(folder, name)
    if doc is None:
        return prompts.new_model_answers(preset or DEFAULT_PRESET, given, prompts.read_line,
                                         prompts.say)
    prompts.say(f"Model {name!r} exists (iteration {doc['state'].get('iteration')}).")
    prompts.say("Press Enter within 2 seconds to change the model's options...")
    if not prompts.wait_for_enter(2.0):
        return given
    return prompts.resume_answers(doc["state"].get("options") or {}, given,
                                  prompts.read_line, prompts.say)


def _files(folder: Path, name: str) -> list[Path]:
    own = [p for p in folder.glob(f"{name}_*") if p.is_file()]
    backups = folder / f"{name}_backups"
    if backups.is_dir():
        own += [p for p in backups.rglob("*") if p.is_file()]
    return sorted(own)


@command(model_group, "list")
def list_cmd() -> None:
    """List the models of the workspace with their preset and iteration."""
    folder = state().ws.model_dir
    names = checkpoint.list_models(folder)
    if not names:
        out.print(f"No models in {folder}.")
    for name in names:
        doc = saved.peek(folder, name) or {}
        st = doc.get("state", {})
        preset = st.get("options", {}).get("preset", "?")
        out.print(f"{name}  {preset}  {doc.get('arch', '?')}  iteration {st.get('iteration', '?')}")


@command(model_group, "info")
def info_cmd(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Show a model's architecture, options, iteration, last losses, files and sizes."""
    folder = state().ws.model_dir
    doc = saved.peek(folder, name)
    if doc is None:
        raise FacelabError(f"There is no model named {name!r} in {folder}.")
    st = doc["state"]
    fixed_options = doc.get("fixed_options") or {}
    meshswap = st.get("family") == MESHSWAP
    family = " (meshswap family)" if meshswap else ""
    out.print(f"Model {name!r}: {doc.get('arch')}{family} at iteration {st.get('iteration')}")
    for key, value in sorted(st.get("options", {}).items()):
        fixed = " (fixed)" if key in fixed_options else ""
        out.print(f"  {key} = {value!r}{fixed}")
    if meshswap:
        out.print(f"Index: {fixed_options.get('faces', '?')} src faces, "
                  f"{fixed_options.get('points', '?')} mesh points each")
    history = st.get("history") or []
    if history:
        it, s, d = history[-1]
        losses = f"refiner {s:.4f}" if meshswap else f"src {s:.4f}, dst {d:.4f}"
        out.print(f"Last losses (iteration {it}): {losses}")
    elif meshswap and not st.get("options", {}).get("refiner", True):
        out.print("No refiner: the index is the whole model (nothing to train).")
    found = backups.list_backups(folder, name)
    out.print(f"Backups: {len(found) or 'none'}" + (" (iteration, made)" if found else ""))
    for it, path in found:
        kept = "  (made by `model backup`)" if backups.is_kept(path) else ""
        out.print(f"  {it}  {_made(path, name)}{kept}")
    for p in _files(folder, name):
        out.print(f"  {p.relative_to(folder)}  {p.stat().st_size / 1e6:.2f} MB")


def _made(path: Path, name: str) -> str:
    """When a backup was written (its manifest's time), in local time."""
    try:
        stamp = (path / f"{name}_manifest.json").stat().st_mtime
    except OSError:
        return "(no manifest)"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


@command(model_group, "backup")
def backup_cmd(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Copy the model's current save to model/NAME_backups/<iteration>/. Periodic backups
    keep only the newest few; this one is never pruned."""
    folder = state().ws.model_dir
    path = backups.backup(folder, name)
    out.print(f"Backed up model {name!r} at iteration {path.name} to {path}.")


@command(model_group, "restore")
def restore_cmd(
    name: str = typer.Argument(..., help="Model name."),
    backup: str = typer.Argument(..., help="The backup: its iteration as `model info` lists "
                                 "it (or its folder name)."),
) -> None:
    """Make a backup the model's current save. The save it replaces goes to the workspace
    trash (WORKSPACE/.trash/<time>/model/), never deleted."""
    ws = state().ws
    ws.require()
    trash = ws.new_trash_dir() / ws.model_dir.name
    doc = saved.peek(ws.model_dir, name) if checkpoint.exists(ws.model_dir, name) else None
    was = doc["state"].get("iteration") if doc else None
    it = backups.restore(ws.model_dir, name, backup, trash)
    moved = f"; the save it replaced (iteration {was}) is in {trash}" if trash.is_dir() else ""
    out.print(f"Restored model {name!r} to iteration {it} from "
              f"{ws.model_dir / f'{name}_backups' / str(it)}{moved}.")
