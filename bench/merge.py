"""Merge bench: frames/s of `facelab merge` against the model's prediction alone, same run.

Workspaces (built once in a temporary folder, or kept in --keep DIR and reused; untimed):
GRID speaker A clip 1 as dst (360×288, 75 frames; below 360p, the size GRID has) with
speaker B as src, and the Pexels clip as a second dst (640×360 already: no scaling), both
extracted at full rate with the default detector (`extract_frames` + `extract_faces`). A
quick96 model (the default preset, 96 px, DF-UD 128/64/64) and optionally the SAE defaults
(128 px, LIAE-UD 256/64/64) are trained for a few iterations on GRID and copied to the
Pexels workspace: the weights' quality does not change the cost, the architecture does.

Per clip and model:

* predict: the merger's own crops (cv2.warpAffine of each frame's faces, made untimed
  beforehand) through `Predictor.predict`, one batch per frame, in this process with 1 torch
  thread (what each pool worker runs) and with 2 (what `--workers 1` runs). The 2-process
  figure is 2× the 1-thread rate (perfect scaling, no process cost): the bar for workers 2.
* merge: `merge(force=True)` with dst kept in its video (the default of `video extract`):
  with defaults (straight into the result video, the worker layout measured or its default
  on a short clip), then with the fixed layouts the defaults must match (1 process × 2
  threads, 2 × 1), then `--to-frames` (a PNG per frame) and `--mode overlay`. Model
  loading, pool start, decoding, the provenance mark, encoding and the join are all
  inside. ratio = merge wall time / the faster prediction on the two cores (1 process with
  2 threads, or the 2-process ceiling); goals ≥ 25 frames/s and ratio ≤ 1.3.

On a machine shared with other jobs the wall times say more about the neighbours than about
facelab, so two CPU-based columns follow: CPU ratio = merge CPU per frame / prediction CPU
per frame at 1 thread, and 2-core fps = 2 / (CPU s per frame), the rate two idle cores
would reach if the work split perfectly (an upper bound; pool start and model loads
included).

Timings are medians over --repeat runs; CPU ms per frame (user + system of this process and
its finished pool workers) is printed beside them: on a shared machine it is far steadier.

Usage: .venv/bin/python bench/merge.py [--repeat N] [--models quick96 sae] [--keep DIR]
       [--max-frames N] [--clips grid pexels]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _measure import cpu_s, stop_forkserver  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SRC = DATA / "grid" / "speaker_b.mpg"
CLIPS = {"grid": DATA / "grid" / "speaker_a_1.mpg",
         "pexels": DATA / "pexels" / "woman_pose_variety.mp4"}
MODELS = {"quick96": ("quick96", 8), "sae": ("sae", 4),  # name: (preset, iterations)
          "meshswap": ("meshswap", 2)}
#: (label, merge options, workers (None: the measured / default layout), to_video)
RUNS = (("defaults", {}, None, None), ("defaults", {}, 1, None), ("defaults", {}, 2, None),
        ("to frames", {}, None, False), ("overlay", {"mode": "overlay"}, None, None))
GOAL_FPS, GOAL_RATIO = 25.0, 1.3


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    start, cpu = time.perf_counter(), cpu_s()
    fn()
    wall = time.perf_counter() - start
    stop_forkserver()
    return wall, cpu_s() - cpu


def build(root: Path, models: list[str]) -> dict[str, Path]:
    """GRID and Pexels workspaces with aligned dst faces and trained models (reused)."""
    from facelab.faces.extract import FaceExtractOptions, extract_faces
    from facelab.progress import NullReporter
    from facelab.train.trainer import TrainOptions, train
    from facelab.video.extract import extract_frames
    from facelab.workspace import Workspace

    spaces = {}
    for name, clip in CLIPS.items():
        ws = Workspace(root / name)
        spaces[name] = ws.root
        if (ws.aligned_dir("dst") / ".bench_done").exists():
            continue
        ws.root.mkdir(parents=True, exist_ok=True)
        ws.init()
        shutil.copyfile(clip, ws.root / f"data_dst{clip.suffix}")
        sides = ["dst"]
        if name == "grid":
            shutil.copyfile(SRC, ws.root / f"data_src{SRC.suffix}")
            sides.append("src")
        for side in sides:
            print(f"setup: extracting {name} {side} …", flush=True)
            extract_frames(ws, side)
            extract_faces(ws, side, FaceExtractOptions(debug=False))
        (ws.aligned_dir("dst") / ".bench_done").touch()
    grid = Workspace(spaces["grid"])
    for m in models:
        preset, iters = MODELS[m]
        if not (grid.model_dir / f"{m}_manifest.json").exists():
            print(f"setup: training {m} for {iters} iterations …", flush=True)
            train(grid, TrainOptions(model_name=m, preset=preset, target_iteration=iters,
                                     batch_size=4, preview_every=0, workers=0,
                                     precision="fp32"), NullReporter())
    pex = Workspace(spaces["pexels"])
    shutil.copytree(grid.model_dir, pex.model_dir, dirs_exist_ok=True)
    return spaces


def crops_of(root: Path, model: str, max_frames: int | None) -> list[tuple[Any, ...]]:
    """The merger's predict arguments for every dst frame with faces (as merge.worker.work makes
    them): the crops, and for a family that needs them the meshes and poses."""
    import cv2

    from facelab.faces.facetype import face_transform
    from facelab.merge.jobs import dst_faces, face_jobs
    from facelab.merge.predictor import model_info
    from facelab.merge.worker import _crop_meshes
    from facelab.video.source import open_frames
    from facelab.workspace import Workspace

    ws = Workspace(root)
    info = model_info(ws.model_dir, model)
    res = info.resolution
    source = open_frames(ws, "dst")
    frames = [ws.frames_dir("dst") / n for n in source.names][:max_frames]
    jobs = face_jobs(frames, dst_faces(ws), 4, 25.0, meshes=info.needs_mesh)
    out: list[tuple[Any, ...]] = []
    for p in frames:
        faces = jobs.get(p.name, [])
        if not faces:
            continue
        frame = source.read(p.name)
        mats = [face_transform(f.landmarks, info.face_type, res, f.yaw) for f in faces]
        crops = np.stack([cv2.warpAffine(frame, m, (res, res), flags=cv2.INTER_CUBIC,
                                         borderMode=cv2.BORDER_REPLICATE)
                          for m in mats]).astype(np.float32) / 255
        extra = _crop_meshes([(p, faces)], [mats]) if info.needs_mesh else ()
        out.append((crops, *extra))
    return out


def predict_rate(root: Path, model: str, crops: list[tuple[Any, ...]], threads: int,
                 repeat: int, precision: str) -> tuple[float, float, float]:
    """Median wall and CPU seconds of predicting every frame's faces; model load seconds."""
    import torch

    from facelab.merge.predictor import load_predictor
    from facelab.workspace import Workspace

    torch.set_num_threads(threads)
    start = time.perf_counter()
    pred = load_predictor(Workspace(root).model_dir, model, "cpu", precision)
    load = time.perf_counter() - start
    pred.predict(*crops[0])  # warm-up, untimed
    runs = [timed(lambda: [pred.predict(*c) for c in crops]) for _ in range(repeat)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            load)


