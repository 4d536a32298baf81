"""`facelab train` and `facelab model list|info`."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import typer

from facelab.cli.common import command, group, state
from facelab.cli.ui import out
from facelab.errors import FacelabError
from facelab.train import checkpoint
from facelab.train.models import PRESETS
from facelab.train.trainer import TrainOptions, peek, train

model_group = group("Inspect trained models in WORKSPACE/model/.")


def register(app: typer.Typer) -> None:
    command(app, "train")(train_cmd)
    app.add_typer(model_group, name="model")


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C / SIGTERM set the event, so the trainer saves and returns instead of dying."""
    stop = threading.Event()
    handler = lambda *_: stop.set()  # noqa: E731
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train_cmd(
    model_name: str = typer.Option(..., "--model-name", help="Name of the model in "
                                   "WORKSPACE/model/; an existing one is resumed."),
    preset: str | None = typer.Option(None, "--preset", help="New model: "
                                      f"{'|'.join(PRESETS)} (default quick96). An existing "
                                      "model keeps its own."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Faces per side per "
                                          "iteration (default: the model's).",
                                          show_default=False),
    target_iteration: int = typer.Option(0, "--target-iteration", help="Stop at this "
                                         "iteration (0: until Ctrl-C)."),
    preview_every: int = typer.Option(100, "--preview-every", help="Write "
                                      "model/NAME_preview.png every N iterations (0: never)."),
    autosave_minutes: float = typer.Option(15.0, "--autosave-minutes",
                                           help="Save every N minutes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, "--seed", help="Seed of a new model's weights and of the "
                             "sample augmentation."),
) -> None:
    """Train a model to turn dst faces into src faces, from data_src/aligned and
    data_dst/aligned. Saves every few minutes, on reaching the target and on Ctrl-C; run it
    again with the same name to continue where it stopped."""
    if autosave_minutes <= 0:
        raise FacelabError("--autosave-minutes must be more than 0.")
    if target_iteration < 0:
        raise FacelabError("--target-iteration must be 0 (unlimited) or more.")
    st = state()
    st.ws.require()
    opts = TrainOptions(model_name=model_name, preset=preset, batch_size=batch_size,
                        target_iteration=target_iteration, preview_every=preview_every,
                        autosave_minutes=autosave_minutes, device=device, seed=seed)
    with _stop_on_signals() as stop:
        rep = train(st.ws, opts, st.reporter, stop)
    last = rep.losses[-1] if rep.losses else None
    loss = f", last loss src {last[0]:.4f} dst {last[1]:.4f}" if last else ""
    how = "stopped" if rep.stopped else "reached its target" if rep.iteration else "ran"
    out.print(f"Model {rep.model_name!r} {how} at iteration {rep.iteration} "
              f"({rep.iteration - rep.start_iteration} this run, {rep.ms_per_iter:.0f} ms/iter "
              f"on {rep.device}{loss}); saved in {st.ws.model_dir}.")


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
        doc = peek(folder, name) or {}
        st = doc.get("state", {})
        preset = st.get("options", {}).get("preset", "?")
        out.print(f"{name}  {preset}  {doc.get('arch', '?')}  iteration {st.get('iteration', '?')}")


@command(model_group, "info")
def info_cmd(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Show a model's architecture, options, iteration, last losses, files and sizes."""
    folder = state().ws.model_dir
    doc = peek(folder, name)
    if doc is None:
        raise FacelabError(f"There is no model named {name!r} in {folder}.")
    st = doc["state"]
    out.print(f"Model {name!r}: {doc.get('arch')} at iteration {st.get('iteration')}")
    for key, value in sorted(st.get("options", {}).items()):
        fixed = " (fixed)" if key in (doc.get("fixed_options") or {}) else ""
        out.print(f"  {key} = {value!r}{fixed}")
    history = st.get("history") or []
    if history:
        it, s, d = history[-1]
        out.print(f"Last losses (iteration {it}): src {s:.4f}, dst {d:.4f}")
    for p in _files(folder, name):
        out.print(f"  {p.relative_to(folder)}  {p.stat().st_size / 1e6:.2f} MB")
