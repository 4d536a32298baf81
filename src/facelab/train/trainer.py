"""Training: `train` picks the model's family; here the SAE family's part of a run.

The library never touches signals or prompts: a caller (the CLI) sets `stop` on Ctrl-C or
SIGTERM and the loop saves and returns at the end of the current iteration (the sample
workers ignore both: the trainer decides, then ends them). One run at a time per model: the
run holds the workspace lock `model-<name>`, and checks that the model folder is writable
before it trains. When to log,
preview, save and back up is loop.py's, shared with the meshswap family
(facelab/meshswap/train.py). One SAE step (losses, precision, optimizer) lives in step.py;
where and in which precision in facelab/device.py. `sae_setup.py` builds or resumes the model,
`_Sae` steps, saves and previews it inside `loop.Loop`.

Pretraining (`pretrain_faces`) trains both sides on one folder of many people's faces, with
DeepFaceLab's forced settings (no warp, flips, no style, uniform yaw). The first run without it
starts the pair from iteration 0 with fresh inter layers and optimizer, keeping the encoder
and decoders, as DeepFaceLab does; the pretrained save is kept as a backup.

Under torchrun (or `facelab train --nproc N`) every rank runs all of this on its slice of
each batch, the gradients averaged in ddp.py; rank 0 alone holds the lock and writes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from facelab import locks
from facelab.device import (
    describe,
    out_of_memory_message,
    resolve_device,
)
from facelab.errors import FacelabError
from facelab.progress import NullReporter, Reporter
from facelab.train import checkpoint
from facelab.train.checkpoint_state import check_savable
from facelab.train.data import SampleOptions, make_loader
from facelab.train.loop import (
    LogFn,
    Loop,
    TrainReport,
    check_writable,
    lr_note,
    out_of_memory_guard,
)
from facelab.train.preview import fixed_faces, write_history, write_preview
from facelab.train.run_options import MESHSWAP, Ranks, TrainOptions
from facelab.train.sae_setup import FAMILY, SaeSetup, model_options, setup_sae
from facelab.train.saved import fixed_of, read_saved
from facelab.train.step import LR, TrainStep
from facelab.workspace import Workspace

__all__ = ["TrainOptions", "TrainReport", "train"]

PREVIEW_FACES = 4


def _family(folder: Path, opts: TrainOptions) -> str:
    """The family that trains `opts.model_name`: its save's, else the preset's. A preset of
    the other family than the save's is one error line."""
    checkpoint.check_name(opts.model_name)
    saved = read_saved(folder, opts.model_name)
    wanted = None if opts.preset is None else (
        MESHSWAP if opts.preset.lower() == MESHSWAP else FAMILY)
    if saved is None:
        return wanted or FAMILY
    if saved.family not in (FAMILY, MESHSWAP):
        raise FacelabError(f"Model {opts.model_name!r} in {folder} is a {saved.family} "
                           "model, which this trainer does not train; pick another name.")
    if wanted is not None and wanted != saved.family:
        was = str(saved.state.get("options", {}).get("preset", saved.family))
        kind = f"{was} model" + ("" if was == saved.family else f" ({saved.family} family)")
        raise FacelabError(
            f"Model {opts.model_name!r} in {folder} is a {kind}, not "
            f"{opts.preset.lower()}; pick another name or leave out --preset.")
    return saved.family


