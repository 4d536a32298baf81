"""The training loop: build or resume a model, step it on src/dst batches, save safely.

The library never touches signals or prompts: a caller (the CLI) sets `stop` on Ctrl-C or
SIGTERM and the loop saves and returns at the end of the current iteration. One step
(losses, precision, optimizer) lives in step.py; where and in which precision in
facelab/device.py. `_setup` builds or resumes the model, `_Loop` steps it and saves.

Pretraining (`pretrain_faces`) trains both sides on one folder of many people's faces, with
DeepFaceLab's forced settings (no warp, flips, no style, uniform yaw). The first run without it
starts the pair from iteration 0 with fresh inter layers and optimizer, keeping the encoder
and decoders, as DeepFaceLab does; the pretrained save is kept as a backup.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facelab.device import (
    choose_precision,
    describe,
    is_out_of_memory,
    out_of_memory_message,
    resolve_device,
)
from facelab.errors import FacelabError
from facelab.progress import Reporter
from facelab.train import checkpoint
from facelab.train.data import Faceset, SampleOptions, make_loader
from facelab.train.models import DEFAULT_PRESET, ModelOptions, build_model, preset
from facelab.train.preview import fixed_faces, write_history, write_preview
from facelab.train.run_options import TrainOptions
from facelab.train.saved import SavedModel, fixed_of, read_saved
from facelab.train.step import TrainStep
from facelab.workspace import Workspace

HISTORY_LIMIT = 2000  # logged loss points kept in the save (for the plot and `model info`)
PREVIEW_FACES = 4
FAMILY = "sae"  # recorded in every save: merge loads a model by its family

LogFn = Callable[[int, float, float, float], None]  # iteration, ms/iter, src loss, dst loss


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


def _model_options(
    folder: Path, opts: TrainOptions
) -> tuple[ModelOptions, SavedModel | None]:
    """Options of a new model, or of the saved one with changeable overrides applied."""
    changes = dict(opts.overrides)
    if opts.batch_size is not None:
        changes["batch_size"] = opts.batch_size
    if opts.target_iteration is not None:
        changes["target_iteration"] = opts.target_iteration
    saved = read_saved(folder, opts.model_name)
    if saved is None:
        return preset(opts.preset or DEFAULT_PRESET, **changes), None
    if saved.family != FAMILY:
        raise FacelabError(f"Model {opts.model_name!r} in {folder} is a {saved.family} model, "
                           "which this trainer does not train; pick another name.")
    mo = saved.options()
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
        return _Loop(_setup(ws, opts, reporter), opts, reporter, on_log).run(stop)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        mo, _ = _model_options(ws.model_dir, opts)
        device = resolve_device(opts.device)
        raise FacelabError(out_of_memory_message(
            mo.batch_size, mo.resolution, mo.ae_dims, device)) from None


@dataclass
class _Setup:
    """A model ready to step: built, resumed (or left pretraining), on its device."""

    folder: Path
    name: str
    mo: ModelOptions
    pretrain: bool  # training on one folder of many people's faces
    resumed: bool
    device: torch.device
    precision: str
    precision_reason: str
    model: nn.Module
    step: TrainStep
    state: dict[str, Any]  # the save's (iteration, history), or a new model's
    src_faces: Faceset
    dst_faces: Faceset


def _setup(ws: Workspace, opts: TrainOptions, reporter: Reporter) -> _Setup:
    """Everything before the first step, in the order that makes a resume exact (the seed,
    the network, then the save's weights, optimizer and RNG states)."""
    folder = ws.model_dir
    name = opts.model_name
    checkpoint.check_name(name)
    if opts.log_every < 1 or opts.preview_every < 0 or opts.backup_every < 0:
        raise FacelabError("log, preview and backup intervals must not be negative.")
    mo, saved = _model_options(folder, opts)
    pretrain = opts.pretrain_faces is not None
    if pretrain:  # DeepFaceLab's forced settings while pretraining
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
    it = int(state.get("iteration", 0))
    if mo.target_iteration and it >= mo.target_iteration:
        raise FacelabError(
            f"Model {name!r} is already at iteration {it}, the target "
            f"{mo.target_iteration}: raise --target-iteration or set 0 for unlimited."
        )
    return _Setup(folder, name, mo, pretrain, saved is not None, device, precision, why,
                model, step, state, src_faces, dst_faces)


class _Loop:
    """The steps of one run and what they leave: log lines, previews, saves."""

    def __init__(self, setup: _Setup, opts: TrainOptions, reporter: Reporter,
                 on_log: LogFn | None) -> None:
        self.setup = setup
        self.opts = opts
        self.reporter = reporter
        self.on_log = on_log
        self.start = self.it = int(setup.state.get("iteration", 0))
        self.history: list[list[float]] = list(setup.state.get("history", []))
        self.losses: list[tuple[float, float]] = []
        self.saved_at = -1  # the iteration of this run's last save
        self.wrote_preview = False
        mo, pretrain = setup.mo, setup.pretrain
        sample_opts = SampleOptions(
            random_warp=not pretrain, random_flip=mo.random_flip,
            src_scale=0.0 if pretrain else mo.src_scale_mod / 100,
            yaw_sorted=mo.sort_by_yaw, eyes_mouth=mo.eyes_mouth_priority, seed=opts.seed,
        )
        self.batches = make_loader(setup.src_faces, setup.dst_faces, mo.batch_size, sample_opts,
                                   opts.workers, self.it)
        self.preview_src = fixed_faces(setup.src_faces, PREVIEW_FACES,
                                       None if pretrain else opts.preview_src)
        self.preview_dst = fixed_faces(setup.dst_faces, len(self.preview_src),
                                       None if pretrain else opts.preview_dst)
        self.preview_path = setup.folder / f"{setup.name}_preview.png"
        self.history_dir = setup.folder / f"{setup.name}_history"

    def save(self, backup: bool) -> None:
        r = self.setup
        self.saved_at = self.it
        doc = {"iteration": self.it, "options": asdict(r.mo),
               "history": self.history[-HISTORY_LIMIT:], "pretrain": r.pretrain,
               "family": FAMILY}
        checkpoint.save(
            r.folder, r.name, r.model, r.step.optimizer, doc, arch=r.mo.arch,
            fixed_options=fixed_of(r.mo), keep_backups=self.opts.keep_backups, backup=backup,
        )

    def preview(self) -> None:
        r = self.setup
        write_preview(self.preview_path, r.model, self.preview_src, self.preview_dst,
                      self.history)
        if r.mo.preview_history:
            write_history(self.history_dir, self.it, r.model, self.preview_src,
                          self.preview_dst)
        self.wrote_preview = True

    def run(self, stop: threading.Event | None) -> TrainReport:
        """Step until the target or `stop`, then save and preview what is not yet."""
        r, opts = self.setup, self.opts
        self.reporter.info(
            f"{'Resuming' if self.start else 'Creating'} model {r.name!r} ({r.mo.preset}, "
            f"{r.mo.arch}, resolution {r.mo.resolution}) at iteration {self.it} on "
            f"{describe(r.device)}, batch {r.mo.batch_size}, {r.precision} "
            f"({r.precision_reason})"
            f"{', pretraining on ' + r.src_faces.name if r.pretrain else ''}."
        )
        r.model.train()
        t_run = time.monotonic()
        try:
            stopped = self._steps(stop)
        finally:
            close = getattr(self.batches, "close", None)
            if close is not None:
                close()
        elapsed = time.monotonic() - t_run
        it = self.it
        if it > self.start and self.saved_at != it:
            self.save(bool(opts.backup_every) and it % opts.backup_every == 0)
        if it > self.start and opts.preview_every and it % opts.preview_every:  # not at `it` yet
            self.preview()
        return TrainReport(
            model_name=r.name, options=r.mo, start_iteration=self.start, iteration=it,
            resumed=r.resumed, stopped=stopped, device=str(r.device),
            ms_per_iter=elapsed * 1000 / max(1, it - self.start), losses=self.losses,
            preview=self.preview_path if self.wrote_preview else None,
            precision=r.precision,
        )

    def _steps(self, stop: threading.Event | None) -> bool:
        """The loop proper; True when `stop` ended it."""
        r, opts, target = self.setup, self.opts, self.setup.mo.target_iteration
        t_log = last_save = time.monotonic()
        logged_at = self.it
        while not (target and self.it >= target):
            if stop is not None and stop.is_set():
                return True
            batch = {k: v.to(r.device, non_blocking=True) for k, v in next(self.batches).items()}
            self.losses.append(r.step(batch))
            self.it += 1
            if self.it % opts.log_every == 0:
                now = time.monotonic()
                self._log((now - t_log) * 1000 / (self.it - logged_at))
                t_log, logged_at = now, self.it
            if opts.preview_every and self.it % opts.preview_every == 0:
                self.preview()
            backup = bool(opts.backup_every) and self.it % opts.backup_every == 0
            if backup or time.monotonic() - last_save >= opts.autosave_minutes * 60:
                self.save(backup)
                last_save = time.monotonic()
        return False

    def _log(self, ms: float) -> None:
        """One log line and history point: the mean losses since the last one."""
        it, target = self.it, self.setup.mo.target_iteration
        recent = self.losses[-self.opts.log_every:]
        s = sum(v[0] for v in recent) / len(recent)
        d = sum(v[1] for v in recent) / len(recent)
        self.history.append([it, round(s, 5), round(d, 5)])
        eta = f"  ETA {_eta((target - it) * ms / 1000)}" if target else ""
        self.reporter.info(f"[{it:07d}] {ms:6.0f} ms/iter  src {s:.4f}  dst {d:.4f}{eta}")
        if self.on_log is not None:
            self.on_log(it, ms, s, d)
