"""Training losses of DeepFaceLab's SAEHD, as plain functions on NCHW tensors.

Every loss returns one value per sample (shape N), as DeepFaceLab does; take `.mean()` (or the
sum, like DeepFaceLab's gradients) to train. Inputs are cast to float32 and autocast is turned
off inside the structural terms, because SSIM's differences of squared means lose almost all
precision in bf16. Masks are N×1×H×W in [0, 1] and broadcast over the channels.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Pixel = Literal["l1", "mse"]


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.float()


def _no_autocast(x: torch.Tensor) -> torch.autocast:
    return torch.autocast(x.device.type, enabled=False)


def _gaussian_kernel(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    """DeepFaceLab's window: a softmax of -r²/2σ², i.e. a normalised 2-D Gaussian."""
    coords = torch.arange(size, dtype=torch.float32, device=like.device) - (size - 1) / 2.0
    g = coords**2 * (-0.5 / sigma**2)
    g = (g[None, :] + g[:, None]).reshape(-1).softmax(0).reshape(1, 1, size, size)
    return g.expand(channels, 1, size, size)


def dssim_filter_size(resolution: int, divisor: float = 11.6) -> int:
    """DeepFaceLab's window size, int(res/11.6), kept at least 1 so tiny images still work."""
    return max(1, int(resolution / divisor))


def dssim(
    a: torch.Tensor,
    b: torch.Tensor,
    filter_size: int,
    max_val: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural dissimilarity (1 - SSIM) / 2 with a Gaussian window, 'valid' padding."""
    with _no_autocast(a):
        a, b = _f32(a), _f32(b)
        ch = a.shape[1]
        size = min(filter_size, a.shape[-2], a.shape[-1])
        kernel = _gaussian_kernel(size, sigma, ch, a)

        def reduce(x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, kernel, groups=ch)

        c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
        mean_a, mean_b = reduce(a), reduce(b)
        num0 = mean_a * mean_b * 2.0
        den0 = mean_a.square() + mean_b.square()
        luminance = (num0 + c1) / (den0 + c1)
        num1 = reduce(a * b) * 2.0
        den1 = reduce(a.square() + b.square())
        cs = (num1 - num0 + c2) / (den1 - den0 + c2)
        ssim = (luminance * cs).mean(dim=(1, 2, 3))
        return (1.0 - ssim) / 2.0


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (_f32(a) - _f32(b)).square().mean(dim=(1, 2, 3))


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (_f32(a) - _f32(b)).abs().mean(dim=(1, 2, 3))


def gaussian_blur(x: torch.Tensor, radius: float) -> torch.Tensor:
    """DeepFaceLab's blur: odd kernel of max(3, int(4·radius)) taps, zero padding."""
    size = max(3, int(4 * radius))
    size += 1 - size % 2
    taps = torch.arange(size, dtype=torch.float32, device=x.device) - size // 2
    g = torch.exp(-(taps**2) / (2 * radius**2))
    k2d = torch.outer(g, g)
    k2d = (k2d / k2d.sum()).expand(x.shape[1], 1, size, size)
    with _no_autocast(x):
        return F.conv2d(_f32(x), k2d, padding=size // 2, groups=x.shape[1])


def soft_mask(mask: torch.Tensor, radius: float | None = None) -> torch.Tensor:
    """Blurred then clip(0, 0.5)·2: the face stays fully weighted, the edge fades out."""
    radius = radius if radius is not None else max(1, mask.shape[-1] // 32)
    return gaussian_blur(mask, radius).clamp(0.0, 0.5) * 2.0


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of the masked images, so the background does not cost capacity."""
    m = _f32(mask)
    return mse(_f32(pred) * m, _f32(target) * m)


def image_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, pixel: Pixel | None = None
) -> torch.Tensor:
    """DeepFaceLab's reconstruction loss on masked images, picked by resolution.

    res < 256: 10·DSSIM(res/11.6) + 10·MSE; res ≥ 256: 5·DSSIM(res/11.6) + 5·DSSIM(res/23.2)
    + 10·MSE (two scales, since one small window misses coarse structure at high res).
    With `pixel`, the structural terms become 10·L1 or 10·MSE, for users who prefer them.
    """
    m = _f32(mask)
    p, t = _f32(pred) * m, _f32(target) * m
    res = pred.shape[-1]
    if pixel is not None:
        structural = 10 * (l1(p, t) if pixel == "l1" else mse(p, t))
    elif res < 256:
        structural = 10 * dssim(p, t, dssim_filter_size(res))
    else:
        structural = 5 * dssim(p, t, dssim_filter_size(res)) + 5 * dssim(
            p, t, dssim_filter_size(res, 23.2)
        )
    return structural + 10 * mse(p, t)


def mask_loss(pred_mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """10·MSE between the predicted and the target mask."""
    return 10 * mse(pred_mask, target_mask)


def priority_loss(
    pred: torch.Tensor, target: torch.Tensor, weight_map: torch.Tensor, weight: float = 300.0
) -> torch.Tensor:
    """300·L1 inside the eyes-and-mouth weight map, where DeepFaceLab wants extra detail."""
    w = _f32(weight_map)
    return weight * l1(_f32(pred) * w, _f32(target) * w)


def moments_loss(content: torch.Tensor, style: torch.Tensor, weight: float) -> torch.Tensor:
    """Squared differences of per-channel mean and std, times weight / channels."""
    c, s = _f32(content), _f32(style)
    c_var, c_mean = torch.var_mean(c, dim=(2, 3), unbiased=False)
    s_var, s_mean = torch.var_mean(s, dim=(2, 3), unbiased=False)
    c_std, s_std = torch.sqrt(c_var + 1e-5), torch.sqrt(s_var + 1e-5)
    total = (c_mean - s_mean).square().sum(1) + (c_std - s_std).square().sum(1)
    return total * (weight / c.shape[1])


def face_style_loss(
    pred_swap: torch.Tensor, target_dst: torch.Tensor, dst_mask: torch.Tensor, power: float
) -> torch.Tensor:
    """Pull the swapped face's colour statistics to dst's: 10000·power/100 on moments.

    `power` is the user's 0..100 option; both images are blurred by res/16 first so the
    loss matches tone, not texture.
    """
    m = _f32(dst_mask)
    radius = max(1, pred_swap.shape[-1] // 16)
    p = gaussian_blur(_f32(pred_swap) * m, radius)
    t = gaussian_blur(_f32(target_dst) * m, radius)
    return moments_loss(p, t, 10000 * power / 100)


def background_style_loss(
    pred_swap: torch.Tensor, target_dst: torch.Tensor, dst_mask: torch.Tensor, power: float
) -> torch.Tensor:
    """(10·power/100)·(DSSIM + MSE) outside the mask, so the swap keeps dst's background."""
    inv = 1.0 - _f32(dst_mask)
    p, t = _f32(pred_swap) * inv, _f32(target_dst) * inv
    res = pred_swap.shape[-1]
    return (10 * power / 100) * (dssim(p, t, dssim_filter_size(res)) + mse(p, t))


__all__ = [
    "background_style_loss",
    "dssim",
    "dssim_filter_size",
    "face_style_loss",
    "gaussian_blur",
    "image_loss",
    "l1",
    "mask_loss",
    "masked_mse",
    "moments_loss",
    "mse",
    "priority_loss",
    "soft_mask",
]
