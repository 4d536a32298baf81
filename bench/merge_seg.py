"""Segmenter mask modes bench: does the hand over the mouth stay in front, and at what cost.

Workspace (built once in --keep DIR and reused; untimed): the Pexels clip as dst (640×360,
dst kept in its video, faces extracted with the defaults), its own faces as src, and a
quick96 model trained for a few iterations (the default preset; its quality does not
matter here: inside an occluder the result must show dst's own pixels whatever face was
drawn). The segmenter is the workspace's dst network when one is given with --segmenter
(copied in as dst's own), else the shipped generic one.

Measures, per mask mode, on the hand frames (0-based 50–239, `segment.data.PEXELS_HAND`;
`--frames 51-240` as merge numbers them):

* occlusion kept (`eval/occlusion.py`): the share of the pixels inside the hand-labelled
  occluders (tests/fixtures/segment/pexels_hand.json, helper A's polygons) that the merged
  frame keeps as dst's own (within 8 grey levels); goal ≥ 0.9 with seg-dst;
* frames/s of `merge --to-frames` over those frames (PNG writing included) and, for the
  speed goal, of the default merge of the whole clip straight into its video, with a seg
  mode and without (≥ 15 frames/s at 360p with a seg mode);
* the worker's CPU ms per frame by part (in this process, 1 thread, fp32): what the
  segmenter itself adds, steady beside other jobs;
* 2-core fps = 2 / (CPU s per frame): what two idle cores would reach if the work split
  perfectly (as bench/merge.py; on a machine shared with other jobs the wall time says
  more about the neighbours);
* the segmenter's inference per face (batch of 4 dst crops, 1 torch thread, as a pool
  worker runs it; CPU time; goal ≤ 15 ms).

Usage: nice -n 19 .venv/bin/python bench/merge_seg.py --keep DIR [--segmenter PATH]
       [--masks learned*dst seg-dst ...] [--no-video]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _measure import cpu_s, stop_forkserver  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIP = DATA / "pexels" / "woman_pose_variety.mp4"
FIXTURE = ROOT / "tests" / "fixtures" / "segment" / "pexels_hand.json"
HAND = "51-240"  # merge's frame numbers (1-based) of the 0-based frames 50–239
MASKS = ("learned*dst", "seg-dst", "learned*seg-dst", "learned*seg-prd*seg-dst")


def segmenter_paths(ws: Any, options: list[Any]) -> dict[str, Path]:
    from facelab.merge.segmasks import segmenter_paths as paths

    return paths(ws, options)


def build(root: Path, segmenter: Path | None) -> Any:
    from facelab.faces.extract import FaceExtractOptions, extract_faces
    from facelab.progress import NullReporter
    from facelab.segment.network import load_segmenter, save_segmenter
    from facelab.segment.shipped import person_path
    from facelab.train.trainer import TrainOptions, train
    from facelab.video.extract import extract_frames
    from facelab.workspace import Workspace

    ws = Workspace(root)
    if not (ws.aligned_dir("dst") / ".bench_done").exists():
        ws.root.mkdir(parents=True, exist_ok=True)
        ws.init()
        shutil.copyfile(CLIP, ws.root / f"data_dst{CLIP.suffix}")
        print("setup: extracting the Pexels dst …", flush=True)
        extract_frames(ws, "dst")
        extract_faces(ws, "dst", FaceExtractOptions(debug=False))
        (ws.aligned_dir("dst") / ".bench_done").touch()
    if not ws.aligned_dir("src").is_dir() or not any(ws.aligned_dir("src").iterdir()):
        shutil.copytree(ws.aligned_dir("dst"), ws.aligned_dir("src"), dirs_exist_ok=True)
    if not (ws.model_dir / "quick96_manifest.json").exists():
        print("setup: training quick96 for 8 iterations …", flush=True)
        train(ws, TrainOptions(model_name="quick96", preset="quick96", target_iteration=8,
                               batch_size=4, preview_every=0, workers=0, precision="fp32"),
              NullReporter())
    for side in ("dst", "src"):  # the given network as both sides' own, else none
        path = person_path(ws, side)
        for old in (path.with_suffix(".safetensors"), path.with_suffix(".json")):
            old.unlink(missing_ok=True)
        if segmenter is not None:
            net, card = load_segmenter(segmenter)
            path.parent.mkdir(exist_ok=True)
            save_segmenter(net, path, card)
    return ws


def timed(fn: Any) -> tuple[float, float]:
    start, cpu = time.perf_counter(), cpu_s()
    fn()
    wall = time.perf_counter() - start
    stop_forkserver()
    return wall, cpu_s() - cpu


def occluders(ws: Any) -> dict[int, np.ndarray]:
    """The labelled frames' occluder masks, by 0-based frame index."""
    from facelab.eval.occlusion import occluder_masks
    from facelab.merge.jobs import dst_faces
    from facelab.video.source import open_frames

    if not FIXTURE.is_file():
        return {}
    faces = dst_faces(ws)
    # the largest face of each frame, as the fixture's extractor took it
    landmarks = {int(Path(name).stem) - 1: (np.asarray(m.source_landmarks), float(m.yaw))
                 for name, metas in faces.items() for m in [max(metas, key=_area)]}
    source = open_frames(ws, "dst")
    shape = source.read(source.names[0]).shape
    source.close()
    return occluder_masks(FIXTURE, shape, landmarks)


