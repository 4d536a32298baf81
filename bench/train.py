"""Training bench: ms per iteration of each model preset, and how close it gets to the machine.

For each preset (h64, h128, df, liaef128, quick96, sae) at its default batch, on real faces
from a workspace (`facelab demo` makes one): build the model, run `TrainStep` (Adam,
optimizer mode 1) on batches from `make_loader` (2 workers, as the trainer), --warmup
untimed iterations then --iters timed ones, and report

* ms/iter: median wall time of one loop turn (next batch, copy to the device, step);
* data wait: time spent in next(loader), as % of the loop time (0 % = never waits);
* FLOPs per iteration: torch.utils.flop_counter.FlopCounterMode over forward + backward
  (`forward_losses` then `.backward()`; the Adam update is not counted);
* GFLOP/s achieved, and its fraction of the matmul ceiling in the precision used
  (`device.matmul_gflops`, fp32 and bf16 both measured in the same run): the baseline a
  conv net could at best approach on this machine;
* peak memory: the child process's ru_maxrss on the CPU, max_memory_allocated on CUDA.

Each preset runs in a fresh process (this script with --one) so the peak memory is its own;
the process also measures the matmul ceiling again right after its timing, and the 1-minute
load average, because on a shared machine other jobs change every figure (up to 8× here).
--compile PRESET also times `torch.compile(model)` against eager for that preset, in one
process, alternately timed, and prints the speedup and the compile time.

Usage: .venv/bin/python bench/train.py [--presets h64,quick96] [--iters N] [--warmup N]
       [--precision auto|fp32|bf16|fp16] [--device auto|cpu|cuda:N] [--compile PRESET]
       [--workspace demo_workspace]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PRESET_NAMES = ("h64", "h128", "df", "liaef128", "quick96", "sae")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loop(step: Any, loader: Any, device: torch.device, n: int) -> tuple[list[float], float]:
    """n loop turns: (ms of each, seconds waited for data in all)."""
    times, waited = [], 0.0
    for _ in range(n):
        start = time.perf_counter()
        batch = next(loader)
        waited += time.perf_counter() - start
        step({k: v.to(device, non_blocking=True) for k, v in batch.items()})
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return times, waited


def _flops(step: Any, batch: dict[str, torch.Tensor]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        src, dst = step.forward_losses(batch)
        (src + dst).backward()
    step.optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def one(name: str, device_spec: str, precision: str, warmup: int, iters: int,
        workspace: Path, workers: int, compile_too: bool) -> dict[str, Any]:
    """Child mode: measure one preset (and, with compile_too, its compiled twin)."""
    from facelab.device import matmul_gflops, resolve_device
    from facelab.train.data import Faceset, SampleOptions, make_loader
    from facelab.train.models import build_model, preset
    from facelab.train.step import TrainStep

    device = resolve_device(device_spec)
    mo = preset(name)
    torch.manual_seed(0)
    model = build_model(mo).to(device)
    faces = [Faceset(workspace / f"data_{side}" / "aligned", mo.resolution, mo.face_type)
             for side in ("src", "dst")]
    loader = make_loader(faces[0], faces[1], mo.batch_size, SampleOptions(seed=0),
                         workers=workers)
    step = TrainStep(model, mo, device, precision=precision, optimizer_mode=1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _loop(step, loader, device, warmup)
    times, waited = _loop(step, loader, device, iters)
    out: dict[str, Any] = {
        "preset": name, "batch": mo.batch_size, "resolution": mo.resolution,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "ms": statistics.median(times), "wait_pct": 100 * waited * 1000 / sum(times),
    }
    batch = {k: v.to(device) for k, v in next(loader).items()}
    out["flops"] = _flops(step, batch)
    # the ceiling again, in this process right after the timing: on a shared machine
    # other jobs take a varying share of the cores, and this shares the row's conditions
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    out["ceiling"] = matmul_gflops(dtype, device)
    out["load"] = os.getloadavg()[0]  # other jobs on a shared machine skew every figure
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if compile_too:
        compiled = TrainStep(model, mo, device, precision=precision, optimizer_mode=1)
        # set after construction: TrainStep's `forward or model` asks the compiled module
        # for its len(), which DF/LIAE do not have
        compiled.forward_model = torch.compile(model)
        start = time.perf_counter()
        _loop(compiled, loader, device, 1)  # compiles forward and backward
        out["compile_s"] = time.perf_counter() - start
        _loop(compiled, loader, device, warmup)
        eager_ms, compiled_ms = [], []
        for _ in range(iters):  # alternately, so load from other jobs hits both alike
            eager_ms += _loop(step, loader, device, 1)[0]
            compiled_ms += _loop(compiled, loader, device, 1)[0]
        out["eager_ms"] = statistics.median(eager_ms)
        out["compiled_ms"] = statistics.median(compiled_ms)
    return out


def run_child(name: str, args: argparse.Namespace, precision: str, compile_too: bool
              ) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", name, "--device", args.device,
           "--precision", precision, "--warmup", str(args.warmup), "--iters", str(args.iters),
           "--workspace", str(args.workspace), "--workers", str(args.workers)]
    if compile_too:
        cmd.append("--compile-too")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_flags() -> str:
    """Whether the CPU has native bf16 (what decides bf16 autocast's speed)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "flags unknown"
    have = [f for f in ("avx512_bf16", "amx_bf16", "avx512f") if f in flags]
    return ", ".join(have) if have else "no avx512 / bf16 flags"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=",".join(PRESET_NAMES),
                        help="comma-separated presets (default: all six)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per preset")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N], xpu[:N], mps")
    parser.add_argument("--compile", metavar="PRESET", default=None,
                        help="also time torch.compile against eager for this preset")
    parser.add_argument("--workspace", type=Path, default=ROOT / "demo_workspace",
                        help="a workspace with data_src/aligned and data_dst/aligned")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--compile-too", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.device, args.precision, args.warmup, args.iters,
                             args.workspace, args.workers, args.compile_too)))
        return

    from facelab.device import choose_precision, describe, matmul_gflops, resolve_device

    for side in ("src", "dst"):
        if not (args.workspace / f"data_{side}" / "aligned").is_dir():
            raise SystemExit(f"{args.workspace} has no data_{side}/aligned: run "
                             "`.venv/bin/python -m facelab demo` first.")
    device = resolve_device(args.device)
    precision, reason = choose_precision(args.precision, device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    kinds = [p for p in dtypes if p in ("fp32", "bf16", precision)]
    ceilings = {p: matmul_gflops(dtypes[p], device) for p in kinds}
    print(f"{describe(device)}; {cpu_flags()}; torch {torch.__version__}")
    print(f"precision {precision} ({reason})")
    print("matmul ceiling (1024×1024) at the start: "
          + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in ceilings.items()))
    print(f"{args.warmup} warm-up + {args.iters} timed iterations per preset, "
          f"{args.workers} loader workers\n", flush=True)

    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    rows, results = [], []
    for name in names:
        r = run_child(name, args, precision, compile_too=False)
        results.append((name, r))
        print(f"{name}: {r['ms']:.0f} ms/iter, {r['flops'] / 1e9:.1f} GFLOP/iter", flush=True)
    # a ceiling is a best case: on a shared machine take the better of start and end
    for p in kinds:
        ceilings[p] = max(ceilings[p], matmul_gflops(dtypes[p], device))
    print("\nmatmul ceiling (1024×1024), best of start and end: "
          + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in ceilings.items()))
    for name, r in results:
        gflops = r["flops"] / r["ms"] / 1e6
        rows.append(
            f"| {name} | {r['resolution']} | {r['batch']} | {r['params_m']:.1f} M | "
            f"{r['ms']:.0f} | {r['flops'] / 1e9:.1f} | {gflops:.1f} | "
            f"{100 * gflops / ceilings[precision]:.0f} % | "
            f"{r['ceiling']:.0f} ({100 * gflops / r['ceiling']:.0f} %) | {r['wait_pct']:.0f} % | "
            f"{r['peak_mb']:.0f} | {r['load']:.1f} |")
    print(f"\n| preset | px | batch | params | ms/iter | GFLOP/iter (fwd+bwd) | GFLOP/s | "
          f"of {precision} ceiling | ceiling after the row (of it) | data wait | peak MiB | "
          f"load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))

    if args.compile:
        r = run_child(args.compile, args, precision, compile_too=True)
        ratio = r["eager_ms"] / r["compiled_ms"]
        verdict = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
        print(f"\ntorch.compile, {args.compile} ({precision}): eager {r['eager_ms']:.0f} ms/iter,"
              f" compiled {r['compiled_ms']:.0f} ms/iter: compiled is {verdict} "
              f"(first compiled iteration, compiling: {r['compile_s']:.0f} s)")


if __name__ == "__main__":
    main()
