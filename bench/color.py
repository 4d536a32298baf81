"""Merge image-op bench: milliseconds per call of every colour transfer, histogram match and
degradation on real face crops at 128² and 256².

The crops are the ones tests/test_merge_color.py uses: Eileen Collins (astronaut.png) as the
predicted face, Grace Hopper as the dst face, with a feathered elliptic face mask. Each op
runs once to warm up, then --repeat times; the median wall time and the median CPU time
(user + system of this process, all threads: far less noisy on a shared machine) are
printed. ΔE is the distance between the face's and dst's mean L*a*b* inside the mask after
the op (before: the `none` row), a check that the timed call did its job.

Usage: .venv/bin/python bench/color.py [--repeat N] [--sizes 128 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from facelab.merge.color import COLOR_TRANSFERS
from facelab.merge.degrade import bicubic_degrade, color_degrade
from facelab.merge.histmatch import hist_match

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "images"
# gray output or not a colour match: a ΔE to dst's colours would mean nothing
NO_DELTA_E = {"hist-match-bw", "bicubic degrade 50", "color degrade 50"}
Op = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def crops(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def crop(name: str, y: int, x: int, side: int) -> np.ndarray:
        image = cv2.imread(str(DATA / name))
        if image is None:
            raise SystemExit(f"{DATA / name} is absent (see ../shared/data/README.md)")
        face = cv2.resize(image[y:y + side, x:x + side], (size, size),
                          interpolation=cv2.INTER_AREA)
        return face.astype(np.float32) / 255

    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (size // 2, size // 2), (int(size * 0.36), int(size * 0.45)), 0, 0, 360,
                1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), size / 40)
    return crop("astronaut.png", 40, 135, 180), crop("grace_hopper.jpg", 110, 145, 230), mask


def ops() -> dict[str, Op]:
    table: dict[str, Op] = {f"color {k}": v for k, v in COLOR_TRANSFERS.items()}
    table["hist-match"] = hist_match
    table["hist-match t=200"] = lambda f, r, m: hist_match(f, r, m, threshold=200)
    table["hist-match-bw"] = lambda f, r, m: hist_match(f, r, m, bw=True)
    table["bicubic degrade 50"] = lambda f, r, m: bicubic_degrade(f, 50)
    table["color degrade 50"] = lambda f, r, m: color_degrade(f, 50)
    return table


def delta_e(x: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    sel = mask > 0.5
    a, b = (cv2.cvtColor(im, cv2.COLOR_BGR2LAB)[sel].mean(0) for im in (x, ref))
    return float(np.linalg.norm(a - b))


def time_op(op: Op, face: np.ndarray, ref: np.ndarray, mask: np.ndarray,
            repeat: int) -> tuple[float, float, np.ndarray]:
    out = op(face, ref, mask)
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = op(face, ref, mask)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="*", default=[128, 256])
    a = parser.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               "?")
    print(f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores usable, "
          f"OpenCV threads {cv2.getNumThreads()}, load {os.getloadavg()[0]:.1f}; "
          f"repeat {a.repeat}")
    head = f"{'op':20} {'size':>5} {'wall ms':>8} {'CPU ms':>7} {'ΔE':>6}"
    for size in a.sizes:
        face, ref, mask = crops(size)
        rows = [head]
        for name, op in ops().items():
            wall, cpu_ms, out = time_op(op, face, ref, mask, a.repeat)
            de = "" if name in NO_DELTA_E else f"{delta_e(out, ref, mask):6.2f}"
            rows.append(f"{name:20} {size:5d} {wall:8.2f} {cpu_ms:7.2f} {de:>6}")
        print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