def train(
    ws: Workspace,
    opts: TrainOptions,
    reporter: Reporter,
    stop: threading.Event | None = None,
    on_log: LogFn | None = None,
) -> TrainReport:
    """Train `opts.model_name` in `ws.model_dir` until the target iteration or `stop`.

    A meshswap model (`--preset meshswap`, or a save of that family) trains in
    facelab.meshswap.train through the same loop; every other model is SAE's. Running out
    of memory anywhere (building, loading, stepping) becomes one FacelabError line naming
    what to reduce; the last save is untouched. A second run on the same model while this
    one runs (another process) is refused in one line (`locks.Busy`). Under torchrun's
    variables this process is one rank of a data-parallel run (ddp.py): a rank other than
    0 reports nothing and writes nothing.
    """
    name = opts.model_name
    checkpoint.check_name(name)
    ranks = Ranks.of_run(opts.nproc)
    if not ranks.lead:
        return _train(ws, opts, NullReporter(), stop, None, ranks)
    folder = ws.model_dir
    check_writable(folder, folder / f"{name}_backups", folder / f"{name}_history")
    with contextlib.ExitStack() as held:
        try:
            stale = held.enter_context(locks.hold(ws.root, f"model-{name}", f"model '{name}'"))
        except OSError as exc:
            raise FacelabError(f"Cannot lock model {name!r} in {ws.root} "
                               f"({exc.strerror or exc}).") from None
        if stale:
            reporter.info(f"Model {name!r} was left by a run that ended without finishing "
                          f"(pid {stale.get('pid', '?')}); taking it over.")
        held.callback(reporter.status, "")  # however it ends, its status line goes
        return _train(ws, opts, reporter, stop, on_log, ranks)


def _train(ws: Workspace, opts: TrainOptions, reporter: Reporter,
           stop: threading.Event | None, on_log: LogFn | None, ranks: Ranks) -> TrainReport:
    """`train` once the model is this process's to write (or, rank > 0, to train)."""
    if _family(ws.model_dir, opts) == MESHSWAP:
        if ranks.world > 1:
            raise FacelabError("Meshswap models train in one process: leave out --nproc "
                               "(or torchrun).")
        from facelab.meshswap.train import train_meshswap

        return train_meshswap(ws, opts, reporter, stop, on_log)

    def message() -> str:
        mo, _ = model_options(ws.model_dir, opts)
        return out_of_memory_message(mo.batch_size, mo.resolution, mo.ae_dims,
                                     resolve_device(opts.device))

    def run() -> TrainReport:
        return out_of_memory_guard(
            lambda: _run(setup_sae(ws, opts, reporter, ranks), opts, reporter, stop, on_log),
            message)

    if ranks.world == 1:  # nothing of torch.distributed
        return run()
    from facelab.train import ddp

    with ddp.process_group(ranks, ddp.device_for(opts.device, ranks)):
        return run()


