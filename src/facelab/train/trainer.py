"""The training loop: build or resume a model, step it on src/dst batches, save safely.

The library never touches signals or prompts: a caller (the CLI) sets `stop` on Ctrl-C or
SIGTERM and the loop saves and returns at the end of the current iteration. One step
(losses, precision, optimizer) lives in step.py; where and in which precision in device.py.

Pretraining (`pretrain_faces`) trains both sides on one folder of many people's faces, with
the seed's forced settings (no warp, flips, no style, uniform yaw). The first run without it
starts the pair from iteration 0 with fresh inter layers and optimizer, keeping the encoder
and decoders, as the seed does; the pretrained save is kept as a backup.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facelab.errors import FacelabError
from facelab.progress import Reporter
from facelab.train import checkpoint
from facelab.train.data import Faceset, SampleOptions, make_loader
from facelab.train.device import (
    choose_precision,
    describe,
    is_out_of_memory,
    out_of_memory_message,
    resolve_device,
)
from facelab.train.models import (
    DEFAULT_PRESET,
    FIXED_OPTIONS,
    ModelOptions,
    build_model,
    preset,
)
from facelab.train.preview import fixed_faces, write_history, write_preview
from facelab.train.step import LR, TrainStep
from facelab.workspace import Workspace

HISTORY_LIMIT = 2000  # logged loss points kept in the save (for the plot and `model info`)
PREVIEW_FACES = 4

LogFn = Callable[[int, float, float, float], None]  # iteration, ms/iter, src loss, dst loss


@dataclass
class TrainOptions:
    """One training run. `preset` None: the saved model's, or quick96 for a new one."""

    model_name: str
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelOptions fields
    batch_size: int | None = None  # None: the model's (its preset's default, or last run's)
    target_iteration: int | None = None  # 0 = unlimited; None: the model's (new: unlimited)
    autosave_minutes: float = 15.0
    backup_every: int = 10000
    keep_backups: int = 3
    preview_every: int = 100  # 0 = no preview
    log_every: int = 25
    seed: int = 0
    device: str = "auto"  # auto|cpu|cuda[:N]|xpu[:N]|mps
    precision: str = "auto"  # auto|fp32|bf16|fp16; auto measures which is faster here
    compile: bool = False  # torch.compile the model (see docs/BENCHMARKS.md for when it pays)
    pretrain_faces: Path | None = None  # a folder of many people's aligned faces
    preview_src: str | None = None  # file name in data_src/aligned for the history column
    preview_dst: str | None = None  # file name in data_dst/aligned for the history column
    workers: int = 2
    lr: float = LR


@dataclass
class TrainReport:
    """What a run did; `losses` holds (src, dst) of every iteration of this run."""

    model_name: str
    options: ModelOptions
    start_iteration: int
    iteration: int
    resumed: bool
    stopped: bool  # by `stop`, not by reaching the target
    device: str
    ms_per_iter: float
    losses: list[tuple[float, float]] = field(default_factory=list)
    preview: Path | None = None
    precision: str = "fp32"


def fixed_of(opts: ModelOptions) -> dict[str, Any]:
    """The options that shape the network, as stored beside the weights."""
    return {k: v for k, v in asdict(opts).items() if k in FIXED_OPTIONS}


def peek(folder: Path, name: str) -> dict[str, Any] | None:
    """The saved JSON document (arch, fixed options, state) without loading tensors, from the
    save or its newest backup; None if there is none. Needed to build the right network
    before `checkpoint.load` fills it."""
    candidates = [folder / f"{name}_state.json"]
    root = folder / f"{name}_backups"
    if root.is_dir():
        dirs = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
        candidates += [p / f"{name}_state.json" for p in sorted(dirs, key=lambda p: -int(p.name))]
    for path in candidates:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("state"), dict):
            return doc
    return None


