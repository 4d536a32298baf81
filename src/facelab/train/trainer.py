"""The training loop: build or resume a model, step it on src/dst batches, save safely.

The library never touches signals: a caller (the CLI) sets `stop` on Ctrl-C or SIGTERM and
the loop saves and returns at the end of the current iteration. The optimizer is Adam with
lr 5e-5 and betas (0.5, 0.999), the settings of DeepFaceLab's Keras-era models.
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

from facelab.errors import FacelabError
from facelab.progress import Reporter
from facelab.train import checkpoint
from facelab.train.data import Faceset, SampleOptions, make_loader
from facelab.train.losses import image_loss, mask_loss
from facelab.train.models import FIXED_OPTIONS, ModelOptions, build_model, preset
from facelab.train.preview import fixed_faces, write_preview
from facelab.workspace import Workspace

DEFAULT_PRESET = "quick96"  # a new model without --preset: DFL's cheapest full-face model
LR, BETAS = 5e-5, (0.5, 0.999)
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
    target_iteration: int = 0  # 0 = unlimited
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


def resolve_device(spec: str) -> torch.device:
    """auto → cuda if available else cpu; cuda[:N] must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2]
        if not torch.cuda.is_available():
            raise FacelabError(f"Device {spec!r} asked for, but no CUDA GPU is available.")
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise FacelabError(
                f"Device {spec!r} does not exist ({torch.cuda.device_count()} CUDA GPU(s))."
            )
        return torch.device(spec)
    raise FacelabError(f"Device must be auto, cpu, cuda or cuda:N, not {spec!r}.")


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


def _loss(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], mo: ModelOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, dst) losses: masked image loss, plus the mask loss when the model learns masks."""
    pixel = "mse" if mo.pixel_loss else None
    side_losses = []
    for side in ("src", "dst"):
        pred, target, mask = out[f"{side}_{side}"], batch[f"{side}_target"], batch[f"{side}_mask"]
        loss = image_loss(pred, target, mask, pixel).mean()
        if mo.learn_mask:
            loss = loss + mask_loss(out[f"{side}_{side}_mask"], mask).mean()
        side_losses.append(loss)
    return side_losses[0], side_losses[1]


def train(
    ws: Workspace,
    opts: TrainOptions,
    reporter: Reporter,
    stop: threading.Event | None = None,
    on_log: LogFn | None = None,
) -> TrainReport:
    """Train `opts.model_name` in `ws.model_dir` until the target iteration or `stop`."""
    folder = ws.model_dir
    name = opts.model_name
    checkpoint.check_name(name)
    if opts.log_every < 1 or opts.preview_every < 0 or opts.backup_every < 0:
        raise FacelabError("log, preview and backup intervals must not be negative.")
    mo, saved = _model_options(folder, opts)
    device = resolve_device(opts.device)
    src_faces = Faceset(ws.aligned_dir("src"), mo.resolution, mo.face_type)
    dst_faces = Faceset(ws.aligned_dir("dst"), mo.resolution, mo.face_type)

    torch.manual_seed(opts.seed)
    model = build_model(mo).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr, betas=BETAS)
    state: dict[str, Any] = {"iteration": 0, "history": []}
    if saved is not None:
        state = checkpoint.load(
            folder, name, model, optimizer, expected_arch=mo.arch, fixed_options=fixed_of(mo),
            warn=reporter.warn,
        )
        for group in optimizer.param_groups:
            group["lr"] = opts.lr
    start = it = int(state.get("iteration", 0))
    history: list[list[float]] = list(state.get("history", []))
    if mo.target_iteration and it >= mo.target_iteration:
        raise FacelabError(
            f"Model {name!r} is already at iteration {it}, the target "
            f"{mo.target_iteration}: raise --target-iteration or set 0 for unlimited."
        )

    sample_opts = SampleOptions(
        random_flip=mo.random_flip, src_scale=mo.src_scale_mod / 100, seed=opts.seed + it
    )
    batches = make_loader(src_faces, dst_faces, mo.batch_size, sample_opts, opts.workers)
    preview_src = fixed_faces(src_faces, PREVIEW_FACES)
    preview_dst = fixed_faces(dst_faces, len(preview_src))
    preview_path = folder / f"{name}_preview.png"
    wrote_preview = False

    saved_at = [-1]

    def save(backup: bool) -> None:
        saved_at[0] = it
        doc = {"iteration": it, "options": asdict(mo), "history": history[-HISTORY_LIMIT:]}
        checkpoint.save(
            folder, name, model, optimizer, doc, arch=mo.arch, fixed_options=fixed_of(mo),
            keep_backups=opts.keep_backups, backup=backup,
        )

    reporter.info(
        f"{'Resuming' if saved else 'Creating'} model {name!r} ({mo.preset}, {mo.arch}, "
        f"resolution {mo.resolution}) at iteration {it} on {device}, batch {mo.batch_size}."
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
            out = model(batch["src"], batch["dst"])
            src_loss, dst_loss = _loss(out, batch, mo)
            optimizer.zero_grad(set_to_none=True)
            (src_loss + dst_loss).backward()
            optimizer.step()
            it += 1
            losses.append((src_loss.item(), dst_loss.item()))
            if it % opts.log_every == 0:
                now = time.monotonic()
                ms = (now - t_log) * 1000 / (it - logged_at)
                t_log, logged_at = now, it
                recent = losses[-opts.log_every:]
                s = sum(v[0] for v in recent) / len(recent)
                d = sum(v[1] for v in recent) / len(recent)
                history.append([it, round(s, 5), round(d, 5)])
                reporter.info(f"[{it:07d}] {ms:6.0f} ms/iter  src {s:.4f}  dst {d:.4f}")
                if on_log is not None:
                    on_log(it, ms, s, d)
            if opts.preview_every and it % opts.preview_every == 0:
                write_preview(preview_path, model, preview_src, preview_dst, history)
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
        write_preview(preview_path, model, preview_src, preview_dst, history)
        wrote_preview = True
    return TrainReport(
        model_name=name, options=mo, start_iteration=start, iteration=it,
        resumed=saved is not None, stopped=stopped, device=str(device),
        ms_per_iter=elapsed * 1000 / max(1, it - start), losses=losses,
        preview=preview_path if wrote_preview else None,
    )