def _area(meta: Any) -> float:
    return float(np.ptp(np.asarray(meta.source_landmarks), axis=0).prod())


def kept(ws: Any, occ: dict[int, np.ndarray]) -> tuple[float | None, list[float]]:
    from facelab.eval.occlusion import kept as kept_one
    from facelab.video.source import open_frames

    source = open_frames(ws, "dst")
    same = total = 0
    per = []
    for i in sorted(occ):
        name = f"{i + 1:05d}.png"
        merged = cv2.imread(str(ws.merged_dir / name))
        if merged is None:
            continue
        s, n = kept_one(source.read(name), merged, occ[i])
        same, total = same + s, total + n
        if n:  # a control frame (nothing in front of the face) has no occluder pixel
            per.append(s / n)
    source.close()
    return (same / total if total else None), per


def infer_ms(ws: Any, repeat: int = 20) -> float:
    """CPU ms per face of the dst segmenter on batches of 4 dst crops, one torch thread."""
    import torch

    from facelab.faces.facetype import FaceType, face_transform
    from facelab.merge.jobs import dst_faces
    from facelab.segment import infer
    from facelab.segment.shipped import load_for
    from facelab.video.source import open_frames

    torch.set_num_threads(1)
    net = load_for(ws, "dst")[0]
    source = open_frames(ws, "dst")
    crops = []
    for name, metas in sorted(dst_faces(ws).items())[100:104]:
        m = face_transform(metas[0].source_landmarks, FaceType.WHOLE_FACE, 96)
        crops.append(infer.cut(source.read(name), m, 96, net.resolution))
    source.close()
    infer.masks(net, crops)
    times = []
    for _ in range(repeat):  # CPU time: steadier than wall time beside other jobs
        t = time.thread_time()
        infer.masks(net, crops)
        times.append((time.thread_time() - t) / len(crops) * 1000)
    return statistics.median(times)


def mask_flicker(ws: Any, frames: range = range(50, 240)) -> tuple[float, float]:
    """Mean |mask(t) - mask(t-1)| of seg-dst's masks (aligned-face coordinates, the face's
    track) over `frames`, raw and smoothed as the merge smooths them."""
    from facelab.merge.jobs import dst_faces, dst_frames, face_jobs
    from facelab.merge.options import MergeOptions
    from facelab.merge.predictor import model_info
    from facelab.merge.segmasks import FrameReader
    from facelab.segment.shipped import load_for
    from facelab.video.source import open_frames

    net = load_for(ws, "dst")[0]
    info = model_info(ws.model_dir, "quick96")
    paths = dst_frames(ws)
    jobs = face_jobs(paths, dst_faces(ws), 4, 23.976)
    run = [(paths[i], jobs.get(paths[i].name, [])) for i in frames]
    source = open_frames(ws, "dst")
    out = []
    for smooth in (0, 4):
        reader = FrameReader(run, list(frames), [], [MergeOptions(mask="seg-dst",
                                                                  smooth=smooth)] * len(run),
                             lambda ps: (img for _, img in source.frames([p.name for p in ps])),
                             net, info.resolution, info.face_type)
        masks = []
        for i in range(0, len(run), 4):
            _, seg = reader.batch(i, min(4, len(run) - i))
            masks += [m[0] if m else None for m in seg or []]
        steps = [np.abs(a - b).mean() for a, b in pairwise(masks)
                 if a is not None and b is not None]
        out.append(float(np.mean(steps)))
    source.close()
    return out[0], out[1]