def _model_options(
    folder: Path, opts: TrainOptions
) -> tuple[ModelOptions, dict[str, Any] | None]:
    """Options of a new model, or of the saved one with changeable overrides applied."""
    changes = dict(opts.overrides)
    if opts.batch_size is not None:
        changes["batch_size"] = opts.batch_size
    if opts.target_iteration is not None:
        changes["target_iteration"] = opts.target_iteration
    saved = peek(folder, opts.model_name) if checkpoint.exists(folder, opts.model_name) or (
        folder / f"{opts.model_name}_backups"
    ).is_dir() else None
    if saved is None:
        return preset(opts.preset or DEFAULT_PRESET, **changes), None
    try:
        mo = ModelOptions(**saved["state"]["options"]).validate()
    except (KeyError, TypeError) as exc:
        raise FacelabError(
            f"Model {opts.model_name!r} in {folder} has unreadable options ({exc})."
        ) from None
    if opts.preset is not None and opts.preset.lower() != mo.preset:
        want = preset(opts.preset)
        raise FacelabError(
            f"Model {opts.model_name!r} in {folder} is a {mo.preset} model ({mo.arch}, "
            f"resolution {mo.resolution}), not {want.preset} ({want.arch}, resolution "
            f"{want.resolution}); pick another name or leave out --preset."
        )
    return mo.override(**changes), saved


def _reinit_inter(model: nn.Module) -> None:
    """Fresh inter layers (leaving pretrain): they hold what is specific to one pair."""
    for name, module in model.named_modules():
        if name.startswith("inter") and hasattr(module, "reset_parameters"):
            module.reset_parameters()  # type: ignore[operator]


