"""The SAE-family networks: Encoder, Inter, Decoder and the DF / LIAE assemblies.

Shapes follow DeepFaceLab's SAEHD (see shared/REFERENCE.md); the code is our own. Every
model exposes `forward(src, dst)` for training and `swap(dst)` for the dst→src swap. Images
are NCHW float in [0, 1]; outputs pass through a sigmoid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from facelab.train.models.blocks import Downscale, Residual, Upscale, pixel_norm
from facelab.train.models.options import ModelOptions

DecoderOut = tuple[Tensor, Tensor | None, dict[int, Tensor]]


class _Recomputable(nn.Module):
    """A part whose activations may be recomputed in the backward pass instead of kept
    (optimizer mode 3: slower, much less memory); off unless `set_recompute` turns it on."""

    recompute = False

    def run(self, module: nn.Module, x: Tensor) -> Tensor:
        if self.recompute and self.training and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)


def set_recompute(model: nn.Module, on: bool) -> None:
    """Turn activation recomputation on or off in every encoder and decoder of `model`."""
    for m in model.modules():
        if isinstance(m, _Recomputable):
            m.recompute = on


class Encoder(_Recomputable):
    """Four Downscales (e·{1,2,4,8} channels) to res/16, flattened to one code per image."""

    def __init__(self, e_dims: int, use_pixel_norm: bool = False, in_ch: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for mult in (1, 2, 4, 8):
            layers.append(Downscale(in_ch, e_dims * mult))
            in_ch = e_dims * mult
        self.down = nn.Sequential(*layers)
        self.out_ch = in_ch
        self.use_pixel_norm = use_pixel_norm

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.down:
            x = self.run(layer, x)
        code = torch.flatten(x, 1)
        return pixel_norm(code) if self.use_pixel_norm else code


class Inter(nn.Module):
    """Dense(ae_dims) → Dense(lowest²·C) → reshape → Upscale: the bottleneck of the model."""

    def __init__(self, in_features: int, ae_dims: int, out_ch: int, lowest: int) -> None:
        super().__init__()
        self.dense1 = nn.Linear(in_features, ae_dims)
        self.dense2 = nn.Linear(ae_dims, lowest * lowest * out_ch)
        self.up = Upscale(out_ch, out_ch)
        self.out_ch, self.lowest = out_ch, lowest

    def forward(self, code: Tensor) -> Tensor:
        x = self.dense2(self.dense1(code))
        return self.up(x.view(-1, self.out_ch, self.lowest, self.lowest))


class Decoder(_Recomputable):
    """3 × (Upscale + Residual) with d·{8,4,2} channels to an RGB image, plus a mask branch.

    `double_res` ends in a conv to 4× the channels and a PixelShuffle, so the output has
    twice the decoder's resolution at little cost. `multiscale` adds RGB outputs after the
    first two stages (keyed by their size) for a multiscale loss.
    """

    def __init__(
        self,
        in_ch: int,
        d_dims: int,
        d_mask_dims: int,
        learn_mask: bool = True,
        double_res: bool = False,
        multiscale: bool = False,
    ) -> None:
        super().__init__()
        chans = [d_dims * 8, d_dims * 4, d_dims * 2]
        stages: list[nn.Module] = []
        c = in_ch
        for o in chans:
            stages.append(nn.Sequential(Upscale(c, o), Residual(o)))
            c = o
        self.stages = nn.ModuleList(stages)
        k = 3 if double_res else 1
        self.out = nn.Conv2d(c, 12 if double_res else 3, k, padding=k // 2)
        self.shuffle: nn.Module = nn.PixelShuffle(2) if double_res else nn.Identity()
        self.ms_out = nn.ModuleList(nn.Conv2d(o, 3, 1) for o in chans[:2]) if multiscale else None
        self.mask: nn.Sequential | None = None
        if learn_mask:
            mchans = [d_mask_dims * 8, d_mask_dims * 4, d_mask_dims * 2]
            layers: list[nn.Module] = []
            c = in_ch
            for o in mchans:
                layers.append(Upscale(c, o))
                c = o
            layers.append(nn.Conv2d(c, 4 if double_res else 1, 1))
            layers.append(nn.PixelShuffle(2) if double_res else nn.Identity())
            self.mask = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> DecoderOut:
        """Return (image, mask or None, {size: lower-resolution image} when multiscale)."""
        extras: dict[int, Tensor] = {}
        x = z
        for i, stage in enumerate(self.stages):
            x = self.run(stage, x)
            if self.ms_out is not None and i < len(self.ms_out):
                extras[x.shape[-1]] = torch.sigmoid(self.ms_out[i](x))
        image = torch.sigmoid(self.shuffle(self.out(x)))
        mask = torch.sigmoid(self.mask(z)) if self.mask is not None else None
        return image, mask, extras


def _named(prefix: str, out: DecoderOut) -> dict[str, Tensor]:
    image, mask, extras = out
    named = {prefix: image}
    if mask is not None:
        named[f"{prefix}_mask"] = mask
    named.update({f"{prefix}_{size}": t for size, t in extras.items()})
    return named


def _split(out: DecoderOut) -> tuple[DecoderOut, DecoderOut]:
    """Split a decoder output computed on cat([a, b]) back into a's and b's."""
    image, mask, extras = out
    ia, ib = image.chunk(2)
    ma, mb = mask.chunk(2) if mask is not None else (None, None)
    ea = {k: v.chunk(2)[0] for k, v in extras.items()}
    eb = {k: v.chunk(2)[1] for k, v in extras.items()}
    return (ia, ma, ea), (ib, mb, eb)


class _SAEModel(nn.Module):
    """Shared set-up: the encoder and the bottleneck geometry."""

    def __init__(self, opts: ModelOptions) -> None:
        super().__init__()
        opts.validate()
        self.opts = opts
        variants = opts.arch_variants
        self.double_res = "d" in variants
        self.lowest = opts.resolution // (32 if self.double_res else 16)
        self.encoder = Encoder(opts.e_dims, use_pixel_norm="u" in variants)
        self.code_features = self.encoder.out_ch * (opts.resolution // 16) ** 2

    def _decoder(self, in_ch: int) -> Decoder:
        o = self.opts
        return Decoder(
            in_ch, o.d_dims, o.d_mask_dims, o.learn_mask, self.double_res, o.multiscale_decoder
        )


class DF(_SAEModel):
    """`df`: one encoder, one inter, decoder_src and decoder_dst; swap = src decoder on dst."""

    def __init__(self, opts: ModelOptions) -> None:
        super().__init__(opts)
        self.inter = Inter(self.code_features, opts.ae_dims, opts.ae_dims, self.lowest)
        self.decoder_src = self._decoder(opts.ae_dims)
        self.decoder_dst = self._decoder(opts.ae_dims)

    def forward(self, src: Tensor, dst: Tensor) -> dict[str, Tensor]:
        z_src, z_dst = self.inter(self.encoder(torch.cat([src, dst]))).chunk(2)
        return _named("src_src", self.decoder_src(z_src)) | _named(
            "dst_dst", self.decoder_dst(z_dst)
        )

    def swap(self, dst: Tensor) -> tuple[Tensor, Tensor | None]:
        image, mask, _ = self.decoder_src(self.inter(self.encoder(dst)))
        return image, mask


class LIAE(_SAEModel):
    """`liae`: one encoder, inter_AB and inter_B (2·ae_dims channels each), one decoder.

    src code = [AB(src), AB(src)], dst code = [B(dst), AB(dst)], swap = [AB(dst), AB(dst)]:
    inter_B holds what is specific to dst, so dropping it moves a dst face toward src.
    """

    def __init__(self, opts: ModelOptions) -> None:
        super().__init__(opts)
        ch = opts.ae_dims * 2
        self.inter_ab = Inter(self.code_features, opts.ae_dims, ch, self.lowest)
        self.inter_b = Inter(self.code_features, opts.ae_dims, ch, self.lowest)
        self.decoder = self._decoder(ch * 2)

    def forward(self, src: Tensor, dst: Tensor) -> dict[str, Tensor]:
        code_src, code_dst = self.encoder(torch.cat([src, dst])).chunk(2)
        ab_src, ab_dst = self.inter_ab(torch.cat([code_src, code_dst])).chunk(2)
        b_dst = self.inter_b(code_dst)
        z = torch.cat([torch.cat([ab_src, ab_src], 1), torch.cat([b_dst, ab_dst], 1)])
        out_src, out_dst = _split(self.decoder(z))
        return _named("src_src", out_src) | _named("dst_dst", out_dst)

    def swap(self, dst: Tensor) -> tuple[Tensor, Tensor | None]:
        ab = self.inter_ab(self.encoder(dst))
        image, mask, _ = self.decoder(torch.cat([ab, ab], 1))
        return image, mask