class _Sae:
    """The SAE family's part of a run (`loop.Family`): batches from the sample loader,
    TrainStep, saves and the 5-row preview. Data-parallel (`sync`), a rank other than 0
    checks what a save would refuse (so it rolls back with rank 0) and writes nothing."""

    def __init__(self, setup: SaeSetup, opts: TrainOptions, start: int,
                 warn: Callable[[str], None], sync: Any = None) -> None:
        self.setup = setup
        self.opts = opts
        self.warn = warn
        self.sync = sync  # ddp.StepSync, data-parallel only
        setup.step.sync = sync
        mo, pretrain = setup.mo, setup.pretrain
        sample_opts = SampleOptions(
            random_warp=not pretrain, random_flip=mo.random_flip,
            src_scale=0.0 if pretrain else mo.src_scale_mod / 100,
            yaw_sorted=mo.sort_by_yaw, eyes_mouth=mo.eyes_mouth_priority, seed=opts.seed,
        )
        ranks = setup.ranks
        self.batches = make_loader(setup.src_faces, setup.dst_faces, mo.batch_size, sample_opts,
                                   opts.workers, start, (ranks.rank, ranks.world))
        self.preview_src = fixed_faces(setup.src_faces, PREVIEW_FACES,
                                       None if pretrain else opts.preview_src)
        self.preview_dst = fixed_faces(setup.dst_faces, len(self.preview_src),
                                       None if pretrain else opts.preview_dst)
        self.preview_path = setup.folder / f"{setup.name}_preview.png"
        self.history_dir = setup.folder / f"{setup.name}_history"
        self.start = start
        # where a collapse rolls back to before this run saves: the save it resumed, or
        # (new, or just left pretraining) these weights with a fresh optimizer
        self.initial = ({k: v.detach().cpu().clone() for k, v in setup.model.state_dict().items()}
                        if setup.fresh else None)

    def step(self, iteration: int) -> tuple[float, float]:
        r = self.setup  # the loader's batches follow the iteration from `start` on
        batch = {k: v.to(r.device, non_blocking=True) for k, v in next(self.batches).items()}
        return r.step(batch)

    def save(self, iteration: int, history: list[list[float]], backup: bool) -> None:
        r = self.setup
        doc = {"iteration": iteration, "options": asdict(r.mo), "history": history,
               "pretrain": r.pretrain, "family": FAMILY, "lr": self.lr}
        if r.ranks.world > 1:
            doc["ranks"] = r.ranks.world  # a resume on another count changes the batches
        if r.ranks.lead:
            checkpoint.save(
                r.folder, r.name, r.model, r.step.optimizer, doc, arch=r.mo.arch,
                fixed_options=fixed_of(r.mo), keep_backups=self.opts.keep_backups,
                backup=backup)
        else:
            check_savable(r.name, r.model, r.step.optimizer)
        if self.sync is not None:
            self.sync.saved()
        self.initial = None  # from now on the save is where a collapse goes back to

    def rollback(self) -> int:
        r = self.setup
        lr = self.lr
        if self.initial is None:
            state = checkpoint.load(r.folder, r.name, r.model, r.step.optimizer,
                                    expected_arch=r.mo.arch, fixed_options=fixed_of(r.mo),
                                    warn=self.warn, restore_rng=False)
            r.step.set_lr(lr)
            return int(state.get("iteration", 0))
        r.model.load_state_dict(self.initial)
        r.step = TrainStep(r.model, r.mo, r.device, r.precision, lr=lr,
                           forward=r.forward)  # type: ignore[arg-type]
        r.step.sync = self.sync
        return self.start

    @property
    def lr(self) -> float:
        return float(self.setup.step.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        self.setup.step.set_lr(lr)

    def preview(self, iteration: int, history: list[list[float]]) -> None:
        r = self.setup
        if not r.ranks.lead:
            return
        write_preview(self.preview_path, r.model, self.preview_src, self.preview_dst, history)
        if r.mo.preview_history:
            write_history(self.history_dir, iteration, r.model, self.preview_src,
                          self.preview_dst)

    def close(self) -> None:
        close = getattr(self.batches, "close", None)
        if close is not None:
            close()


def _run(setup: SaeSetup, opts: TrainOptions, reporter: Reporter, stop: threading.Event | None,
         on_log: LogFn | None) -> TrainReport:
    """Step the SAE model of `setup` through the shared loop; the report of the run."""
    r = setup
    start = int(r.state.get("iteration", 0))
    reporter.status(f"Starting {opts.workers} sample worker(s) …" if opts.workers
                    else "Preparing samples …")
    world, sync, loop_opts, loop_stop = r.ranks.world, None, opts, stop
    if world > 1:  # the ranks agree on stops, saves and previews through the step's sums
        from facelab.train.ddp import agreeing

        sync, loop_opts, loop_stop = agreeing(opts, r.ranks, r.model.parameters(), stop)
    family = _Sae(r, opts, start, reporter.warn, sync)
    batch = (f"batch {r.mo.batch_size}" if world == 1 else
             f"{world} ranks × batch {r.mo.batch_size} = {world * r.mo.batch_size}")
    reporter.info(
        f"{'Resuming' if start else 'Creating'} model {r.name!r} ({r.mo.preset}, "
        f"{r.mo.arch}, resolution {r.mo.resolution}) at iteration {start} on "
        f"{describe(r.device)}, {batch}, {r.precision} "
        f"({r.precision_reason}){lr_note(r.lr, LR)}"
        f"{', pretraining on ' + r.src_faces.name if r.pretrain else ''}."
    )
    reporter.status("Waiting for the first batch …")
    r.model.train()
    loop = Loop(family, loop_opts, reporter, on_log, start=start,
                history=list(r.state.get("history", [])), target=r.mo.target_iteration)
    done = loop.run(loop_stop)
    return TrainReport(
        model_name=r.name, options=r.mo, start_iteration=done.start, iteration=done.iteration,
        resumed=r.resumed, stopped=done.stopped, device=str(r.device),
        ms_per_iter=done.ms_per_iter, losses=done.losses,
        preview=family.preview_path if done.previewed else None, precision=r.precision,
        ranks=world,
    )