def profile(ws: Any, masks: tuple[str, ...] = ("learned*dst", "seg-dst"),
            frames: range = range(100, 164), repeat: int = 2) -> None:
    """CPU ms per frame of the merge's worker in this process (1 torch thread, fp32, one
    work item of `frames` with its context), by part, each mask mode in turn `repeat`
    times: the segmenter's own cost, steady beside other jobs as wall time is not."""
    import tempfile

    from facelab.merge import compose, segmasks, worker
    from facelab.merge.jobs import dst_faces, dst_frames, face_jobs
    from facelab.merge.options import MergeOptions
    from facelab.merge.predictor import model_info
    from facelab.provenance.mark import Mark
    from facelab.segment.infer import WINDOW
    from facelab.video.source import open_frames

    info = model_info(ws.model_dir, "quick96")
    paths = dst_frames(ws)
    jobs = face_jobs(paths, dst_faces(ws), 4, 23.976)
    spent: dict[str, float] = {}

    def wrap(owner: Any, name: str, part: str) -> None:
        f = getattr(owner, name)

        def timed_part(*a: Any, **k: Any) -> Any:
            t = time.process_time()
            try:
                return f(*a, **k)
            finally:
                spent[part] = spent.get(part, 0.0) + time.process_time() - t

        setattr(owner, name, timed_part)

    for owner, name, part in ((segmasks.FrameReader, "batch", "read+seg"),
                              (worker, "_predict", "predict"), (compose, "frame_mask", "mask"),
                              (worker, "merge_face", "compose"), (worker, "_write", "write")):
        wrap(owner, name, part)
    lo, hi = frames.start, frames.stop
    with tempfile.TemporaryDirectory(prefix="merge_seg_") as out:
        for _ in range(repeat):
            for mask in masks:
                opts = MergeOptions(mask=mask, mode=info.blend)
                seg = segmenter_paths(ws, [opts]) if opts.seg_parts else {}
                worker.init(worker.Setup(ws.model_dir, "quick96", "cpu", opts, Path(out),
                                         None, None, Mark.synthetic(info.model_id), "fp32",
                                         open_frames(ws, "dst"), None, seg), 1)
                run = [(paths[i], jobs.get(paths[i].name, [])) for i in frames]
                near = [*range(lo - WINDOW, lo), *range(hi, hi + WINDOW)]
                item = worker.Item(run, None, None, list(frames),
                                   [(q, paths[q], jobs.get(paths[q].name, [])) for q in near])
                worker.work(item)  # warm-up
                spent.clear()
                t = time.process_time()
                worker.work(item)
                total = (time.process_time() - t) / len(run) * 1000
                parts = ", ".join(f"{k} {v / len(run) * 1000:.1f}" for k, v in spent.items())
                print(f"worker, {mask:<12}: {total:.0f} CPU ms/frame ({parts})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, required=True, help="the workspace (reused)")
    parser.add_argument("--segmenter", type=Path, default=None,
                        help="a segmenter (no suffix) to use as the person's own instead "
                        "of the shipped one")
    parser.add_argument("--masks", nargs="+", default=list(MASKS))
    parser.add_argument("--no-video", action="store_true",
                        help="skip the whole-clip merges into the video")
    args = parser.parse_args()
    from facelab.merge.merger import merge
    from facelab.merge.options import MergeOptions
    from facelab.progress import NullReporter

    ws = build(args.keep, args.segmenter)
    occ = occluders(ws)
    labelled = f"{len(occ)} labelled frames" if occ else f"no fixture at {FIXTURE}"
    print(f"Pexels 640×360, quick96, frames {HAND}; occluders: {labelled}")
    print(f"segmenter inference: {infer_ms(ws):.1f} CPU ms per face (batch 4, 1 thread)")
    profile(ws)
    raw, smooth = mask_flicker(ws)
    print(f"seg-dst mask flicker (mean |Δ| frame to frame, frames 50-239): raw {raw:.4f}, "
          f"smoothed {smooth:.4f}")
    print(f"{'mask':<26} {'kept':>6} {'min':>6} {'to frames fps':>14} {'CPU ms/frame':>13} "
          f"{'2-core fps':>11}")
    for mask in args.masks:
        done: list[int] = []

        def run(mask: str = mask, done: list[int] = done) -> None:
            done.append(merge(ws, "quick96", MergeOptions(mask=mask), NullReporter(),
                              device="cpu", frames_spec=HAND, to_video=False,
                              force=True).merged_now)

        wall, cpu = timed(run)
        share, per = kept(ws, occ)
        low = min(per) if per else None
        print(f"{mask:<26} {'—' if share is None else f'{share:.3f}':>6} "
              f"{'—' if low is None else f'{low:.3f}':>6} {done[0] / wall:>14.1f} "
              f"{cpu / done[0] * 1000:>13.0f} {2 * done[0] / cpu:>11.1f}", flush=True)
    if args.no_video:
        return
    for mask in ("learned*dst", "seg-dst"):
        done = []

        def whole(mask: str = mask, done: list[int] = done) -> None:
            done.append(merge(ws, "quick96", MergeOptions(mask=mask), NullReporter(),
                              device="cpu", force=True).merged_now)

        wall, cpu = timed(whole)
        print(f"whole clip to video, {mask:<12}: {done[0] / wall:.1f} frames/s "
              f"({cpu / done[0] * 1000:.0f} CPU ms/frame: 2-core {2 * done[0] / cpu:.1f} "
              f"frames/s; {done[0]} frames)", flush=True)


if __name__ == "__main__":
    main()
