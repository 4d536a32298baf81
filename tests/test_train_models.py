"""SAE-family networks: presets build, shapes, DF vs LIAE swap paths, options, gradients."""

from __future__ import annotations

import pytest
import torch

from facelab.errors import FacelabError
from facelab.train.models import (
    DF,
    FIXED_OPTIONS,
    LIAE,
    PRESETS,
    ModelOptions,
    build_model,
    preset,
)
from facelab.train.models.blocks import Upscale, conv_aware_init_

TINY = {"ae_dims": 16, "e_dims": 4, "d_dims": 4, "d_mask_dims": 2}


def _pair(res: int, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, res, res, generator=g), torch.rand(n, 3, res, res, generator=g)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_forward_shapes(name: str) -> None:
    opts = preset(name, **TINY)
    model = build_model(opts)
    assert isinstance(model, DF if opts.arch_base == "df" else LIAE)
    r = opts.resolution
    src, dst = _pair(r)
    out = model(src, dst)
    assert set(out) == {"src_src", "dst_dst", "src_src_mask", "dst_dst_mask"}
    for key in ("src_src", "dst_dst"):
        assert out[key].shape == (2, 3, r, r)
        assert out[f"{key}_mask"].shape == (2, 1, r, r)
        assert out[key].min() >= 0 and out[key].max() <= 1
    image, mask = model.swap(dst)
    assert image.shape == (2, 3, r, r) and mask is not None and mask.shape == (2, 1, r, r)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["df", "df-u", "df-d", "liae-ud", "liae-d"])
def test_variants_multiscale_and_no_mask(arch: str) -> None:
    opts = preset(
        "sae", arch=arch, resolution=64, learn_mask=False, multiscale_decoder=True, **TINY
    )
    model = build_model(opts).to(memory_format=torch.channels_last)
    src, dst = (t.contiguous(memory_format=torch.channels_last) for t in _pair(64))
    out = model(src, dst)
    low = [16, 32] if "d" not in opts.arch_variants else [8, 16]
    assert set(out) == {"src_src", "dst_dst"} | {
        f"{k}_{s}" for k in ("src_src", "dst_dst") for s in low
    }
    assert out["src_src"].shape == (2, 3, 64, 64)
    assert out[f"dst_dst_{low[0]}"].shape == (2, 3, low[0], low[0])
    assert model.swap(dst)[1] is None


@pytest.mark.slow
def test_full_presets_build_and_report_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    counts = {}
    for name in PRESETS:
        model = build_model(preset(name))
        counts[name] = sum(p.numel() for p in model.parameters())
        del model
    for name in ("h64", "h128"):
        light = build_model(preset(name, lightweight=True))
        counts[f"{name}-lightweight"] = sum(p.numel() for p in light.parameters())
        assert counts[f"{name}-lightweight"] < counts[name] / 2
    with capsys.disabled():
        print("\n" + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in counts.items()))
    assert counts["quick96"] < counts["sae"] < counts["df"]


def test_liae_swap_uses_inter_ab_only() -> None:
    torch.manual_seed(0)
    model = build_model(preset("liaef128", resolution=64, **TINY)).eval()
    src, dst = _pair(64)
    with torch.no_grad():
        swap_before, _ = model.swap(dst)
        dst_before = model(src, dst)["dst_dst"]
        for p in model.inter_b.parameters():
            p.zero_()
        swap_after, _ = model.swap(dst)
        dst_after = model(src, dst)["dst_dst"]
    assert torch.equal(swap_before, swap_after)
    assert not torch.allclose(dst_before, dst_after)


def test_df_swap_uses_src_decoder() -> None:
    torch.manual_seed(0)
    model = build_model(preset("df", resolution=64, **TINY)).eval()
    src, dst = _pair(64)
    with torch.no_grad():
        out = model(src, dst)
        swap, _ = model.swap(dst)
        assert not torch.allclose(swap, out["dst_dst"])
        for p in model.decoder_dst.parameters():
            p.zero_()
        assert torch.equal(swap, model.swap(dst)[0])
        for p in model.decoder_src.parameters():
            p.zero_()
        assert not torch.equal(swap, model.swap(dst)[0])


@pytest.mark.parametrize(
    "changes",
    [
        {"resolution": 72},
        {"resolution": 300},
        {"resolution": 48},
        {"arch": "vg"},
        {"arch": "df-x"},
        {"arch": "liae-"},
        {"arch": "df-d", "resolution": 80},
        {"face_type": "head"},
        {"ae_dims": 0},
        {"e_dims": 1000},
        {"batch_size": 0},
        {"face_style_power": 101},
    ],
)
def test_validation_rejects_out_of_range(changes: dict) -> None:
    with pytest.raises(FacelabError) as e:
        ModelOptions(**changes).validate()
    msg = str(e.value)
    assert msg.endswith(".") and "\n" not in msg


def test_dfl_ranges_are_optional() -> None:
    opts = preset("h64")
    assert opts.validate() is opts
    with pytest.raises(FacelabError, match="--e-dims"):
        opts.validate(dfl_ranges=True)
    ModelOptions().validate(dfl_ranges=True)


def test_unknown_preset_and_lightweight_misuse() -> None:
    with pytest.raises(FacelabError, match="Unknown model"):
        preset("h256")
    with pytest.raises(FacelabError, match="lightweight"):
        preset("df", lightweight=True)


def test_json_round_trip_and_fixed_options() -> None:
    opts = preset("quick96", batch_size=4, face_style_power=10.0)
    back = ModelOptions.from_json(opts.to_json())
    assert back == opts
    with pytest.raises(FacelabError, match="Unknown"):
        ModelOptions.from_json('{"bogus": 1}')
    with pytest.raises(FacelabError, match="JSON"):
        ModelOptions.from_json("{")
    with pytest.raises(FacelabError, match="--resolution"):
        ModelOptions.from_json('{"resolution": 72}')
    assert {"resolution", "face_type", "arch", "ae_dims", "learn_mask"} <= FIXED_OPTIONS
    assert opts.override(batch_size=2, random_flip=False).batch_size == 2
    assert opts.override(resolution=96) == opts  # unchanged fixed value is fine
    with pytest.raises(FacelabError, match="cannot change"):
        opts.override(resolution=128)


def test_conv_aware_init_makes_upscales_start_as_nearest() -> None:
    torch.manual_seed(0)
    up = Upscale(4, 3)
    conv_aware_init_(up)
    y = up(torch.rand(1, 4, 5, 5))
    assert torch.equal(y[..., 0::2, 0::2], y[..., 1::2, 1::2])
    model = build_model(preset("sae", resolution=64, conv_aware_init=True, **TINY))
    assert model(*_pair(64))["src_src"].shape == (2, 3, 64, 64)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["df-ud", "liae-ud"])
def test_training_steps_reduce_loss_and_reach_every_parameter(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(preset("sae", arch=arch, resolution=64, multiscale_decoder=True, **TINY))
    src, dst = _pair(64, n=4)
    mask = (src.mean(1, keepdim=True) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_fn() -> torch.Tensor:
        out = model(src, dst)
        loss = (out["src_src"] - src).pow(2).mean() + (out["dst_dst"] - dst).pow(2).mean()
        loss = loss + (out["src_src_mask"] - mask).pow(2).mean() + out["dst_dst_mask"].mean()
        ms = [v for k, v in out.items() if k.rsplit("_", 1)[-1].isdigit()]
        return loss + sum(v.mean() for v in ms)

    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        if not losses:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
