"""Data-parallel training: one process per rank, one all-reduce per step.

A run under `torchrun` (or `facelab train --nproc N`, cli/train_launch.py) finds RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its environment (`Ranks.from_env`).
Every rank builds the same model from the same seed (or the same save), draws its own
slice of each global batch (data.PairStream's `shard`) and steps; `StepSync` then sums, in
one buffer, every gradient, the two losses and the caller's requests (stop, save now,
preview now, rank 0's autosave clock) and divides the sums by the rank count. The losses
are means over each rank's equal slice, so the averaged gradient is the one of the whole
global batch, and every rank applies the same Adam update to the same weights: they stay
identical without a broadcast. Every rank sees the same losses and requests, so all decide
alike when to save, stop or roll back; only rank 0 writes (trainer.py). An explicit
all-reduce rather than DistributedDataParallel: it needs no wrapper around the model (its
`swap` for the style losses, torch.compile and recomputation stay as they are) and costs
one collective per step on these small models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import threading
import time
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from facelab.device import choose_precision, resolve_device
from facelab.errors import FacelabError
from facelab.train.loop import RunControl, _take
from facelab.train.run_options import Ranks, TrainOptions
from facelab.train.step import RESOLVED

TIMEOUT = datetime.timedelta(minutes=10)  # a rank waiting longer on its peers gives up


def device_for(spec: str, ranks: Ranks) -> torch.device:
    """The rank's device: `auto` or `cuda` is GPU LOCAL_RANK where CUDA is available."""
    if ranks.world > 1 and ":" in spec:  # every rank on one GPU: nccl refuses it
        raise FacelabError(f"--device {spec} would put every rank on one device: give auto "
                           "or cuda (rank r trains on GPU LOCAL_RANK), or cpu.")
    if ranks.world == 1 or spec not in ("auto", "cuda") or not torch.cuda.is_available():
        return resolve_device(spec)
    count = torch.cuda.device_count()
    if ranks.local >= count:
        raise FacelabError(f"Rank {ranks.rank} would use GPU {ranks.local}, but this machine "
                           f"has {count}: start at most {count} ranks per machine.")
    return torch.device("cuda", ranks.local)


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """torch.distributed set up for the run (nccl on CUDA, gloo elsewhere), torn down after."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, init_method="env://", rank=ranks.rank,
                                world_size=ranks.world, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as exc:
        raise FacelabError(f"Rank {ranks.rank} of {ranks.world} could not join the others "
                           f"({str(exc).splitlines()[0]}).") from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def device_and_precision(device_spec: str, precision_spec: str,
                         ranks: Ranks) -> tuple[torch.device, str, str]:
    """The rank's device, and its precision with the reason: `auto` is measured on rank 0
    alone (measured on each, it could come out differently) and taken by all."""
    device = device_for(device_spec, ranks)
    if precision_spec != "auto":
        return device, *choose_precision(precision_spec, device)
    pick = torch.zeros(1, dtype=torch.int64, device=device)
    reason = "rank 0's choice"
    if ranks.lead:
        value, reason = choose_precision("auto", device)
        pick[0] = RESOLVED.index(value)
    dist.broadcast(pick, src=0)
    return device, RESOLVED[int(pick[0])], reason


def agreeing(opts: TrainOptions, ranks: Ranks, params: Iterable[nn.Parameter],
             stop: threading.Event | None) -> tuple[StepSync, TrainOptions, RunControl]:
    """A run's StepSync, and the loop's options and stop event that follow it: the loop's
    own autosave clock is off (rank 0's, in the sync, asks for saves on every rank)."""
    shared = RunControl()
    sync = StepSync(params, ranks, opts.autosave_minutes * 60, stop, shared)
    return sync, dataclasses.replace(opts, autosave_minutes=math.inf), shared


class StepSync:
    """Called by TrainStep between backward and the optimizer: makes every rank's gradients
    their mean, returns the ranks' mean losses, and turns the requests on each rank (`local`)
    into the same requests on all (`shared`, the loop's stop event) in the same all-reduce.

    Rank 0 also asks for a save every `autosave_s` (the loop's own clock is off: each rank's
    would fire at another iteration); `saved()` restarts that clock."""

    def __init__(self, params: Iterable[nn.Parameter], ranks: Ranks, autosave_s: float,
                 local: threading.Event | None, shared: threading.Event) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.ranks, self.autosave_s = ranks, autosave_s
        self.local, self.shared = local, shared
        self.saved()

    def saved(self) -> None:
        self.last_save = time.monotonic()

    def _requests(self) -> list[float]:
        """(stop, save now, preview now) asked on this rank, each request taken once."""
        stop = self.local is not None and self.local.is_set()
        save = _take(getattr(self.local, "save_now", None)) or (
            self.ranks.lead and time.monotonic() - self.last_save >= self.autosave_s)
        return [float(stop), float(save), float(_take(getattr(self.local, "preview_now", None)))]

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        grads = [p.grad for p in self.params if p.grad is not None]  # alike on every rank
        like = grads[0] if grads else losses
        asks = torch.tensor(self._requests(), dtype=like.dtype).to(like.device)
        flat = torch.cat([*(g.reshape(-1) for g in grads), losses.to(like.dtype), asks])
        dist.all_reduce(flat)
        flat.div_(self.ranks.world)
        at = 0
        for g in grads:
            g.copy_(flat[at:at + g.numel()].view_as(g))
            at += g.numel()
        mean, asked = flat[at:at + len(losses)], flat[at + len(losses):].tolist()
        stop, save, preview = (v > 0 for v in asked)
        if stop:
            self.shared.set()
        for event, wanted in ((getattr(self.shared, "save_now", None), save),
                              (getattr(self.shared, "preview_now", None), preview)):
            if wanted and event is not None:
                event.set()
        return mean
