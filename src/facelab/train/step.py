"""One training step: DeepFaceLab's losses, mixed precision and the three optimizer modes.

Kept apart from the loop (trainer.py) so that the bench times exactly what training runs.
The optimizer is Adam with lr 5e-5 and betas (0.5, 0.999), the settings of DeepFaceLab's
Keras-era models. Optimizer modes trade speed for accelerator memory as DeepFaceLab's do:
1 keeps everything on the device; 2 keeps Adam's moments and a master copy of the weights in
host memory (on a CPU that is where they already are, so 2 is 1); 3 adds activation
recomputation in the encoder and decoders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facelab.device import autocast, needs_grad_scaler
from facelab.errors import FacelabError
from facelab.options import PRECISIONS
from facelab.train.losses import (
    background_style_loss,
    face_style_loss,
    image_loss,
    mask_loss,
    mse,
    priority_loss,
)
from facelab.train.models import ModelOptions, set_recompute

LR, BETAS = 5e-5, (0.5, 0.999)
RESOLVED = tuple(p for p in PRECISIONS if p != "auto")  # what `auto` resolves to
GRAY_BORDER_WEIGHT = 2.0  # MSE over the whole crop, so the border learns dst's pixels


class HostAdam:
    """Adam whose state and master weights live in host memory (optimizer mode 2).

    Each step copies the gradients to the host, steps there and copies the weights back:
    slower, but the device holds only the weights and one set of gradients.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float]):
        self.params = list(params)
        self.host = [p.detach().to("cpu", copy=True).requires_grad_(True) for p in self.params]
        self.inner = torch.optim.Adam(self.host, lr=lr, betas=betas)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for p, h in zip(self.params, self.host, strict=True):
            h.grad = None if p.grad is None else p.grad.detach().to("cpu")
        self.inner.step()
        with torch.no_grad():
            for p, h in zip(self.params, self.host, strict=True):
                p.copy_(h, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
        with torch.no_grad():  # the host copies follow the weights loaded into the model
            for p, h in zip(self.params, self.host, strict=True):
                h.copy_(p.detach().cpu())


def _scales(out: dict[str, torch.Tensor], key: str) -> list[torch.Tensor]:
    """The multiscale decoder's lower-resolution outputs for `key` (named key_<size>)."""
    return [v for k, v in out.items() if k.startswith(f"{key}_") and k[len(key) + 1:].isdigit()]


def _down(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="area")


def side_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], side: str,
              mo: ModelOptions) -> torch.Tensor:
    """One side's reconstruction loss (mean over the batch): masked image loss, the learned
    mask, the multiscale outputs, eyes-and-mouth priority and the gray-border term."""
    key = f"{side}_{side}"
    pred, target, mask = out[key], batch[f"{side}_target"], batch[f"{side}_mask"]
    pixel = "mse" if mo.pixel_loss else None
    loss = image_loss(pred, target, mask, pixel).mean()
    for small in _scales(out, key):
        size = small.shape[-1]
        loss = loss + image_loss(small, _down(target, size), _down(mask, size), pixel).mean()
    if mo.learn_mask:
        loss = loss + mask_loss(out[f"{key}_mask"], mask).mean()
    em = batch.get(f"{side}_em")
    if mo.eyes_mouth_priority and em is not None:
        loss = loss + priority_loss(pred, target, em).mean()
    if mo.remove_gray_border:  # the whole crop but what the segmenter marked occluded
        keep = batch.get(f"{side}_keep")
        err = mse(pred, target) if keep is None else \
            ((pred.float() - target.float()).square() * keep).mean(dim=(1, 2, 3))
        loss = loss + GRAY_BORDER_WEIGHT * err.mean()
    return loss


def style_loss(swapped: torch.Tensor, batch: dict[str, torch.Tensor],
               mo: ModelOptions) -> torch.Tensor:
    """Face and background style of the swap (dst→src) against dst, added to src's loss as
    SAEHD does."""
    target, mask = batch["dst_target"], batch["dst_mask"]
    loss = swapped.new_zeros(())
    if mo.face_style_power:
        loss = loss + face_style_loss(swapped, target, mask, mo.face_style_power).mean()
    if mo.bg_style_power:
        loss = loss + background_style_loss(swapped, target, mask, mo.bg_style_power).mean()
    return loss


class TrainStep:
    """forward + losses + backward + Adam for one batch, in the chosen precision and mode."""

    def __init__(self, model: nn.Module, mo: ModelOptions, device: torch.device,
                 precision: str = "fp32", optimizer_mode: int | None = None,
                 lr: float = LR, forward: nn.Module | None = None) -> None:
        if precision not in RESOLVED:
            raise FacelabError(f"Precision must be {', '.join(RESOLVED)}, not {precision!r}.")
        mode = mo.optimizer_mode if optimizer_mode is None else optimizer_mode
        if mode >= 2 and precision == "fp16":
            raise FacelabError("Optimizer modes 2 and 3 work with --precision bf16 or fp32, "
                               "not fp16.")
        self.model, self.mo, self.device = model, mo, device
        self.forward_model = forward if forward is not None else model  # e.g. torch.compile
        self.precision = precision
        set_recompute(model, mode == 3)
        self.optimizer: Any
        if mode >= 2 and device.type != "cpu":
            self.optimizer = HostAdam(model.parameters(), lr, BETAS)
        else:
            self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=BETAS)
        self.scaler = (torch.amp.GradScaler(device.type)
                       if needs_grad_scaler(device, precision) else None)
        # data-parallel (ddp.StepSync): gradients and (src, dst) losses → the ranks' means
        self.sync: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(src, dst) losses with the graph kept, for `backward` (or a FLOP counter)."""
        mo = self.mo
        with autocast(self.device, self.precision):
            out = self.forward_model(batch["src"], batch["dst"])
            src = side_loss(out, batch, "src", mo)
            dst = side_loss(out, batch, "dst", mo)
            if mo.face_style_power or mo.bg_style_power:
                swapped, _ = self.model.swap(batch["dst"])  # type: ignore[operator]
                src = src + style_loss(swapped, batch, mo)
        return src, dst

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        src, dst = self.forward_losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total = src + dst
        (total if self.scaler is None else self.scaler.scale(total)).backward()
        if self.sync is not None:  # before the step, so every rank steps alike
            src, dst = self.sync(torch.stack([src.detach().float(), dst.detach().float()]))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return src.item(), dst.item()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
