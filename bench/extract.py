"""Face extraction bench: frames/s of the model alone and of the whole `extract_faces` stage.

For each clip (GRID speaker B, 360×288; the Pexels clip, 640×360) and each detector
(accurate = RetinaFace, fast = BlazeFace):

* raw: every frame decoded into memory first, then `detector.detect` + `landmarker.fit`
  per face timed in one process. The 2-core ceiling printed beside it is 2× that (two
  independent processes, perfect scaling).
* pipeline: `extract_faces` (read PNG, detect, landmarks, align, JPEG encode, write,
  faces.json) on a workspace whose frames `extract_frames` wrote (untimed): with 1 worker
  (the old sequential path) and the default workers, debug off (like raw), and with the
  debug images on (the dst default). ratio = pipeline frames/s / raw frames/s.

Each measurement runs in a fresh process (this script with --one) so its peak RSS (the
process's plus its largest worker's, from getrusage) shows whether memory stays flat from
GRID to the longer, larger Pexels clip. Timings are medians over --repeat runs; CPU ms per
frame (user + system, all processes and threads, model loading included for the pipeline)
is printed beside them: on a shared machine it is far less noisy than the wall time.

Usage: .venv/bin/python bench/extract.py [--repeat N] [--max-frames N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _measure import cpu_s, stop_forkserver  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIPS = {"grid": DATA / "grid" / "speaker_b.mpg",
         "pexels": DATA / "pexels" / "woman_pose_variety.mp4"}
DETECTORS = ("accurate", "fast")
# (label, workers, debug); workers None = extract_faces's default (auto)
PIPELINES = (("pipe 1 worker", 1, False), ("pipe auto", None, False),
             ("pipe auto+debug", None, True))


def peak_rss_mb() -> tuple[float, float]:
    """Peak RSS of this process and of its largest finished child, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def raw_rate(clip: Path, detector: str) -> dict[str, Any]:
    """Decode all frames, then time detector + landmarks alone on them."""
    import av

    from facelab.faces.extractor import Extractor, ExtractorOptions

    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    ex = Extractor(ExtractorOptions(detector=detector))
    det, lm = ex.detector, ex.landmarker
    det.detect(frames[0])  # warm-up, untimed
    faces = 0
    start, cpu = time.perf_counter(), cpu_s()
    for frame in frames:
        for d in det.detect(frame):
            faces += lm.fit(frame, d.box) is not None
    wall, cpu = time.perf_counter() - start, cpu_s() - cpu
    return {"frames": len(frames), "faces": faces, "wall": wall, "cpu": cpu}


def pipeline(template: Path, detector: str, workers: int | None, debug: bool
             ) -> dict[str, Any]:
    """Copy the extracted frames to a fresh workspace (untimed), time extract_faces."""
    from facelab.faces.extract import FaceExtractOptions, extract_faces
    from facelab.faces.extractor import ExtractorOptions
    from facelab.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="bench_ws_", dir=template.parent))
    try:
        shutil.copytree(template, root, dirs_exist_ok=True)
        opts = FaceExtractOptions(ExtractorOptions(detector=detector), debug=debug,
                                  workers=workers)
        start, cpu = time.perf_counter(), cpu_s()
        report = extract_faces(Workspace(root), "dst", opts)
        wall = time.perf_counter() - start
        stop_forkserver()  # so its workers' CPU time reaches RUSAGE_CHILDREN
        cpu = cpu_s() - cpu
        return {"frames": report.processed_now, "faces": report.faces_written, "wall": wall,
                "cpu": cpu}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def one(args: list[str]) -> None:
    """Child mode: run one measurement, print it as JSON with the peak RSS."""
    kind, detector = args[0], args[1]
    if kind == "raw":
        out = raw_rate(Path(args[2]), detector)
    else:
        workers = None if args[3] == "auto" else int(args[3])
        out = pipeline(Path(args[2]), detector, workers, args[4] == "1")
    out["rss_self"], out["rss_child"] = peak_rss_mb()
    print(json.dumps(out))


def child(*args: str) -> dict[str, Any]:
    res = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True,
                         text=True, check=False, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"bench child {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_template(clip: Path, tmp: Path, max_frames: int | None) -> Path:
    from facelab.video.extract import extract_frames
    from facelab.workspace import Workspace, list_images

    root = tmp / f"frames_{clip.stem}"
    root.mkdir()
    shutil.copyfile(clip, root / f"data_dst{clip.suffix}")
    extract_frames(Workspace(root), "dst")
    if max_frames:
        for path in list_images(root / "data_dst")[max_frames:]:
            path.unlink()
    return root


def median_run(repeat: int, *args: str) -> dict[str, Any]:
    runs = [child(*args) for _ in range(repeat)]
    best = dict(runs[-1])
    best["wall"] = statistics.median(r["wall"] for r in runs)
    best["cpu"] = statistics.median(r["cpu"] for r in runs)
    best["rss"] = max(max(r["rss_self"], r["rss_child"]) for r in runs)
    return best


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        one(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=None,
                        help="cut each clip to its first N frames (raw: all frames)")
    parser.add_argument("--clips", nargs="*", default=list(CLIPS))
    parser.add_argument("--detectors", nargs="*", default=list(DETECTORS))
    a = parser.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               "?")
    print(f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores usable; repeat {a.repeat}")
    head = (f"{'clip':7} {'detector':8} {'run':16} {'frames':>6} {'faces':>6} {'fps':>7} "
            f"{'ratio':>6} {'CPU ms/fr':>9} {'peak RSS MiB':>14}")
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        for name in a.clips:
            template = make_template(CLIPS[name], Path(tmp), a.max_frames)
            for det in a.detectors:
                raw = median_run(a.repeat, "raw", det, str(CLIPS[name]))
                raw_fps = raw["frames"] / raw["wall"]
                rows.append(f"{name:7} {det:8} {'raw 1 process':16} {raw['frames']:6d} "
                            f"{raw['faces']:6d} {raw_fps:7.1f} {1.0:6.2f} "
                            f"{1000 * raw['cpu'] / raw['frames']:9.1f} {raw['rss']:14.0f}")
                rows.append(f"{name:7} {det:8} {'raw 2-core ceil.':16} {'':6} {'':6} "
                            f"{2 * raw_fps:7.1f}")
                for label, workers, debug in PIPELINES:
                    r = median_run(a.repeat, "pipe", det, str(template),
                                   "auto" if workers is None else str(workers),
                                   "1" if debug else "0")
                    fps = r["frames"] / r["wall"]
                    rss = f"{r['rss_self']:.0f}+{r['rss_child']:.0f}/w"
                    rows.append(f"{name:7} {det:8} {label:16} {r['frames']:6d} "
                                f"{r['faces']:6d} {fps:7.1f} {fps / raw_fps:6.2f} "
                                f"{1000 * r['cpu'] / r['frames']:9.1f} {rss:>14}")
            print("\n".join([head, *rows]), flush=True)
            rows.clear()


if __name__ == "__main__":
    main()