def merge_rate(root: Path, model: str, overrides: dict[str, Any], workers: int | None,
               repeat: int, max_frames: int | None, precision: str,
               to_video: bool | None) -> tuple[float, float, int]:
    from facelab.merge.merger import merge
    from facelab.merge.options import MergeOptions
    from facelab.progress import NullReporter
    from facelab.workspace import Workspace

    ws = Workspace(root)
    runs, done = [], []
    spec = None if max_frames is None else f"1-{max_frames}"

    def run() -> None:
        done.append(merge(ws, model, MergeOptions(**overrides), NullReporter(), device="cpu",
                          workers=workers, frames_spec=spec, precision=precision,
                          to_video=to_video, force=True).merged_now)

    for _ in range(repeat):
        shutil.rmtree(ws.merged_dir, ignore_errors=True)
        runs.append(timed(run))
    frames = done[-1]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=["quick96"], choices=list(MODELS))
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--keep", type=Path, default=None,
                        help="build the workspaces here and reuse them on the next run")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="only each clip's first N frames (merge --frames 1-N)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "auto"],
                        help="the prediction's precision, each measured in turn (auto: what "
                        "merge picks here, resolved once)")
    a = parser.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               "?")
    print(f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores usable; repeat {a.repeat}; "
          f"load average {os.getloadavg()[0]:.1f}")
    tmp = None
    if a.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_merge_")
        root = Path(tmp.name)
    else:
        root = a.keep
        root.mkdir(parents=True, exist_ok=True)
    try:
        spaces = build(root, a.models)
        head = (f"{'clip':7} {'model':8} {'run':22} {'frames':>6} {'fps':>7} {'ratio':>6} "
                f"{'CPU ms/fr':>9} {'CPU ratio':>9} {'2-core fps':>10}")
        import torch

        from facelab.device import choose_precision

        runs_of = [(p, choose_precision(p, torch.device("cpu"))[0]) for p in a.precisions]
        for clip, model, (asked, precision) in ((c, m, p) for c in a.clips for m in a.models
                                                 for p in runs_of):
            crops = crops_of(spaces[clip], model, a.max_frames)
            n = len(crops)
            rows = [head]
            pred: dict[int, float] = {}
            pred_cpu = 0.0
            for threads in (1, 2):
                wall, cpu_t, load = predict_rate(spaces[clip], model, crops, threads,
                                                 a.repeat, precision)
                pred[threads] = wall
                pred_cpu = pred_cpu or cpu_t / n  # 1 thread: the model's own CPU cost
                rows.append(f"{clip:7} {model:8} {f'predict {threads} thread':22} {n:6d} "
                            f"{n / wall:7.1f} {'':6} {1000 * cpu_t / n:9.1f}"
                            f"   (model load {load:.2f} s)")
            pred[0] = pred[1] / 2  # two 1-thread processes, perfect scaling
            rows.append(f"{clip:7} {model:8} {'predict 2 proc. ceil.':22} {n:6d} "
                        f"{n / pred[0]:7.1f} {'':6} {'':9} {'':9} {2 / pred_cpu:10.1f}")
            for label, overrides, workers, to_video in RUNS:
                wall, cpu_t, frames = merge_rate(spaces[clip], model, overrides, workers,
                                                    a.repeat, a.max_frames, precision,
                                                    to_video)
                base = min(pred[0], pred[2]) * frames / n  # the faster use of the 2 cores
                fps = frames / wall
                met = fps >= GOAL_FPS and wall / base <= GOAL_RATIO
                flag = "" if met else "  (goal missed)"
                who = f"w{workers}" if workers else "auto"
                rows.append(f"{clip:7} {model:8} {f'merge {label} {who}':22} "
                            f"{frames:6d} {fps:7.1f} {wall / base:6.2f} "
                            f"{1000 * cpu_t / frames:9.1f} {cpu_t / frames / pred_cpu:9.2f} "
                            f"{2 * frames / cpu_t:10.1f}{flag}")
            print(f"precision {asked} → {precision}")
            print("\n".join(rows), f"\nload average {os.getloadavg()[0]:.1f}\n", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
