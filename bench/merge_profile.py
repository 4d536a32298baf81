"""Merge profile: where one merge worker's time per frame goes, part by part.

Runs the worker itself (`merge.worker.init` with 1 torch thread and 1 OpenCV thread, as
each pool process does, then `work` on chunks of BATCH_FRAMES frames) in this process, on the
first --frames dst frames with a face, and times each part by wrapping the functions that do
it (exclusive time: a part's nested parts are not counted twice):

    read       read_image (the dst PNG)           predict    Predictor.predict
    prepare    work()'s own: crops, batch, …      colour     compose.face_in_crop
    masks      compose.frame_mask                 seamless   compose._seamless
    composite  merge_face and _merge_frame's own: face warp, blend, ROI back, alpha
    mark       provenance watermark (mark_frame)  encode     _write's own: alpha, PNG, XMP
    write      _put (temporary name, rename)

and prints ms per frame per part, and merge / predict (the whole worker's time per frame
over the prediction's: the goal is ≤ 1.3 with 2 workers). Clips and models as bench/merge.py
(GRID speaker_a_1 360×288 as dst with speaker_b as src; the Pexels clip, 640×360), built
once with its helpers in --keep DIR. The default options (mode auto: seamless for quick96,
overlay for meshswap; learned*dst; rct) and --mode overlay. Parts are the minimum over
--repeat passes (a profile on a shared machine: the least disturbed pass), timed by the
worker thread's CPU time (everything runs on that one thread; --wall for the wall clock,
which also counts waiting for the disk and for other jobs on the machine).

Usage: .venv/bin/python bench/merge_profile.py [--keep DIR] [--frames N] [--repeat N]
       [--models quick96 meshswap] [--clips grid pexels] [--precision fp32|auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import merge as bench  # bench/merge.py: the workspaces and models (bench/ is on sys.path)

PARTS = ("read", "prepare", "predict", "colour", "masks", "seamless", "composite", "mark",
         "encode", "write")
OUTSIDE = PARTS[3:]  # the merged face's cost outside the model, after the prediction


class Clock:
    """Exclusive seconds per part: a wrapped call's time minus its wrapped callees'."""

    def __init__(self, now: Callable[[], float] = time.thread_time) -> None:
        self.now = now
        self.spent: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self._stack: list[float] = []  # per open call: time its wrapped callees took
        self._patched: list[tuple[Any, str, Any]] = []

    def wrap(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(0.0)
            start = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                took = self.now() - start
                inner = self._stack.pop()
                self.spent[part] += took - inner
                if self._stack:
                    self._stack[-1] += took

        return timed

    def patch(self, owner: Any, name: str, part: str) -> None:
        if hasattr(owner, name):  # a name an older worker lacks is left out (0 ms)
            self._patched.append((owner, name, owner.__dict__.get(name)))
            setattr(owner, name, self.wrap(getattr(owner, name), part))

    def restore(self) -> None:
        for owner, name, original in reversed(self._patched):
            if original is None:
                delattr(owner, name)  # an instance attribute over its class's method
            else:
                setattr(owner, name, original)
        self._patched.clear()


def instrument(clock: Clock) -> Callable[..., Any]:
    """Wrap the worker's parts; returns the timed `work`."""
    from facelab.merge import compose, worker

    for owner, name, part in (
            (worker, "read_image", "read"), (worker, "merge_face", "composite"),
            (worker, "_merge_frame", "composite"), (worker, "_compose_frame", "composite"),
            (worker, "_predict", "prepare"), (compose, "face_in_crop", "colour"),
            (compose, "frame_mask", "masks"), (compose, "_seamless", "seamless"),
            (worker, "mark_frame", "mark"), (worker, "_write", "encode"),
            (worker, "encode_png", "encode"), (worker, "_encode_png", "encode"),
            (worker, "png_bytes_with_mark", "encode"), (worker, "_put", "write")):
        clock.patch(owner, name, part)
    clock.patch(worker._W["predictor"], "predict", "predict")
    return clock.wrap(worker.work, "prepare")


