"""Training a meshswap model: the index step, then the refiner, in the shared run loop.

A new model is first built from the src faceset (`model.build`: crops, meshes,
descriptors, neutral meshes; seconds) and saved at iteration 0, so stopping at once
keeps it. With a refiner, each iteration is one Adam step of the refiner on
`model.train_batch`, whose samples are drawn from a generator seeded by (seed,
iteration) in `workers` processes (they warp while the refiner steps): a resumed run
draws the batches the uninterrupted one would have, with any worker count. When to
log, preview, save and back up is train/loop.py's, as for SAE. Without a refiner the
build is the whole training: the iteration stays 0 and later runs have nothing to do.

History rows keep SAE's shape [iteration, src, dst] with the refiner's one loss in both
places, so `model info`, the loss plot and every reader of saves take both families.
The preview shows, for a few fixed src faces, what the refiner works from: the nearest
src face retrieved for it (never itself), the warped blend of the candidates (the
refiner's input), the refiner's output, and the face itself (the target).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from facelab.device import autocast, choose_precision, describe, needs_grad_scaler, resolve_device
from facelab.errors import FacelabError
from facelab.fsutil import atomic_path
from facelab.meshswap.model import EXCLUDE_FRAMES, MeshSwapModel, build, model_counts
from facelab.meshswap.options import ARCH, FAMILY, MeshSwapOptions, fixed_of
from facelab.progress import Reporter
from facelab.train import checkpoint
from facelab.train.data import Faceset
from facelab.train.loop import (
    LogFn,
    Loop,
    TrainReport,
    check_intervals,
    lr_note,
    out_of_memory_guard,
    pick_lr,
)
from facelab.train.preview import loss_plot
from facelab.train.run_options import TrainOptions, check_family_options
from facelab.train.saved import SavedModel, read_saved
from facelab.train.workers import quiet_worker, starting_workers
from facelab.workspace import Workspace

#: The refiner's Adam. DeepFaceLab's 5e-5 (train.step.LR) is for deep autoencoders from
#: scratch; for this small residual U-Net 1e-3 lowered a held-out GRID loss fastest over its
#: first 60 steps (2e-4 and 3e-3 less): a first probe, to be settled by bench/quality.py.
LR, BETAS = 1e-3, (0.9, 0.999)
PREVIEW_FACES = 4
PREVIEW_STREAM = 1 << 20  # the preview's samples: generator (seed, this), not an iteration's
ROWS = ("nearest src", "warp (input)", "refined", "target")

Batch = dict[str, torch.Tensor]  # MeshSwapModel.train_batch's


def train_meshswap(ws: Workspace, opts: TrainOptions, reporter: Reporter,
                   stop: threading.Event | None = None,
                   on_log: LogFn | None = None) -> TrainReport:
    """Build (a new model) and train the refiner of meshswap model `opts.model_name` until
    its target or `stop`; see the module docstring. Out of memory is one error line."""

    def message() -> str:
        mso, _ = _options(ws.model_dir, opts)
        device = resolve_device(opts.device)
        where = "GPU memory" if device.type != "cpu" else "memory"
        first = (f"lower --batch-size to {mso.batch_size // 2} first, then "
                 if mso.batch_size > 1 else "lower ")
        return (f"Out of {where} on {device} at batch size {mso.batch_size}, resolution "
                f"{mso.resolution}: {first}--refiner-dims ({mso.refiner_dims}) or the "
                "resolution in a new model; the last save is kept.")

    return out_of_memory_guard(lambda: _train(ws, opts, reporter, stop, on_log), message)


def _options(folder: Path, opts: TrainOptions) -> tuple[MeshSwapOptions, SavedModel | None]:
    """A new model's options, or the saved ones with this run's changes."""
    check_family_options(FAMILY, opts.overrides)
    changes = opts.model_changes()
    saved = read_saved(folder, opts.model_name)
    if saved is None:
        return MeshSwapOptions(**changes), None
    try:
        mso = MeshSwapOptions(**saved.state["options"])
    except (KeyError, TypeError) as exc:
        raise FacelabError(f"Model {saved.name!r} in {folder} has unreadable options "
                           f"({exc}).") from None
    return mso.override(**changes), saved


def _check_run(opts: TrainOptions, reporter: Reporter) -> None:
    """Run options that only SAE models have."""
    for given, flag in ((opts.pretrain_faces, "--pretrain-faces"),
                        (opts.preview_src, "--preview-src"), (opts.preview_dst, "--preview-dst")):
        if given is not None:
            raise FacelabError(f"{flag} is for SAE-family models; a meshswap model learns "
                               "from data_src/aligned alone: leave it out.")
    if opts.compile:
        reporter.warn("--compile is ignored for meshswap models (their refiner is small).")


@dataclass
class _Setup:
    """A meshswap model ready to train: built or loaded, on its device."""

    folder: Path
    name: str
    mso: MeshSwapOptions
    resumed: bool
    device: torch.device
    precision: str
    precision_reason: str
    model: MeshSwapModel
    optimizer: torch.optim.Optimizer | None
    state: dict[str, Any]


def _setup(ws: Workspace, opts: TrainOptions, reporter: Reporter) -> _Setup:
    """Build or load the model, in the order that makes a resume exact (the seed, the
    model, then the save's tensors, optimizer and RNG states)."""
    folder, name = ws.model_dir, opts.model_name
    checkpoint.check_name(name)
    check_intervals(opts)
    _check_run(opts, reporter)
    mso, saved = _options(folder, opts)
    device = resolve_device(opts.device)
    precision, why = (choose_precision(opts.precision, device) if mso.refiner
                      else ("fp32", "no network to train"))
    torch.manual_seed(opts.seed)
    state: dict[str, Any] = {"iteration": 0, "history": []}
    if saved is None:
        src = Faceset(ws.aligned_dir("src"), mso.resolution, mso.face_type)
        dst = Faceset(ws.aligned_dir("dst"), mso.resolution, mso.face_type)
        t0 = time.monotonic()
        reporter.status(f"Indexing the {len(src)} src faces …")
        model = build(src, dst.metas, mso)
        reporter.info(f"Indexed {model.faces} src faces of {src.name} ({mso.resolution} px, "
                      f"{mso.face_type}) for {len(dst)} dst faces in "
                      f"{time.monotonic() - t0:.1f} s.")
    else:
        model = MeshSwapModel(mso, *model_counts(saved.doc.get("fixed_options") or {}))
    model.to(device)
    optimizer = (None if model.refiner is None
                 else torch.optim.Adam(model.refiner.parameters(), lr=LR, betas=BETAS))
    if saved is not None:
        reporter.status(f"Loading model {name!r} …")
        state = checkpoint.load(folder, name, model, optimizer, expected_arch=ARCH,
                                fixed_options={**fixed_of(mso), **model.counts()},
                                warn=reporter.warn)
    lr = pick_lr(opts.lr, state, LR)
    for group in optimizer.param_groups if optimizer is not None else ():
        group["lr"] = lr
    it = int(state.get("iteration", 0))
    if model.refiner is not None and mso.target_iteration and it >= mso.target_iteration:
        raise FacelabError(
            f"Model {name!r} is already at iteration {it}, the target "
            f"{mso.target_iteration}: raise --target-iteration or set 0 for unlimited.")
    return _Setup(folder, name, mso, saved is not None, device, precision, why, model,
                  optimizer, state)


class _Batches(IterableDataset):
    """Endless refiner batches from number `start` on, batch i drawn by generator (seed, i):
    the same stream for any worker count and any start. Holds a CPU copy of the model's
    src faces without the refiner (sampling does not use it), for the workers."""

    def __init__(self, model: MeshSwapModel, batch_size: int, seed: int, start: int) -> None:
        super().__init__()
        sampler = MeshSwapModel(replace(model.opts, refiner=False), model.faces, model.points)
        sampler.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()
                                 if not k.startswith("refiner.")})
        self.sampler, self.batch_size, self.seed, self.start = sampler, batch_size, seed, start

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # DataLoader takes batches from its workers in turn: worker w draws start + w, …
        for i in itertools.count(self.start + worker, workers):
            yield self.sampler.train_batch(np.random.default_rng([self.seed, i]),
                                           self.batch_size)


