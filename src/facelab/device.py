"""Where a model runs (training, merging, enhancing) and in which precision.

Below every stage that runs PyTorch, so a merge worker or the enhancer chooses its device
without importing the training loop. It imports torch: the CLI imports it lazily.

The device: CUDA (NVIDIA, and AMD through ROCm, which PyTorch also calls `cuda`), Intel
`xpu`, Apple `mps`, else the CPU. The precision: fp32, or bf16/fp16 autocast. On a GPU
the choice is known in advance (bf16 where the card has it, else fp16 with a grad scaler).
On a CPU it is not: bf16 autocast is about 2× faster where the CPU has native bf16
(avx512_bf16, AMX) and 2–4× slower where it is emulated, and flags do not tell the whole
story (oneDNN kernels, thread count), so `auto` measures it once per machine and caches it.

Out-of-memory errors are recognised here too, to be turned into one line that says what
to reduce.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from facelab.errors import FacelabError
from facelab.fsutil import read_json, write_json
from facelab.options import PRECISIONS

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BF16_MIN_GAIN = 1.15  # auto picks bf16 on a CPU only when at least this much faster
_ACCELERATORS = ("cuda", "xpu")  # the kinds that may have several devices


# ── device ──────────────────────────────────────────────────────────────────────────────


def _module(kind: str):
    """torch.cuda or torch.xpu: the same API for what is used here."""
    return getattr(torch, kind)


def _available(kind: str) -> bool:
    if kind == "mps":
        return torch.backends.mps.is_available()
    mod = getattr(torch, kind, None)
    return bool(mod is not None and mod.is_available())


def _free_memory(kind: str, index: int) -> int:
    """Free bytes on one device; 0 when the backend cannot tell (then the first wins)."""
    try:
        return int(_module(kind).mem_get_info(index)[0])
    except (AttributeError, RuntimeError):
        return 0


def resolve_device(spec: str) -> torch.device:
    """`auto` → the best accelerator PyTorch sees (the one with the most free memory when
    there are several), else cpu; an explicit device must exist."""
    if spec == "auto":
        for kind in _ACCELERATORS:
            if _available(kind):
                count = _module(kind).device_count()
                if count <= 1:
                    return torch.device(kind)
                best = max(range(count), key=lambda i: _free_memory(kind, i))
                return torch.device(kind, best)
        return torch.device("mps" if _available("mps") else "cpu")
    if spec in ("cpu", "mps"):
        if spec == "mps" and not _available("mps"):
            raise FacelabError("Device 'mps' asked for, but Apple's MPS backend is not available.")
        return torch.device(spec)
    kind, colon, index = spec.partition(":")
    if kind in _ACCELERATORS:
        name = "CUDA GPU" if kind == "cuda" else "Intel XPU"
        if not _available(kind):
            raise FacelabError(f"Device {spec!r} asked for, but no {name} is available.")
        count = _module(kind).device_count()
        if colon and (not index.isdigit() or int(index) >= count):
            raise FacelabError(f"Device {spec!r} does not exist ({count} {name}(s)).")
        return torch.device(spec)
    raise FacelabError(f"Device must be auto, cpu, cuda[:N], xpu[:N] or mps, not {spec!r}.")


def cpu_model() -> str:
    """The CPU's model name as the OS reports it (lscpu's 'Model name')."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe(device: torch.device) -> str:
    """A human name: 'cpu (AMD EPYC, 2 threads)', 'cuda:0 (NVIDIA H100, 80 GB)'."""
    if device.type == "cpu":
        return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
    if device.type in _ACCELERATORS:
        mod = _module(device.type)
        index = mod.current_device() if device.index is None else device.index
        props = mod.get_device_properties(index)
        return f"{device.type}:{index} ({props.name}, {props.total_memory / 1e9:.0f} GB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return str(device)


# ── precision ───────────────────────────────────────────────────────────────────────────


class _Default:
    """Marks 'the default cache file' (None means no cache)."""


DEFAULT_CACHE = _Default()