def _eta(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _facesets(ws: Workspace, mo: ModelOptions, opts: TrainOptions) -> tuple[Faceset, Faceset]:
    if opts.pretrain_faces is not None:
        folder = Path(opts.pretrain_faces)
        if not folder.is_dir():
            raise FacelabError(f"The pretrain faces folder {folder} does not exist.")
        faces = Faceset(folder, mo.resolution, mo.face_type)
        return faces, faces
    return (Faceset(ws.aligned_dir("src"), mo.resolution, mo.face_type),
            Faceset(ws.aligned_dir("dst"), mo.resolution, mo.face_type))


def train(
    ws: Workspace,
    opts: TrainOptions,
    reporter: Reporter,
    stop: threading.Event | None = None,
    on_log: LogFn | None = None,
) -> TrainReport:
    """Train `opts.model_name` in `ws.model_dir` until the target iteration or `stop`.

    Running out of memory anywhere (building, loading, stepping) becomes one FacelabError
    line naming what to reduce; the last save is untouched.
    """
    try:
        return _train(ws, opts, reporter, stop, on_log)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        mo, _ = _model_options(ws.model_dir, opts)
        device = resolve_device(opts.device)
        raise FacelabError(out_of_memory_message(
            mo.batch_size, mo.resolution, mo.ae_dims, device)) from None


def _train(
    ws: Workspace,
    opts: TrainOptions,
    reporter: Reporter,
    stop: threading.Event | None,
    on_log: LogFn | None,
) -> TrainReport:
    folder = ws.model_dir
    name = opts.model_name
    checkpoint.check_name(name)
    if opts.log_every < 1 or opts.preview_every < 0 or opts.backup_every < 0:
        raise FacelabError("log, preview and backup intervals must not be negative.")
    mo, saved = _model_options(folder, opts)
    pretrain = opts.pretrain_faces is not None
    if pretrain:  # the seed's forced settings while pretraining
        mo = mo.override(face_style_power=0.0, bg_style_power=0.0, sort_by_yaw=False,
                         random_flip=True)
    device = resolve_device(opts.device)
    precision, why = choose_precision(opts.precision, device)
    src_faces, dst_faces = _facesets(ws, mo, opts)

    torch.manual_seed(opts.seed)
    model = build_model(mo).to(device)
    forward = torch.compile(model) if opts.compile else model
    step = TrainStep(model, mo, device, precision, lr=opts.lr, forward=forward)  # type: ignore[arg-type]
    state: dict[str, Any] = {"iteration": 0, "history": []}
    if saved is not None:
        state = checkpoint.load(
            folder, name, model, step.optimizer, expected_arch=mo.arch,
            fixed_options=fixed_of(mo), warn=reporter.warn,
        )
        step.set_lr(opts.lr)
    if state.get("pretrain") and not pretrain:
        done = int(state.get("iteration", 0))
        checkpoint.save(folder, name, model, step.optimizer, state, arch=mo.arch,
                        fixed_options=fixed_of(mo), keep_backups=max(1, opts.keep_backups),
                        backup=True)
        _reinit_inter(model)
        step = TrainStep(model, mo, device, precision, lr=opts.lr, forward=forward)  # type: ignore[arg-type]
        state = {"iteration": 0, "history": []}
        reporter.info(f"Leaving pretraining after {done} iterations (kept as a backup): "
                      "training the pair from iteration 0 with fresh inter layers.")
    start = it = int(state.get("iteration", 0))
    history: list[list[float]] = list(state.get("history", []))
    if mo.target_iteration and it >= mo.target_iteration:
        raise FacelabError(
            f"Model {name!r} is already at iteration {it}, the target "
            f"{mo.target_iteration}: raise --target-iteration or set 0 for unlimited."
        )

    sample_opts = SampleOptions(
        random_warp=not pretrain, random_flip=mo.random_flip,
        src_scale=0.0 if pretrain else mo.src_scale_mod / 100,
        yaw_sorted=mo.sort_by_yaw, eyes_mouth=mo.eyes_mouth_priority, seed=opts.seed,
    )
    batches = make_loader(src_faces, dst_faces, mo.batch_size, sample_opts, opts.workers, it)
    preview_src = fixed_faces(src_faces, PREVIEW_FACES, None if pretrain else opts.preview_src)
    preview_dst = fixed_faces(dst_faces, len(preview_src),
                              None if pretrain else opts.preview_dst)
    preview_path = folder / f"{name}_preview.png"
    history_dir = folder / f"{name}_history"
    wrote_preview = False

    saved_at = [-1]

    def save(backup: bool) -> None:
        saved_at[0] = it
        doc = {"iteration": it, "options": asdict(mo), "history": history[-HISTORY_LIMIT:],
               "pretrain": pretrain}
        checkpoint.save(
            folder, name, model, step.optimizer, doc, arch=mo.arch, fixed_options=fixed_of(mo),
            keep_backups=opts.keep_backups, backup=backup,
        )

    def preview() -> None:
        write_preview(preview_path, model, preview_src, preview_dst, history)
        if mo.preview_history:
            write_history(history_dir, it, model, preview_src, preview_dst)

    reporter.info(
        f"{'Resuming' if start else 'Creating'} model {name!r} ({mo.preset}, {mo.arch}, "
        f"resolution {mo.resolution}) at iteration {it} on {describe(device)}, batch "
        f"{mo.batch_size}, {precision} ({why})"
        f"{', pretraining on ' + src_faces.name if pretrain else ''}."
    )
    losses: list[tuple[float, float]] = []
    model.train()
    t_run = t_log = last_save = time.monotonic()
    logged_at = it
    stopped = False
    try:
        while not (mo.target_iteration and it >= mo.target_iteration):
            if stop is not None and stop.is_set():
                stopped = True
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            losses.append(step(batch))
            it += 1
            if it % opts.log_every == 0:
                now = time.monotonic()
                ms = (now - t_log) * 1000 / (it - logged_at)
                t_log, logged_at = now, it
                recent = losses[-opts.log_every:]
                s = sum(v[0] for v in recent) / len(recent)
                d = sum(v[1] for v in recent) / len(recent)
                history.append([it, round(s, 5), round(d, 5)])
                eta = (f"  ETA {_eta((mo.target_iteration - it) * ms / 1000)}"
                       if mo.target_iteration else "")
                reporter.info(f"[{it:07d}] {ms:6.0f} ms/iter  src {s:.4f}  dst {d:.4f}{eta}")
                if on_log is not None:
                    on_log(it, ms, s, d)
            if opts.preview_every and it % opts.preview_every == 0:
                preview()
                wrote_preview = True
            backup = bool(opts.backup_every) and it % opts.backup_every == 0
            if backup or time.monotonic() - last_save >= opts.autosave_minutes * 60:
                save(backup)
                last_save = time.monotonic()
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    elapsed = time.monotonic() - t_run
    if it > start and saved_at[0] != it:
        save(bool(opts.backup_every) and it % opts.backup_every == 0)
    if it > start and opts.preview_every and it % opts.preview_every:  # not drawn at `it` yet
        preview()
        wrote_preview = True
    return TrainReport(
        model_name=name, options=mo, start_iteration=start, iteration=it,
        resumed=saved is not None, stopped=stopped, device=str(device),
        ms_per_iter=elapsed * 1000 / max(1, it - start), losses=losses,
        preview=preview_path if wrote_preview else None, precision=precision,
    )