def _worker_init(_: int) -> None:
    quiet_worker()  # signals are the trainer's (train/workers.py)
    cv2.setNumThreads(1)  # the workers are the parallelism
    torch.set_num_threads(1)


def batches(model: MeshSwapModel, batch_size: int, seed: int, start: int,
            workers: int) -> Generator[Batch, None, None]:
    """The refiner's training batches (on the CPU) from iteration `start` on, built by
    `workers` processes ahead of the steps (0: in this process, when asked)."""
    loader = DataLoader(
        _Batches(model, batch_size, seed, start), batch_size=None, num_workers=workers,
        worker_init_fn=_worker_init, prefetch_factor=2 if workers > 0 else None,
        # spawn, as train.data's loader: a forked child can hang in OpenCV's thread pool
        multiprocessing_context=mp.get_context("spawn") if workers > 0 else None)
    with starting_workers():  # they start with the iterator
        stream = iter(loader)
    yield from stream


class _MeshSwap:
    """The meshswap family's part of a run (`loop.Family`): refiner steps, saves, previews."""

    def __init__(self, setup: _Setup, opts: TrainOptions, start: int,
                 warn: Callable[[str], None]) -> None:
        self.setup = setup
        self.opts = opts
        self.warn = warn
        r = setup
        self.scaler = (torch.amp.GradScaler(r.device.type)
                       if needs_grad_scaler(r.device, r.precision) else None)
        self.preview_path = r.folder / f"{r.name}_preview.png"
        self.batches: Generator[Batch, None, None] | None = None
        self.start = start

    def step(self, iteration: int) -> tuple[float, float]:
        r = self.setup
        assert r.optimizer is not None  # the loop runs only for a model with a refiner
        if self.batches is None:  # the stream follows the iteration from `start` on
            self.batches = batches(r.model, r.mso.batch_size, self.opts.seed, self.start,
                                   self.opts.workers)
        batch = {k: v.to(r.device, non_blocking=True) for k, v in next(self.batches).items()}
        with autocast(r.device, r.precision):
            loss = r.model.loss(batch)
        r.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(r.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            r.optimizer.step()
        value = float(loss.item())
        return value, value

    def save(self, iteration: int, history: list[list[float]], backup: bool) -> None:
        r = self.setup
        doc = {"family": FAMILY, "iteration": iteration, "options": asdict(r.mso),
               "history": history, **({"lr": self.lr} if r.optimizer is not None else {})}
        checkpoint.save(r.folder, r.name, r.model, r.optimizer, doc, arch=ARCH,
                        fixed_options={**fixed_of(r.mso), **r.model.counts()},
                        keep_backups=self.opts.keep_backups, backup=backup)

    def rollback(self) -> int:
        """Back to the last save (a new model's index is saved before the first step)."""
        r, lr = self.setup, self.lr
        state = checkpoint.load(r.folder, r.name, r.model, r.optimizer, expected_arch=ARCH,
                                fixed_options={**fixed_of(r.mso), **r.model.counts()},
                                warn=self.warn, restore_rng=False)
        self.set_lr(lr)
        return int(state.get("iteration", 0))

    @property
    def lr(self) -> float:
        assert self.setup.optimizer is not None
        return float(self.setup.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        assert self.setup.optimizer is not None
        for group in self.setup.optimizer.param_groups:
            group["lr"] = lr

    def preview(self, iteration: int, history: list[list[float]]) -> None:
        write_preview(self.preview_path, self.setup.model, self.opts.seed, history)

    def close(self) -> None:
        if self.batches is not None:
            self.batches.close()  # ends the workers


def _train(ws: Workspace, opts: TrainOptions, reporter: Reporter,
           stop: threading.Event | None, on_log: LogFn | None) -> TrainReport:
    r = _setup(ws, opts, reporter)
    start = int(r.state.get("iteration", 0))
    family = _MeshSwap(r, opts, start, reporter.warn)
    m, mso = r.model, r.mso

    def report(iteration: int, stopped: bool, ms: float, losses: list[tuple[float, float]],
               previewed: bool) -> TrainReport:
        return TrainReport(
            model_name=r.name, options=mso, start_iteration=start, iteration=iteration,
            resumed=r.resumed, stopped=stopped, device=str(r.device), ms_per_iter=ms,
            losses=losses, preview=family.preview_path if previewed else None,
            precision=r.precision, family=FAMILY)

    if not r.resumed:
        family.save(start, [], backup=False)  # the index, kept even if stopped at once
    if m.refiner is None:
        if r.resumed:
            changed = asdict(r.mso) != r.state.get("options")
            if changed:  # e.g. --no-shade or --candidates: merge reads them from the save
                family.save(start, list(r.state.get("history", [])), backup=False)
            reporter.info(f"Model {r.name!r} (meshswap) has no refiner: nothing to train; "
                          "its index was built when it was created"
                          + ("; its changed options are saved." if changed else "."))
            return report(start, False, 0.0, [], False)
        if opts.preview_every:
            family.preview(start, [])
        reporter.info(f"Model {r.name!r} (meshswap) has no refiner (--no-refiner): the index "
                      "is the whole training, so it stays at iteration 0.")
        return report(start, False, 0.0, [], bool(opts.preview_every))
    reporter.info(
        f"{'Resuming' if r.resumed else 'Training'} model {r.name!r} (meshswap, {m.faces} src "
        f"faces at {mso.resolution} px, refiner {mso.refiner_dims} dims, "
        f"{mso.candidates} candidates) at iteration {start} on {describe(r.device)}, batch "
        f"{mso.batch_size}, {r.precision} ({r.precision_reason}){lr_note(family.lr, LR)}.")
    reporter.status("Waiting for the first batch …")
    m.train()
    loop = Loop(family, opts, reporter, on_log, start=start,
                history=list(r.state.get("history", [])), target=mso.target_iteration,
                labels=("refiner",))
    done = loop.run(stop)
    return report(done.iteration, done.stopped, done.ms_per_iter, done.losses, done.previewed)


# ── the preview ──


def _nearest(model: MeshSwapModel, idx: np.ndarray) -> np.ndarray:
    """The nearest src face retrieved for each of src faces `idx` in training: as in
    `MeshSwapModel.train_batch`, never the face itself nor its neighbours in time."""
    clip, frame = model.src_clip.cpu().numpy(), model.src_frame.cpu().numpy()
    near = (clip[idx, None] == clip[None]) & (np.abs(frame[idx, None] - frame[None])
                                              <= EXCLUDE_FRAMES)
    rows = np.arange(len(idx))
    near[rows, idx] = True
    if near.all(1).any():  # one short clip: only the face itself is left out
        near = np.zeros_like(near)
        near[rows, idx] = True
    chosen, _ = model.choose(model.src_desc.cpu().numpy()[idx], 1, near)
    return chosen[:, 0]


@torch.no_grad()
def render_preview(model: MeshSwapModel, seed: int, count: int = PREVIEW_FACES) -> np.ndarray:
    """The preview grid as uint8 BGR (len(ROWS)·R)×(count·R)×3: for `count` fixed src
    faces, one column each, the rows of ROWS (each labelled in its first tile)."""
    was_training = model.training
    model.eval()
    try:
        batch = model.train_batch(np.random.default_rng([seed, PREVIEW_STREAM]),
                                  min(count, model.faces))
        refined = model.refine(batch)
    finally:
        model.train(was_training)
    nearest = model.src_crops[torch.from_numpy(_nearest(model, batch["index"].numpy()))]
    rows = [nearest.permute(0, 3, 1, 2).float().cpu() / 255, batch["warp"], refined,
            batch["target"]]
    tiles = [torch.cat(list(t.float().clamp(0, 1).cpu()), dim=2) for t in rows]  # 3×R×(n·R)
    image = (torch.cat(tiles, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = np.ascontiguousarray(image)
    res = model.resolution
    scale = max(0.3, res / 256)
    for i, label in enumerate(ROWS):
        (_, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 3)
        at = (3, i * res + height + 3)
        cv2.putText(image, label, at, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3,
                    cv2.LINE_AA)
        cv2.putText(image, label, at, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return image


def write_preview(path: Path, model: MeshSwapModel, seed: int,
                  history: list[list[float]]) -> None:
    """The grid and the loss plot under it, written atomically."""
    grid = render_preview(model, seed)
    image = np.vstack([grid, loss_plot(history, grid.shape[1])])
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise FacelabError(f"Cannot write the preview {path}.")
