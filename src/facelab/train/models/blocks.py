"""Convolution blocks of DeepFaceLab's autoencoders, plus a convolution-aware initialisation.

Only plain Conv2d / LeakyReLU / PixelShuffle ops are used so every block runs on any device
and in channels_last memory format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Downscale(nn.Sequential):
    """Halve height and width: conv k5 stride 2 + LeakyReLU 0.1."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 5) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=2, padding=kernel_size // 2),
            nn.LeakyReLU(0.1),
        )


class Upscale(nn.Sequential):
    """Double height and width: conv k3 to 4·C + LeakyReLU 0.1 + PixelShuffle(2).

    Sub-pixel upscaling is cheaper than transposed convolutions for the same output.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch * 4, kernel_size, padding=kernel_size // 2),
            nn.LeakyReLU(0.1),
            nn.PixelShuffle(2),
        )


class Residual(nn.Module):
    """Two k3 convs with a skip; LeakyReLU 0.2 after the first conv and after the sum."""

    def __init__(self, ch: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv2d(ch, ch, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(x), 0.2)
        return F.leaky_relu(x + self.conv2(y), 0.2)


def pixel_norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-6) -> torch.Tensor:
    """Scale each code vector to unit RMS (the `u` architecture variant), bounding its size."""
    return x * torch.rsqrt(x.pow(2).mean(dim=dim, keepdim=True) + eps)


@torch.no_grad()
def icnr_(weight: torch.Tensor, scale: int = 2, gain: float = 1.0) -> None:
    """ICNR: make a conv feeding PixelShuffle(scale) start as a nearest-neighbour upscale.

    An orthogonal kernel for C outputs is repeated scale² times, so the 2×2 sub-pixels begin
    identical and the upscale starts free of checkerboard artefacts.
    """
    out_ch, in_ch, kh, kw = weight.shape
    group = scale * scale
    sub = torch.empty(out_ch // group, in_ch, kh, kw, dtype=weight.dtype, device=weight.device)
    nn.init.orthogonal_(sub, gain=gain)
    weight.copy_(sub.repeat_interleave(group, dim=0))


@torch.no_grad()
def conv_aware_init_(module: nn.Module) -> None:
    """Our substitute for DeepFaceLab's convolution-aware (CA) init.

    CA init draws filters that are orthogonal in the Fourier domain; orthogonal filters over
    the flattened fan-in give the same decorrelation property without an FFT, and the
    convs feeding a PixelShuffle get ICNR on top. Biases start at zero; Linear layers keep
    PyTorch's default.
    """
    gain = nn.init.calculate_gain("leaky_relu", 0.1)
    shuffled = set()
    for m in module.modules():
        if isinstance(m, Upscale):
            conv = m[0]
            icnr_(conv.weight, gain=gain)
            shuffled.add(id(conv))
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if id(m) not in shuffled:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
