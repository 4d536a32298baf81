"""Video stage bench: facelab against the `ffmpeg` binary doing the same job in the same run.

Two jobs, on real clips from ../shared/data (and the Pexels clip upscaled to 1080p by the
ffmpeg binary, an untimed setup step):

* extract: a video to numbered PNG frames. facelab runs `extract_frames` (dst side) into a
  fresh workspace; ffmpeg runs `-i CLIP -compression_level 1 -pred paeth DIR/%05d.png`, the
  zlib level and row filter facelab's writer uses. ffmpeg at its own default (zlib level 6,
  what DeepFaceLab's extractor runs) is timed once beside them as a reference row.
* assemble: those PNG frames to H.264 mp4. facelab runs `assemble` (format mp4: libx264,
  preset medium, CRF 18, yuv420p); ffmpeg gets the same settings. No audio on either side.

Each measurement runs --repeat times, interleaved (facelab, ffmpeg, ...; the order flips
every round) because the machine is shared, and the median counts. ratio = ffmpeg wall time
/ facelab wall time (above 1: facelab is faster). CPU seconds (user + system, all threads)
are printed beside the wall times: they are far less noisy on a busy machine.

Usage: .venv/bin/python bench/video.py [--repeat N] [--data DIR] [--no-1080p]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import imageio_ffmpeg

from facelab.video.assemble import AssembleOptions, assemble
from facelab.video.extract import ExtractOptions, extract_frames
from facelab.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
X264 = ["-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p"]
PNG_MATCHED = ["-compression_level", "1", "-pred", "paeth"]


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    size: int = 0  # bytes written by the last run

    def median(self) -> tuple[float, float]:
        return statistics.median(self.wall), statistics.median(self.cpu)


def measure(timing: Timing, fn: Callable[[], Path], child: bool) -> None:
    """Run fn once, adding its wall and CPU seconds (own threads or child processes)."""
    who = resource.RUSAGE_CHILDREN if child else resource.RUSAGE_SELF
    r0, t0 = resource.getrusage(who), time.perf_counter()
    out = fn()
    wall, r1 = time.perf_counter() - t0, resource.getrusage(who)
    timing.wall.append(wall)
    timing.cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    files = [p for p in out.iterdir() if p.suffix == ".png"] if out.is_dir() else [out]
    timing.size = sum(p.stat().st_size for p in files)


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-nostdin", "-y", *args], check=True)


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for packet in c.demux(c.streams.video[0]) if packet.size)


class Case:
    """One clip: fresh output folders per run, removed between runs (untimed)."""

    def __init__(self, name: str, clip: Path, tmp: Path) -> None:
        self.name, self.clip, self.tmp = name, clip, tmp / name.split()[0]
        self.tmp.mkdir()
        self.ws = Workspace(self.tmp / "frames")  # facelab's frames, also assemble's input
        self.ws.init()
        self.frames = extract_frames(self.ws, "dst", [clip],
                                     ExtractOptions(fmt="png")).frames_total
        info = json.loads(self.ws.video_json.read_text())
        self.fps = str(info["fps"])
        self.pattern = str(self.ws.frames_dir("dst") / "%05d.png")

    def fresh(self, name: str) -> Path:
        path = self.tmp / name
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        return path

    def facelab_extract(self) -> Path:
        ws = Workspace(self.fresh("ws"))
        ws.init()
        extract_frames(ws, "dst", [self.clip], ExtractOptions(fmt="png", force=True))
        return ws.frames_dir("dst")

    def ffmpeg_extract(self, png: list[str]) -> Path:
        out = self.fresh("ff")
        out.mkdir()
        ffmpeg("-i", str(self.clip), *png, str(out / "%05d.png"))
        return out

    def facelab_assemble(self) -> Path:
        out = self.fresh("facelab.mp4")
        assemble(self.ws, AssembleOptions(frames_dir=self.ws.frames_dir("dst"), output=out,
                                          audio=False, force=True))
        return out

    def ffmpeg_assemble(self) -> Path:
        out = self.fresh("ffmpeg.mp4")
        ffmpeg("-framerate", self.fps, "-i", self.pattern, *X264, "-an", str(out))
        return out


def interleave(ours: Callable[[], Path], theirs: Callable[[], Path], repeat: int
               ) -> tuple[Timing, Timing]:
    """Time both sides `repeat` times each, alternating which goes first."""
    a, b = Timing(), Timing()
    for i in range(repeat):
        pair = [(a, ours, False), (b, theirs, True)]
        for timing, fn, child in pair if i % 2 == 0 else reversed(pair):
            measure(timing, fn, child)
    return a, b


def run_case(case: Case, repeat: int) -> list[tuple[str, Timing, Timing]]:
    extract = interleave(case.facelab_extract, lambda: case.ffmpeg_extract(PNG_MATCHED), repeat)
    written = len(list((case.tmp / "ff").glob("*.png")))
    if written != case.frames:
        print(f"  ! ffmpeg wrote {written} frames, facelab {case.frames}")
    reference = Timing()  # a 4-6× gap: one run is enough
    measure(reference, lambda: case.ffmpeg_extract([]), child=True)
    assembly = interleave(case.facelab_assemble, case.ffmpeg_assemble, repeat)
    counts = count_frames(case.tmp / "facelab.mp4"), count_frames(case.tmp / "ffmpeg.mp4")
    if counts[0] != counts[1]:
        print(f"  ! frames in the mp4s: facelab {counts[0]}, ffmpeg {counts[1]}")
    return [("extract → PNG", *extract),
            ("extract → PNG, ffmpeg at its default zlib 6 (1 run)", extract[0], reference),
            ("assemble → mp4", *assembly)]


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), platform.processor() or "unknown CPU")
    version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout
    return (f"{model}, {os.cpu_count()} cores; ffmpeg binary {version.split()[2]}, "
            f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), OpenCV {cv2.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per side (median counts)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--no-1080p", action="store_true", help="skip the upscaled clip")
    args = parser.parse_args()
    print(machine())
    print(f"median of {args.repeat} interleaved runs; ratio = ffmpeg time / facelab time\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="facelab-bench-") as tmp_name:
        tmp = Path(tmp_name)
        pexels = args.data / "pexels" / "woman_pose_variety.mp4"
        clips = [("pexels 640×360", pexels), ("grid 360×288", args.data / "grid" / "speaker_b.mpg")]
        if not args.no_1080p:
            big = tmp / "pexels_1080p.mp4"
            ffmpeg("-i", str(pexels), "-frames:v", "120", "-vf", "scale=1920:1080:flags=lanczos",
                   *X264[:2], "-preset", "fast", "-crf", "18", "-pix_fmt", "yuv420p", "-an",
                   str(big))
            clips.append(("pexels→1080p 1920×1080", big))
        for name, clip in clips:
            case = Case(name, clip, tmp)
            print(f"{name}: {case.frames} frames", flush=True)
            for label, a, b in run_case(case, args.repeat):
                (wa, ca), (wb, cb) = a.median(), b.median()
                row = (f"| {name} | {label} | {wa:.2f} s ({case.frames / wa:.0f}) | "
                       f"{wb:.2f} s ({case.frames / wb:.0f}) | **{wb / wa:.2f}×** | "
                       f"{ca:.1f} / {cb:.1f} ({cb / ca:.2f}×) | "
                       f"{a.size / 1e6:.1f} / {b.size / 1e6:.1f} MB |")
                print(row, flush=True)
                rows.append(row)
    print("\n| clip | job | facelab (frames/s) | ffmpeg (frames/s) | speed ratio | "
          "CPU s facelab / ffmpeg (ratio) | output facelab / ffmpeg |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
