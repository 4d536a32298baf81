"""Soak bench (issue 15, item 11): a long dst through `video extract`, `extract` and `merge`,
with the memory, open files and throughput of each stage sampled every second.

A leak of a few kB per frame is invisible on GRID's 75 frames and 150 MB on a 10-minute
clip. So the dst is a shared clip looped to --frames frames (default 15,000: 10 minutes of
GRID at 25 fps; FFmpeg's `-stream_loop`, re-encoded to H.264 with the timestamps renumbered;
PyAV where no ffmpeg binary is found), and a meshswap model is built from another GRID
speaker (`facelab train --preset meshswap`: seconds; in ROOT/model/, with the unlooped clip
as dst). Setup is untimed and kept in --root for the next run; the soak runs in ROOT/soak/.

Each stage runs as the real CLI in a subprocess, its outputs removed first: by default the
streaming route (`facelab -w ROOT/soak video extract dst`, dst kept in its video; `extract
dst`; `merge --model-name soak --to-video`, counted by its finished segments), or with
`--stages video extract merge` the PNG route (`--frames png`, `merge --to-frames`); every --interval
seconds the bench sums over that process and all its descendants (fork server, pool
workers; psutil if installed, else /proc) the resident memory (RSS), open file descriptors
and processes, and counts the stage's output files (frames done: data_dst/*.png,
aligned_debug/*.jpg, merged/*.png).

Per stage it prints RSS at 1,000 frames (a quarter of the run when shorter) and at the end
of the work, their ratio (goal ≤ 1.10: flat within 10 %) and the peak; file descriptors and
processes at the same points (goal: equal); the throughput in frames/s over each tenth of
the frames (goal: steady; start-up and exit reported apart). Every sample goes to --csv
(stage, seconds, frames, RSS MB, fds, processes) for the curves.

Usage: .venv/bin/python bench/soak.py [--frames 15000] [--root DIR] [--csv FILE]
           [--clip grid/speaker_a_1.mpg] [--src grid/speaker_b.mpg] [--interval 1]
           [--stages index extract stream | video extract merge]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODEL = "soak"
MARK = ".soak"  # a folder this bench built: its stage outputs may be removed
REF_FRAMES = 1000
GOAL_RSS = 1.10


@dataclass(frozen=True)
class Stage:
    name: str
    args: tuple[str, ...]
    outputs: str  # folder (relative to the workspace) whose files count frames done
    suffix: str
    clear: tuple[str, ...]  # what a rerun removes first, so the stage does all the work


STAGES = {
    "video": Stage("video extract dst --frames png", ("video", "extract", "dst", "--frames",
                                                       "png"), "data_dst", ".png", ("data_dst",)),
    # dst kept in its video (the default): frames are only indexed, nothing to count
    "index": Stage("video extract dst", ("video", "extract", "dst"), "data_dst", ".none",
                   ("data_dst/frames.json", "data_dst/frames_index.json",
                    "data_dst/video.json")),
    "extract": Stage("extract dst", ("extract", "dst"), "data_dst/aligned_debug", ".jpg",
                     ("data_dst/aligned", "data_dst/aligned_debug", "data_dst/faces.json",
                      "data_dst/aligned_missing.txt")),
    "merge": Stage("merge --to-frames", ("merge", "--model-name", MODEL, "--to-frames"),
                   "data_dst/merged", ".png", ("data_dst/merged",)),
    # straight into the video: frames done counted from the finished segments' names
    "stream": Stage("merge --to-video", ("merge", "--model-name", MODEL, "--to-video"),
                    "data_dst/merged_video", ".mp4", ("data_dst/merged_video", "result.mp4")),
}


@dataclass
class Sample:
    t: float  # seconds since the stage started
    frames: int
    rss_mb: float
    fds: int
    procs: int


@dataclass
class Run:
    stage: Stage
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    frames: int = 0


# -- the process tree ------------------------------------------------------------------------

def _children_proc() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and ')'
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    try:
        import psutil
    except ImportError:
        kids, out, todo = _children_proc(), [], [pid]
        while todo:
            out.append(p := todo.pop())
            todo.extend(kids.get(p, []))
        return out
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return []


_PAGE = os.sysconf("SC_PAGE_SIZE")


def usage(pids: list[int]) -> tuple[float, int, int]:
    """(RSS MB, open fds, processes) summed over `pids` still alive."""
    rss = fds = procs = 0
    for pid in pids:
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
            fds += len(os.listdir(f"/proc/{pid}/fd"))
            procs += 1
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    return rss / 2**20, fds, procs


def count(folder: Path, suffix: str) -> int:
    """Frames done: output files, or for segments (seg_00001-00100.mp4) the frames they
    hold."""
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if e.name.endswith(suffix) and not e.name.startswith(".")]
    except FileNotFoundError:
        return 0
    if suffix != ".mp4":
        return len(names)
    spans = (n[4:-4].split("-") for n in names if n.startswith("seg_"))
    return sum(int(b) - int(a) + 1 for a, b in spans)


# -- running ---------------------------------------------------------------------------------

def facelab(ws: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "facelab", "-w", str(ws), "--quiet", *args]


def setup(ws: Path, clip: Path, src: Path, frames: int) -> None:
    """The looped dst and the meshswap model (kept for the next run)."""
    ws.mkdir(parents=True, exist_ok=True)
    dst = ws / "data_dst.mp4"
    stamp = ws / ".soak_dst"
    if not (stamp.exists() and stamp.read_text() == f"{clip.name} {frames}"
            and _frames_of(dst) == frames):
        print(f"setup: looping {clip.name} to {frames} frames …", flush=True)
        dst.unlink(missing_ok=True)
        for stage in STAGES.values():
            _clear(ws, stage)
        loop_clip(clip, dst, frames)
        if (made := _frames_of(dst)) != frames:
            raise SystemExit(f"setup: the looped dst has {made} frames, not {frames}.")
        stamp.write_text(f"{clip.name} {frames}")
    if not (ws / "model" / f"{MODEL}_manifest.json").exists():
        build_model(ws.parent / "model", src, clip, ws / "model")


def build_model(mws: Path, src: Path, dst: Path, into: Path) -> None:
    """A meshswap model trained in a workspace of its own (training reads dst's faces too:
    the clip unlooped), copied into the soak workspace as `bench/merge.py` does."""
    print(f"setup: meshswap model from {src.name} (dst {dst.name}) …", flush=True)
    mws.mkdir(parents=True, exist_ok=True)
    for side, clip in (("src", src), ("dst", dst)):
        shutil.copyfile(clip, mws / f"data_{side}{clip.suffix}")
    for args in (("video", "extract", "src"), ("video", "extract", "dst"),
                 ("extract", "src"), ("extract", "dst", "--no-debug"),
                 ("train", "--model-name", MODEL, "--preset", "meshswap")):
        res = subprocess.run(facelab(mws, *args), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        if res.returncode != 0:
            raise SystemExit(f"setup: `facelab {' '.join(args)}` failed:\n{res.stderr}")
    shutil.copytree(mws / "model", into, dirs_exist_ok=True)


def _frames_of(video: Path) -> int | None:
    import av

    try:
        with av.open(str(video)) as c:
            return c.streams.video[0].frames
    except (av.error.FFmpegError, FileNotFoundError, IndexError):
        return None


def loop_clip(clip: Path, dst: Path, frames: int) -> None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        try:
            import imageio_ffmpeg

            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError):
            exe = None
    if exe is not None:
        import av

        with av.open(str(clip)) as c:
            fps = c.streams.video[0].average_rate
        subprocess.run([exe, "-v", "error", "-y", "-stream_loop", "-1", "-i", str(clip),
                        "-frames:v", str(frames), "-t", f"{float(frames / fps):.3f}",
                        # each loop's timestamps renumbered: no gap or overlap to drop at
                        "-vf", "setpts=N/FRAME_RATE/TB", "-af", "asetpts=N/SR/TB",
                        "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                        "-pix_fmt", "yuv420p", "-c:a", "aac", str(dst)], check=True)
        return
    _loop_pyav(clip, dst, frames)


def _loop_pyav(clip: Path, dst: Path, frames: int) -> None:
    """The same loop with PyAV (video only) where no ffmpeg binary is at hand."""
    import av

    with av.open(str(clip)) as first:
        vs_in = first.streams.video[0]
        fps, w, h = vs_in.average_rate, vs_in.width, vs_in.height
    done = 0
    with av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "18"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        while done < frames:
            with av.open(str(clip)) as inp:
                for f in inp.decode(video=0):
                    if done == frames:
                        break
                    vf = av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), "rgb24")
                    vf.pts = done
                    out.mux(vs.encode(vf))
                    done += 1
        out.mux(vs.encode(None))


def _clear(ws: Path, stage: Stage) -> None:
    for rel in stage.clear:
        p = ws / rel
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def run_stage(ws: Path, stage: Stage, interval: float) -> Run:
    _clear(ws, stage)
    run = Run(stage)
    outputs = ws / stage.outputs
    start = time.perf_counter()
    proc = subprocess.Popen(facelab(ws, *stage.args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss, fds, procs = usage(tree(proc.pid))
        if procs:
            run.samples.append(Sample(time.perf_counter() - start,
                                      count(outputs, stage.suffix), rss, fds, procs))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=interval)  # the exit is seen at once
    run.wall = time.perf_counter() - start
    reader.join(timeout=5)
    run.frames = count(outputs, stage.suffix)
    if proc.returncode != 0:
        raise SystemExit(f"{stage.name} failed (exit {proc.returncode}):\n"
                         f"{''.join(err)[-2000:]}")
    return run


# -- the report ------------------------------------------------------------------------------

def at_frames(samples: list[Sample], n: int) -> Sample | None:
    """The first sample with at least `n` frames done."""
    return next((s for s in samples if s.frames >= n), None)


def time_at(samples: list[Sample], n: float) -> float | None:
    """When `n` frames were done, interpolated between samples (for 0: the last sample
    before the first frame, so start-up is not counted as work)."""
    before = [s for s in samples if s.frames <= n]
    after = [s for s in samples if s.frames >= n]
    if not before or not after:
        return None
    a, b = before[-1], after[0]
    if b.frames == a.frames:
        return a.t
    return a.t + (b.t - a.t) * (n - a.frames) / (b.frames - a.frames)


def finished_at(run: Run) -> float:
    """When the last frame was there (the first sample showing it; else the exit)."""
    return next((x.t for x in run.samples if x.frames >= run.frames), run.wall)


def tenths(run: Run) -> list[float | None]:
    """frames/s over each tenth of the frames (start-up and wind-down left out)."""
    samples = [*run.samples, Sample(finished_at(run), run.frames, 0, 0, 0)]
    step = run.frames / 10
    times = [time_at(samples, k * step) for k in range(11)]
    return [step / (b - a) if a is not None and b is not None and b > a else None
            for a, b in itertools.pairwise(times)]


def report(run: Run, expected: int) -> list[str]:
    s = run.samples
    ref_n = min(REF_FRAMES, max(1, expected // 4))
    ref = at_frames(s, ref_n)
    working = [x for x in s if x.frames < run.frames]  # the end of the work, not the exit
    end = working[-1] if working else (s[-1] if s else None)
    lines = [f"{run.stage.name}: {run.frames} frames in {run.wall:.1f} s "
             f"({run.frames / run.wall:.1f} frames/s overall)"]
    first = next((x.t for x in s if x.frames > 0), None)
    if first is not None:
        tail = run.wall - finished_at(run)
        lines.append(f"  first frame after {first:.1f} s (start-up: imports, models, pool)"
                     + (f"; exit {tail:.1f} s after the last" if tail > 0 else ""))
    if ref is None or end is None or end.frames < ref.frames:
        lines.append(f"  too few samples to compare (none past {ref_n} frames): raise --frames")
        return lines
    peak = max(x.rss_mb for x in s)
    ratio = end.rss_mb / ref.rss_mb
    verdict = "flat" if ratio <= GOAL_RSS else "GROWS"
    lines.append(f"  RSS  at {ref.frames} frames {ref.rss_mb:.0f} MB, at the end "
                 f"({end.frames} frames) {end.rss_mb:.0f} MB: ratio {ratio:.3f} "
                 f"(goal ≤ {GOAL_RSS:.2f}: {verdict}); peak {peak:.0f} MB")
    lines.append(f"  fds  at {ref.frames} frames {ref.fds}, at the end {end.fds}, peak "
                 f"{max(x.fds for x in s)}; processes {ref.procs} → {end.procs}"
                 f"{'' if end.fds <= ref.fds + 2 else '  (fds GROW)'}")
    rates = tenths(run)
    known = [r for r in rates if r is not None]
    cells = " ".join("  -  " if r is None else f"{r:5.1f}" for r in rates)
    spread = f"; slowest/fastest {min(known) / max(known):.2f}" if known else ""
    lines.append(f"  frames/s per tenth: {cells}{spread}")
    return lines


def write_csv(path: Path, runs: list[Run]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["stage", "t_s", "frames", "rss_mb", "fds", "procs"])
        for r in runs:
            for s in r.samples:
                w.writerow([r.stage.name, f"{s.t:.2f}", s.frames, f"{s.rss_mb:.1f}", s.fds,
                            s.procs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=15000, help="dst length in frames")
    parser.add_argument("--clip", default="grid/speaker_a_1.mpg",
                        help="dst clip to loop, under ../shared/data/")
    parser.add_argument("--src", default="grid/speaker_b.mpg",
                        help="src clip for the meshswap model, under ../shared/data/")
    parser.add_argument("--root", type=Path, default=None,
                        help="scratch folder, kept and reused (default: a temporary one)")
    parser.add_argument("--csv", type=Path, default=None,
                        help="samples file (default: soak.csv in --root, else in the "
                        "temporary folder: /tmp/facelab_soak.csv)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--stages", nargs="+", default=["index", "extract", "stream"],
                        choices=list(STAGES), help="index extract stream: dst kept in its "
                        "video (the default route); video extract merge: the PNG route")
    a = parser.parse_args()
    clip, src = DATA / a.clip, DATA / a.src
    for p in (clip, src):
        if not p.is_file():
            raise SystemExit(f"{p} is absent (see ../shared/data/README.md).")
    if a.frames < 40:
        raise SystemExit("--frames must be at least 40 (tenths of the run need a few each).")
    tmp = None
    if a.root is None:
        tmp = tempfile.TemporaryDirectory(prefix="facelab_soak_")
        a.root = Path(tmp.name)
    elif a.root.exists() and any(a.root.iterdir()) and not (a.root / MARK).exists():
        raise SystemExit(f"{a.root} holds files this bench did not make: give an empty or "
                         "new folder (the bench removes its stages' outputs there).")
    a.root.mkdir(parents=True, exist_ok=True)
    (a.root / MARK).touch()
    ws = a.root / "soak"
    csv_path = a.csv or (a.root / "soak.csv" if tmp is None
                         else Path(tempfile.gettempdir()) / "facelab_soak.csv")
    print(f"{len(os.sched_getaffinity(0))} cores usable; load average "
          f"{os.getloadavg()[0]:.1f}; dst {clip.name} looped to {a.frames} frames; "
          f"workspace {ws}", flush=True)
    try:
        setup(ws, clip, src, a.frames)
        runs = []
        for name in a.stages:
            print(f"running {STAGES[name].name} …", flush=True)
            runs.append(run_stage(ws, STAGES[name], a.interval))
            write_csv(csv_path, runs)
            print("\n".join(report(runs[-1], a.frames)), flush=True)
        print(f"samples: {csv_path}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
