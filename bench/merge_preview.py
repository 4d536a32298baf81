"""Merge preview bench: ms per `Previewer.render` of one dst frame as merge options change.

The studio's merge page merges the shown frame again on every option change; the goal is
≤ 300 ms a 360p frame after the first, with the model loaded. Workspaces are bench/merge.py's
(`build`, untimed; --keep DIR reuses them): GRID speaker A as dst (360×288, a little below
360p) and the Pexels clip (640×360), dst kept in its video, quick96 and meshswap trained a
few iterations (the weights' quality does not change the cost).

Per clip and model, on the clip's middle frame: open (model load, faces, frame index), the
first render (decode, the whole clip's faces smoothed, the prediction of the frame's batch,
compose, mark), then each option change alone from the defaults (median of --repeat renders,
CPU ms of this process beside), a neighbour in the same prediction batch, a frame of
another batch (a new prediction) and a change of smoothing (new face jobs, new prediction).

Usage: .venv/bin/python bench/merge_preview.py [--keep DIR] [--models quick96 meshswap]
       [--clips grid pexels] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _measure import cpu_s  # bench/ is on sys.path when a script runs
from merge import CLIPS, MODELS, build

GOAL_MS = 300.0
#: (label, the options changed from the defaults): each re-composes from the kept prediction
CHANGES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("defaults again", {}), ("erode 20", {"erode": 20}), ("erode -20", {"erode": -20}),
    ("blur 40", {"blur": 40}), ("color mkl", {"color": "mkl"}),
    ("color idt", {"color": "idt"}), ("color none", {"color": "none"}),
    ("mode overlay", {"mode": "overlay"}), ("mode seamless", {"mode": "seamless"}),
    ("mode hist-match", {"mode": "hist-match"}), ("mask dst", {"mask": "dst"}),
    ("mask learned", {"mask": "learned"}), ("face scale 5", {"face_scale": 5}),
    ("degrade 40", {"degrade": 40}), ("color degrade 40", {"color_degrade": 40}),
)


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU milliseconds of one call."""
    start, cpu = time.perf_counter(), cpu_s()
    fn()
    return 1000 * (time.perf_counter() - start), 1000 * (cpu_s() - cpu)


def bench(root: Path, model: str, repeat: int) -> list[str]:
    from facelab.merge.options import MergeOptions
    from facelab.merge.preview import Previewer
    from facelab.workspace import Workspace

    rows = []

    def row(label: str, wall: float, cpu: float) -> None:
        rows.append(f"  {label:44} {wall:8.1f} {cpu:8.1f}")

    box: dict[str, Any] = {}
    wall, cpu = timed(lambda: box.setdefault("pv", Previewer(Workspace(root), model)))
    pv: Previewer = box["pv"]
    row(f"open (model {pv.precision}, {pv.threads} threads)", wall, cpu)
    frame = pv.names[len(pv.names) // 2]
    h, w = pv.frame(frame).shape[:2]
    base = MergeOptions()
    row(f"first render of {frame} ({w}×{h})", *timed(lambda: pv.render(frame, base)))
    worst = 0.0
    for label, change in CHANGES:
        opts = MergeOptions(**change)
        runs = [timed(lambda o=opts: pv.render(frame, o)) for _ in range(repeat)]
        med = statistics.median(r[0] for r in runs)
        worst = max(worst, med)
        row(label, med, statistics.median(r[1] for r in runs))
    i = pv.names.index(frame)
    for label, name in (("neighbour, same batch", pv.names[min(len(pv.names) - 1, i + 1)]),
                        ("frame of another batch", pv.names[min(len(pv.names) - 1, i + 9)])):
        row(f"{label} ({name})", *timed(lambda n=name: pv.render(n, base)))
    row("smooth 2 (new face jobs and prediction)",
        *timed(lambda: pv.render(frame, MergeOptions(smooth=2))))
    met = "met" if worst <= GOAL_MS else "MISSED"
    rows.append(f"  worst option change: {worst:.1f} ms (goal ≤ {GOAL_MS:.0f} ms: {met})")
    pv.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=["quick96", "meshswap"],
                        choices=list(MODELS))
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--keep", type=Path, default=None,
                        help="build the workspaces here and reuse them on the next run")
    a = parser.parse_args()
    cpu_name = next((ln.split(":", 1)[1].strip() for ln in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), "?")
    print(f"CPU: {cpu_name}, {len(os.sched_getaffinity(0))} cores usable; repeat "
          f"{a.repeat}; load average {os.getloadavg()[0]:.1f}")
    tmp = None
    if a.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_preview_")
        root = Path(tmp.name)
    else:
        root = a.keep
        root.mkdir(parents=True, exist_ok=True)
    try:
        spaces = build(root, a.models)
        for clip in a.clips:
            for model in a.models:
                print(f"{f'{clip} / {model}':46} {'wall ms':>8} {'CPU ms':>8}")
                print("\n".join(bench(spaces[clip], model, a.repeat)), flush=True)
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
