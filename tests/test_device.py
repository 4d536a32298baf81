"""facelab/device: device resolution, precision choice (measured and cached on the CPU),
autocast, out-of-memory recognition and the matmul ceiling, on this CPU-only machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facelab import device as dev
from facelab.errors import FacelabError

CPU = torch.device("cpu")


def test_resolve_cpu_and_auto() -> None:
    assert dev.resolve_device("cpu") == CPU
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert dev.resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(("spec", "words"), [
    ("cuda:5", "no CUDA GPU"), ("cuda", "no CUDA GPU"), ("xpu", "no Intel XPU"),
    ("mps", "MPS"), ("gpu", "Device must be auto, cpu"),
])
def test_resolve_absent_devices(spec: str, words: str) -> None:
    if spec in ("xpu", "mps") and dev._available(spec):
        pytest.skip(f"{spec} exists here")
    with pytest.raises(FacelabError, match=words) as info:
        dev.resolve_device(spec)
    assert "\n" not in str(info.value) and repr(spec) in str(info.value)


def test_describe_cpu() -> None:
    text = dev.describe(CPU)
    assert text.startswith("cpu (") and f"{torch.get_num_threads()} threads" in text


def test_explicit_precisions(tmp_path: Path) -> None:
    def never() -> tuple[float, float]:
        raise AssertionError("explicit precisions are not measured")

    for spec in ("fp32", "bf16"):
        assert dev.choose_precision(spec, CPU, tmp_path / "c.json", never)[0] == spec
    with pytest.raises(FacelabError, match="fp16 needs a GPU"):
        dev.choose_precision("fp16", CPU, tmp_path / "c.json", never)
    with pytest.raises(FacelabError, match="Precision must be one of"):
        dev.choose_precision("half", CPU, tmp_path / "c.json", never)
    assert not (tmp_path / "c.json").exists()


@pytest.mark.slow
def test_auto_measures_once_and_caches(tmp_path: Path) -> None:
    cache = tmp_path / "sub" / "precision.json"
    calls: list[tuple[float, float]] = []

    def measure() -> tuple[float, float]:
        calls.append(dev.measure_cpu_bf16())  # the real measurement
        return calls[-1]

    chosen, reason = dev.choose_precision("auto", CPU, cache, measure)
    fp32, bf16 = calls[0]
    assert chosen == ("bf16" if fp32 / bf16 >= dev.BF16_MIN_GAIN else "fp32")
    assert f"{bf16:.0f} ms vs {fp32:.0f} ms" in reason
    doc = json.loads(cache.read_text())
    (entry,) = doc.values()
    assert entry["fp32_ms"] == pytest.approx(fp32, abs=1e-3)
    mtime = cache.stat().st_mtime_ns
    assert dev.choose_precision("auto", CPU, cache, measure) == (chosen, reason)
    assert len(calls) == 1 and cache.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(("times", "chosen", "words"), [
    ((20.0, 10.0), "bf16", "2.0x faster"), ((20.0, 18.0), "fp32", "only 1.11x faster"),
    ((20.0, 60.0), "fp32", "3.0x slower"),
])
def test_auto_threshold(tmp_path: Path, times: tuple[float, float], chosen: str,
                        words: str) -> None:
    got, reason = dev.choose_precision("auto", CPU, None, lambda: times)
    assert got == chosen and words in reason


def test_unreadable_cache_is_rewritten(tmp_path: Path) -> None:
    cache = tmp_path / "precision.json"
    cache.write_text("{not json")
    assert dev.choose_precision("auto", CPU, cache, lambda: (30.0, 10.0))[0] == "bf16"
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["bf16_ms"] == 10.0
    assert [p.name for p in tmp_path.iterdir()] == ["precision.json"]  # no temp left


def test_autocast_bf16_on_cpu() -> None:
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with dev.autocast(CPU, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with dev.autocast(CPU, "fp32"):
        assert (a @ b).dtype == torch.float32
    assert not dev.needs_grad_scaler(CPU, "bf16")
    assert dev.needs_grad_scaler(torch.device("cuda"), "fp16")
    assert not dev.needs_grad_scaler(torch.device("cuda"), "bf16")


def test_out_of_memory_recognised() -> None:
    with pytest.raises(RuntimeError) as torch_oom:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: more than any address space
    assert dev.is_out_of_memory(torch_oom.value)
    with pytest.raises(MemoryError) as py_oom:
        bytearray(2**50)
    assert dev.is_out_of_memory(py_oom.value)
    assert dev.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory."))
    assert not dev.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not dev.is_out_of_memory(ValueError("out of memory"))


def test_out_of_memory_message() -> None:
    text = dev.out_of_memory_message(16, 128, 256, torch.device("cuda:0"))
    assert "\n" not in text
    assert text.index("--batch-size to 8") < text.index("ae_dims")
    assert "last save is kept" in text
    assert "--batch-size" not in dev.out_of_memory_message(1, 128, 256, CPU)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_gflops(dtype: torch.dtype) -> None:
    assert dev.matmul_gflops(dtype, CPU, n=128, seconds=0.05) > 0
