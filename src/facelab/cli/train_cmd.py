"""`facelab train` and `facelab model list|info`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from facelab.cli import train_prompts as prompts
from facelab.cli.common import command, group, state, stop_on_signals
from facelab.cli.train_prompts import HELP
from facelab.cli.ui import out
from facelab.errors import FacelabError
from facelab.lazy import lazy_module
from facelab.train.models import DEFAULT_PRESET, PRESETS

# PyTorch loads only when a command needs it, so `--help` and the other commands start fast
backups = lazy_module("facelab.train.backups")
checkpoint = lazy_module("facelab.train.checkpoint")
trainer = lazy_module("facelab.train.trainer")

model_group = group("Inspect, back up and restore trained models in WORKSPACE/model/.")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def register(app: typer.Typer) -> None:
    command(app, "train")(train_cmd)
    app.add_typer(model_group, name="model")


H = HELP  # the interactive `?` help and the flags' help are one text


def _opt(flag: str, help: str, default: Any = None, **kw: Any) -> Any:
    """An option absent unless given (None), so a resume sees only what the user changed."""
    return typer.Option(default, *flag.split(","), help=help, show_default=default is not None,
                        **kw)


def train_cmd(
    model_name: str = typer.Option(..., "--model-name", help="Name of the model in "
                                   "WORKSPACE/model/; an existing one is resumed."),
    preset: str | None = _opt("--preset", f"New model: {'|'.join(PRESETS)} (default "
                              "quick96). An existing model keeps its own."),
    interactive: bool = typer.Option(False, "--interactive", help="Ask each option with its "
                                     "default (? for help), as DeepFaceLab does; an existing "
                                     "model waits 2 s for Enter to change its options."),
    resolution: int | None = _opt("--resolution", H["resolution"]),
    face_type: str | None = _opt("--face-type", H["face_type"]),
    arch: str | None = _opt("--arch", H["arch"]),
    ae_dims: int | None = _opt("--ae-dims", H["ae_dims"]),
    e_dims: int | None = _opt("--e-dims", H["e_dims"]),
    d_dims: int | None = _opt("--d-dims", H["d_dims"]),
    d_mask_dims: int | None = _opt("--d-mask-dims", H["d_mask_dims"]),
    learn_mask: bool | None = _opt("--learn-mask/--no-learn-mask",
                                   H["learn_mask"]),
    multiscale_decoder: bool | None = _opt("--multiscale-decoder",
                                           H["multiscale_decoder"]),
    conv_aware_init: bool | None = _opt("--conv-aware-init", H["conv_aware_init"]),
    lightweight: bool | None = _opt("--lightweight", H["lightweight"]),
    batch_size: int | None = _opt("--batch-size", H["batch_size"] + " Default: the model's."),
    target_iteration: int | None = _opt("--target-iteration", H["target_iteration"]),
    sort_by_yaw: bool | None = _opt("--sort-by-yaw/--no-sort-by-yaw", H["sort_by_yaw"]),
    random_flip: bool | None = _opt("--random-flip/--no-random-flip", H["random_flip"]),
    src_scale: int | None = _opt("--src-scale", H["src_scale_mod"]),
    pixel_loss: bool | None = _opt("--pixel-loss/--no-pixel-loss", H["pixel_loss"]),
    face_style_power: float | None = _opt("--face-style-power", H["face_style_power"]),
    bg_style_power: float | None = _opt("--bg-style-power", H["bg_style_power"]),
    eyes_mouth_priority: bool | None = _opt("--eyes-mouth-priority/--no-eyes-mouth-priority",
                                            H["eyes_mouth_priority"]),
    remove_gray_border: bool | None = _opt("--remove-gray-border/--no-remove-gray-border",
                                           H["remove_gray_border"]),
    optimizer_mode: int | None = _opt("--optimizer-mode", H["optimizer_mode"]),
    preview_history: bool | None = _opt("--preview-history/--no-preview-history",
                                        H["preview_history"]),
    precision: str = _opt("--precision", "auto, fp32, bf16 or fp16. auto measures which is "
                          "faster on this device (bf16/fp16 only on GPUs that run them well).",
                          "auto"),
    compile: bool = _opt("--compile", "torch.compile the model: a slow first iteration, then "
                         "often faster on GPUs (see docs/BENCHMARKS.md).", False),
    pretrain_faces: Path | None = _opt("--pretrain-faces", "Pretrain on this folder of many "
                                       "people's aligned faces instead of data_src/data_dst, "
                                       "so a model starts from general faces."),
    preview_src: str | None = _opt("--preview-src", "File name in data_src/aligned shown in "
                                   "the preview history column (default: picked evenly)."),
    preview_dst: str | None = _opt("--preview-dst", "File name in data_dst/aligned shown in "
                                   "the preview history column (default: picked evenly)."),
    preview_every: int = _opt("--preview-every", "Write model/NAME_preview.png every N "
                              "iterations (0: never).", 100),
    autosave_minutes: float = _opt("--autosave-minutes", "Save every N minutes.", 15.0),
    backup_every: int = _opt("--backup-every", "Also copy the save to model/NAME_backups/"
                             "<iteration>/ every N iterations (0: never).", 10000),
    keep_backups: int = _opt("--keep-backups", "Keep the newest N periodic backups.", 3),
    device: str = _opt("--device", "auto picks the best GPU PyTorch sees (cuda for NVIDIA "
                       "and AMD, xpu, mps; the one with most free memory), else the CPU; or "
                       "cpu, or cuda:N. With several GPUs one is used (data-parallel comes "
                       "later).", "auto"),
    seed: int = _opt("--seed", "Seed of a new model's weights and of the sample "
                     "augmentation.", 0),
) -> None:
    """Train a model to turn dst faces into src faces, from data_src/aligned and
    data_dst/aligned. Saves every few minutes, on reaching the target and on Ctrl-C; run it
    again with the same name to continue where it stopped. Creation options (resolution,
    face type, arch, dims, masks) are fixed once a model exists; the others may change on
    any run."""
    if autosave_minutes <= 0:
        raise FacelabError("--autosave-minutes must be more than 0.")
    if target_iteration is not None and target_iteration < 0:
        raise FacelabError("--target-iteration must be 0 (unlimited) or more.")
    if backup_every < 0 or keep_backups < 0:
        raise FacelabError("--backup-every and --keep-backups must be 0 or more.")
    if precision not in PRECISIONS:
        raise FacelabError(f"--precision must be {', '.join(PRECISIONS)}, not {precision!r}.")
    st = state()
    st.ws.require()
    flags = {
        "resolution": resolution, "face_type": face_type, "arch": arch, "ae_dims": ae_dims,
        "e_dims": e_dims, "d_dims": d_dims, "d_mask_dims": d_mask_dims,
        "learn_mask": learn_mask, "multiscale_decoder": multiscale_decoder,
        "conv_aware_init": conv_aware_init, "lightweight": lightweight,
        "batch_size": batch_size, "target_iteration": target_iteration,
        "sort_by_yaw": sort_by_yaw, "random_flip": random_flip, "src_scale_mod": src_scale,
        "pixel_loss": pixel_loss, "face_style_power": face_style_power,
        "bg_style_power": bg_style_power, "eyes_mouth_priority": eyes_mouth_priority,
        "remove_gray_border": remove_gray_border, "optimizer_mode": optimizer_mode,
        "preview_history": preview_history,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if interactive:
        given = _ask(st.ws.model_dir, model_name, preset, given)
        preset = given.pop("preset", preset)
    batch = given.pop("batch_size", None)
    target = given.pop("target_iteration", None)
    opts = trainer.TrainOptions(
        model_name=model_name, preset=preset, overrides=given, batch_size=batch,
        target_iteration=target, preview_every=preview_every,
        autosave_minutes=autosave_minutes, backup_every=backup_every,
        keep_backups=keep_backups, device=device, seed=seed, precision=precision,
        compile=compile, pretrain_faces=pretrain_faces, preview_src=preview_src,
        preview_dst=preview_dst,
    )
    with stop_on_signals() as stop:
        rep = trainer.train(st.ws, opts, st.reporter, stop)
    last = rep.losses[-1] if rep.losses else None
    loss = f", last loss src {last[0]:.4f} dst {last[1]:.4f}" if last else ""
    how = "stopped" if rep.stopped else "reached its target" if rep.iteration else "ran"
    out.print(f"Model {rep.model_name!r} {how} at iteration {rep.iteration} "
              f"({rep.iteration - rep.start_iteration} this run, {rep.ms_per_iter:.0f} ms/iter "
              f"on {rep.device}{loss}); saved in {st.ws.model_dir}.")


def _ask(folder: Path, name: str, preset: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """The options asked on the terminal (a new model: all; an existing one: on Enter)."""
    checkpoint.check_name(name)
    doc = trainer.peek(folder, name)
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
        doc = trainer.peek(folder, name) or {}
        st = doc.get("state", {})
        preset = st.get("options", {}).get("preset", "?")
        out.print(f"{name}  {preset}  {doc.get('arch', '?')}  iteration {st.get('iteration', '?')}")


@command(model_group, "info")
def info_cmd(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Show a model's architecture, options, iteration, last losses, files and sizes."""
    folder = state().ws.model_dir
    doc = trainer.peek(folder, name)
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
    doc = trainer.peek(ws.model_dir, name) if checkpoint.exists(ws.model_dir, name) else None
    was = doc["state"].get("iteration") if doc else None
    it = backups.restore(ws.model_dir, name, backup, trash)
    moved = f"; the save it replaced (iteration {was}) is in {trash}" if trash.is_dir() else ""
    out.print(f"Restored model {name!r} to iteration {it} from "
              f"{ws.model_dir / f'{name}_backups' / str(it)}{moved}.")
