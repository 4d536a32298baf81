"""Training the segmenter: the loss, one optimiser step, a timed run, the evaluation.

The loss is binary cross-entropy (every pixel right) plus soft Dice (the face's extent right
however small it is in the crop). The run is budgeted in CPU minutes, steps or a wall-clock
deadline, with the learning rate on a cosine from `lr` to 5 % of it over the budget, and it
reports a line every `report_s` seconds. Batches come from a caller's `batch(step)`, so
this module knows nothing of where faces come from: `tools/train_segmenter.py` and a
per-person fine-tuning both drive it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from facelab.segment.network import SegNet, predict_masks, to_input

Batch = tuple[np.ndarray, np.ndarray]  # N×R×R×3 uint8 images, N×R×R float32 labels


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice on N×1×R×R logits and targets in [0, 1]."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def tensors(batch: Batch, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = batch
    return to_input(images, resolution), torch.from_numpy(np.ascontiguousarray(labels))[:, None]


def train_step(net: SegNet, opt: torch.optim.Optimizer, batch: Batch) -> float:
    """One Adam step on a batch; returns the loss before the step."""
    net.train()
    x, y = tensors(batch, net.resolution)
    loss = seg_loss(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


@dataclass
class RunReport:
    steps: int = 0
    seconds: float = 0.0  # wall
    cpu_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # mean loss per report interval


def run(net: SegNet, batch: Callable[[int], Batch], *, minutes: float | None = None,
        steps: int | None = None, wall_minutes: float | None = None, lr: float = 2e-3,
        report_s: float = 30.0, log: Callable[[str], None] = print) -> RunReport:
    """Train until `minutes` of this process's CPU time (the same work on a busy machine),
    `steps` or `wall_minutes` (a deadline), whichever comes first; Adam with a cosine
    learning rate over whichever budget is nearest its end. Batch `step` is `batch(step)`."""
    if minutes is None and steps is None and wall_minutes is None:
        raise ValueError("give minutes, steps or wall_minutes")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    cpu_budget = minutes * 60 if minutes is not None else math.inf
    wall_budget = wall_minutes * 60 if wall_minutes is not None else math.inf
    cpu0, wall0 = time.process_time(), time.monotonic()
    last = wall0
    report, window = RunReport(), []
    step = 0
    while True:
        frac = max((time.process_time() - cpu0) / cpu_budget,
                   (time.monotonic() - wall0) / wall_budget, step / steps if steps else 0.0)
        if frac >= 1:
            break
        for g in opt.param_groups:
            g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        window.append(train_step(net, opt, batch(step)))
        step += 1
        if time.monotonic() - last >= report_s:
            last = time.monotonic()
            report.losses.append(float(np.mean(window)))
            log(f"step {step}  cpu {time.process_time() - cpu0:5.0f} s  wall "
                f"{last - wall0:5.0f} s  loss {report.losses[-1]:.4f}  "
                f"lr {opt.param_groups[0]['lr']:.2e}")
            window = []
    if window:
        report.losses.append(float(np.mean(window)))
    report.steps = step
    report.cpu_seconds, report.seconds = time.process_time() - cpu0, time.monotonic() - wall0
    return report


def predict(net: SegNet, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Masks of many faces, `batch` at a time."""
    return np.concatenate([predict_masks(net, images[i:i + batch])
                           for i in range(0, len(images), batch)])


def time_inference(net: SegNet, threads: int, runs: int = 50) -> dict[str, float]:
    """Milliseconds for one face (batch 1, fp32) with `threads` torch threads: the median
    wall time, and the median CPU time of this process (with one thread, what the wall
    time would be on an idle core: the figure that holds on a shared, busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(1, 3, net.resolution, net.resolution)
        net.eval()
        wall, cpu = [], []
        with torch.inference_mode():
            for _ in range(5):
                net(x)
            for _ in range(runs):
                t, c = time.perf_counter(), time.process_time()
                net(x)
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
    finally:
        torch.set_num_threads(before)
    return {"wall_ms": round(1000 * float(np.median(wall)), 2),
            "cpu_ms": round(1000 * float(np.median(cpu)), 2)}