def default_cache_path() -> Path:
    """$XDG_CACHE_HOME/facelab/precision.json, or ~/.cache/facelab/precision.json."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facelab" / "precision.json"


def _probe_net() -> nn.Module:
    """A small net shaped like our autoencoder's inner layers (3×3 convs, 64–256 channels,
    24–48 px, leaky ReLU, pixel-shuffle upscale): cheap to time, same kernels."""
    act = nn.LeakyReLU(0.1)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2, padding=1), act,      # 48 → 24
        nn.Conv2d(64, 128, 3, stride=2, padding=1), act,    # 24 → 12
        nn.Conv2d(128, 128, 3, padding=1), act,
        nn.PixelShuffle(2),                                  # 128 → 32 ch, 12 → 24
        nn.Conv2d(32, 64, 3, padding=1), act,
        nn.Conv2d(64, 3, 3, padding=1),
    )


def measure_cpu_bf16(warmup: int = 2, iters: int = 7, budget_s: float = 2.0
                     ) -> tuple[float, float]:
    """Median ms of one forward+backward of the probe net at batch 8, (fp32, bf16 autocast).
    The two run alternately so load from other processes hits both alike; timing stops
    early (after 3 pairs at least) once `budget_s` is spent."""
    torch.manual_seed(0)
    net = _probe_net()
    x = torch.randn(8, 3, 48, 48)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = net(x).float().square().mean()
        loss.backward()
        net.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) * 1000

    for _ in range(warmup):
        step(False), step(True)
    fp32: list[float] = []
    bf16: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(fp32) < iters and (len(fp32) < 3 or time.perf_counter() < deadline):
        fp32.append(step(False))
        bf16.append(step(True))
    return statistics.median(fp32), statistics.median(bf16)


def _cache_key() -> str:
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _cached_times(path: Path, key: str) -> tuple[float, float] | None:
    try:
        entry = read_json(path)[key]
        return float(entry["fp32_ms"]), float(entry["bf16_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, unreadable or from another machine: measure


def _store_times(path: Path, key: str, fp32: float, bf16: float) -> None:
    try:
        doc = read_json(path)
        if not isinstance(doc, dict):
            doc = {}
    except (OSError, ValueError):
        doc = {}  # unreadable: rewritten whole
    doc[key] = {"fp32_ms": round(fp32, 3), "bf16_ms": round(bf16, 3),
                "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.suppress(OSError):  # a read-only home only costs a re-measure
        write_json(path, doc)


def _cpu_auto(cache: Path | None, measure: Callable[[], tuple[float, float]]
              ) -> tuple[str, str]:
    key = _cache_key()
    times = _cached_times(cache, key) if cache is not None else None
    if times is None:
        times = measure()
        if cache is not None:
            _store_times(cache, key, *times)
    fp32, bf16 = times
    numbers = f"({bf16:.0f} ms vs {fp32:.0f} ms)"
    gain = fp32 / bf16 if bf16 > 0 else 0.0
    if gain >= BF16_MIN_GAIN:
        return "bf16", f"bf16 measured {gain:.1f}x faster than fp32 here {numbers}"
    if gain >= 1:
        return "fp32", (f"bf16 measured only {gain:.2f}x faster than fp32 here {numbers}, "
                        f"under the {BF16_MIN_GAIN:.2f}x needed")
    return "fp32", f"bf16 measured {1 / gain:.1f}x slower than fp32 here {numbers}"


def choose_precision(spec: str, device: torch.device,
                     cache: Path | _Default | None = DEFAULT_CACHE,
                     measure: Callable[[], tuple[float, float]] = measure_cpu_bf16,
                     ) -> tuple[str, str]:
    """(precision, reason). Explicit values are checked against the device; `auto` takes
    bf16 (else fp16) on a GPU and, on a CPU, bf16 only where it measured ≥ 15 % faster.
    `measure` returns (fp32 ms, bf16 ms); its result is cached per CPU, torch and thread
    count in `cache` (None: no cache)."""
    if spec not in PRECISIONS:
        raise FacelabError(f"Precision must be one of {', '.join(PRECISIONS)}, not {spec!r}.")
    kind = device.type
    cuda_bf16 = kind == "cuda" and torch.cuda.is_bf16_supported()
    if spec == "fp32":
        return "fp32", "asked for"
    if spec == "fp16":
        if kind == "cpu":
            raise FacelabError("fp16 needs a GPU (cuda, xpu or mps); on the CPU use bf16 or fp32.")
        return "fp16", "asked for"
    if spec == "bf16":
        if kind == "cuda" and not cuda_bf16:
            raise FacelabError(f"{describe(device)} has no bf16 support; use fp16 or fp32.")
        return "bf16", "asked for"
    if kind == "cuda":
        return ("bf16", "the GPU supports bf16") if cuda_bf16 else (
            "fp16", "the GPU has no bf16: fp16 with a grad scaler")
    if kind == "xpu":
        return "bf16", "Intel GPUs train in bf16"
    if kind == "mps":
        return "fp16", "fp16 autocast on Apple GPUs"
    path = default_cache_path() if isinstance(cache, _Default) else cache
    return _cpu_auto(path, measure)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast region for a forward pass in `precision` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def needs_grad_scaler(device: torch.device, precision: str) -> bool:
    """fp16 gradients underflow without loss scaling (torch.amp.GradScaler); bf16 has fp32's
    range and needs none."""
    return precision == "fp16" and device.type != "cpu"


# ── out of memory ───────────────────────────────────────────────────────────────────────

_OOM_TEXTS = ("out of memory", "DefaultCPUAllocator: can't allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a GPU or CPU allocation failure (worth a 'reduce the batch' message)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in _OOM_TEXTS)


def out_of_memory_message(batch_size: int, resolution: int, ae_dims: int,
                          device: torch.device) -> str:
    """One line: what ran out, what to lower first (the batch), and that nothing was lost."""
    where = "GPU memory" if device.type != "cpu" else "memory"
    if batch_size > 1:
        first = f"lower --batch-size to {batch_size // 2} first, then ae_dims ({ae_dims}) or "
    else:
        first = f"lower ae_dims ({ae_dims}) or "
    return (f"Out of {where} on {device} at batch size {batch_size}, resolution {resolution}: "
            f"{first}the resolution ({resolution}) in a new model; the last save is kept.")


# ── ceiling ─────────────────────────────────────────────────────────────────────────────


def _sync(device: torch.device) -> None:
    if device.type in _ACCELERATORS:
        _module(device.type).synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int = 1024,
                  seconds: float = 1.0) -> float:
    """The machine's ceiling in `dtype`: GFLOP/s of repeated n×n matmuls (2n³ each)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=out)
    _sync(device)
    count, start = 0, time.perf_counter()
    while True:
        for _ in range(4):
            torch.mm(a, b, out=out)
        count += 4
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * n**3 * count / elapsed / 1e9