def profile(root: Path, model: str, overrides: dict[str, Any], frames: int, repeat: int,
            precision: str, wall: bool = False) -> tuple[str, int, dict[str, float], float]:
    """(the mode run, frames timed, ms per frame per part, process CPU ms per frame)."""
    from facelab.merge import worker
    from facelab.merge.jobs import dst_faces, face_jobs
    from facelab.merge.options import MergeOptions
    from facelab.merge.predictor import model_info
    from facelab.provenance.mark import Mark
    from facelab.workspace import Workspace, list_images

    batch = getattr(worker, "BATCH_FRAMES", 4)  # frames per prediction batch (merger's)
    ws = Workspace(root)
    info = model_info(ws.model_dir, model)
    opts = MergeOptions(**overrides)
    if opts.mode == "auto":
        opts = dataclasses.replace(opts, mode=info.blend)
    paths = [p for p in list_images(ws.frames_dir("dst")) if p.is_file()]
    jobs = face_jobs(paths, dst_faces(ws), opts.smooth, 25.0, meshes=info.needs_mesh)
    items = [(p, jobs[p.name]) for p in paths if jobs.get(p.name)][:frames + batch]
    item = getattr(worker, "Item", lambda frames: frames)  # a list before work() took Items
    chunks = [item(items[i:i + batch]) for i in range(0, len(items), batch)]
    with tempfile.TemporaryDirectory(prefix="merge_profile_") as out:
        setup = worker.Setup(ws.model_dir, model, "cpu", opts, Path(out), None, None,
                             Mark.synthetic(info.model_id), precision)
        worker.init(setup, threads=1)
        worker.work(chunks[0])  # warm-up (caches, first allocations): untimed
        best: dict[str, float] = {}
        cpu_best = float("inf")
        n = len(items) - batch
        for _ in range(repeat):
            clock = Clock(time.perf_counter if wall else time.thread_time)
            work = instrument(clock)
            cpu = time.process_time()
            for chunk in chunks[1:]:
                work(chunk)
            cpu_best = min(cpu_best, time.process_time() - cpu)
            clock.restore()
            for part, s in clock.spent.items():
                best[part] = min(best.get(part, float("inf")), s)
    return opts.mode, n, {k: 1000 * v / n for k, v in best.items()}, 1000 * cpu_best / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=Path("/tmp/r16/benchws"),
                        help="build the workspaces here once and reuse them")
    parser.add_argument("--frames", type=int, default=32, help="frames timed per run")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=["quick96", "meshswap"],
                        choices=list(bench.MODELS))
    parser.add_argument("--clips", nargs="*", default=list(bench.CLIPS),
                        choices=list(bench.CLIPS))
    parser.add_argument("--precision", default="fp32",
                        help="the prediction's (auto: what merge picks here)")
    parser.add_argument("--wall", action="store_true",
                        help="time parts by the wall clock (default: this thread's CPU time, "
                        "which other jobs on the machine barely change)")
    a = parser.parse_args()
    import cv2
    import torch

    from facelab.device import choose_precision

    precision = choose_precision(a.precision, torch.device("cpu"))[0]
    print(f"{len(os.sched_getaffinity(0))} cores usable, load average "
          f"{os.getloadavg()[0]:.1f}; precision {precision}; {a.frames} frames, best of "
          f"{a.repeat}; 1 torch and 1 OpenCV thread (a pool worker); OpenCV {cv2.__version__}; "
          f"{'wall' if a.wall else 'thread CPU'} time")
    a.keep.mkdir(parents=True, exist_ok=True)
    spaces = {c: a.keep / c for c in a.clips}
    built = all((spaces[c] / "model" / f"{m}_manifest.json").exists()
                and (spaces[c] / "data_dst" / "aligned" / ".bench_done").exists()
                for c in a.clips for m in a.models)
    if not built:
        spaces = bench.build(a.keep, a.models)
    head = (f"{'clip':7} {'model':8} {'mode':9}" + "".join(f"{p:>9}" for p in PARTS)
            + f"{'outside':>9}{'total':>8}{'CPU':>7}{'÷pred':>7}")
    print("ms per frame; outside = colour … write (after the prediction)\n" + head)
    for clip in a.clips:
        for model in a.models:
            seen = set()
            for overrides in ({}, {"mode": "overlay"}):
                mode, _n, ms, cpu = profile(spaces[clip], model, overrides, a.frames,
                                            a.repeat, precision, a.wall)
                if mode in seen:
                    continue  # meshswap's default is overlay already
                seen.add(mode)
                total = sum(ms.values())
                print(f"{clip:7} {model:8} {mode:9}" + "".join(f"{ms[p]:9.1f}" for p in PARTS)
                      + f"{sum(ms[p] for p in OUTSIDE):9.1f}{total:8.1f}{cpu:7.1f}"
                      + f"{total / ms['predict']:7.2f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
