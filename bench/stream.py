"""Streaming bench (issue 16): dst kept in its video and merged straight into the result,
against the PNG route (a PNG per dst frame, a PNG per merged frame, then assemble), same
run, same clip, same model.

The clip: the shared Pexels close-up (640×360, the largest real footage here) made 1080p by
the ffmpeg binary: Lanczos upscaling, a light unsharp mask and faint temporal film grain (so
the codecs see some of 1080p's detail and noise, not an upscale's smooth pixels), H.264 CRF
18 preset medium with its AAC audio: about 5 Mbit/s, a web 1080p's rate. It is an upscale
at heart, said so wherever the figures are quoted. The src: GRID speaker A's two clips; the
model: meshswap (the default preset: the index is its training, seconds). Setup is untimed
and kept in --root.

Timed, each as the real CLI in a subprocess (wall seconds, CPU seconds of the process tree):

* stream route: `video extract dst` (index only), `extract dst` (faces, 1080p decoded in
  the workers), `merge` (defaults: --to-video, the measured worker layout);
* PNG route: `video extract dst --frames png`, `merge --to-frames`, `video assemble`
  (its faces are the stream route's, copied: the same frames give the same faces).

Disk: the bytes each route leaves in the workspace between `video extract` and the result
(frames, faces, manifests, segments, merged frames, result; not the input video, src or the
model), and the 10-minute figure they scale to. Quality: PSNR of the streamed result against
the PNG route's merged frames and against its assembled result.

Usage: .venv/bin/python bench/stream.py [--root DIR] [--frames N] [--skip-png]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import imageio_ffmpeg
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
MODEL = "m"
GOALS = {"extract": 10.0, "merge": 8.0}  # 1080p frames/s, issue 16


def facelab(ws: Path, *args: str) -> tuple[float, float]:
    """Run the CLI; (wall s, CPU s of it and its children)."""
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "facelab", "-w", str(ws), "--quiet", *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"`facelab {' '.join(args)}` failed:\n{res.stderr[-2000:]}")
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def make_clip(out: Path, frames: int) -> None:
    pexels = DATA / "pexels" / "woman_pose_variety.mp4"
    vf = "scale=1920:1080:flags=lanczos,unsharp=5:5:0.6,noise=alls=2:allf=t"
    subprocess.run([FFMPEG, "-v", "error", "-nostdin", "-y", "-i", str(pexels), "-frames:v",
                    str(frames), "-vf", vf, "-c:v", "libx264", "-preset", "medium", "-crf",
                    "18", "-pix_fmt", "yuv420p", "-c:a", "copy", str(out)], check=True)


def setup(root: Path, frames: int) -> tuple[Path, Path]:
    """The clip and a workspace holding the src faces and the model (kept)."""
    root.mkdir(parents=True, exist_ok=True)
    clip = root / f"pexels_1080p_{frames}.mp4"
    if not clip.exists():
        print(f"setup: making the 1080p clip ({frames} frames) …", flush=True)
        make_clip(clip, frames)
    base = root / "base"
    if not (base / "model" / f"{MODEL}_manifest.json").exists():
        print("setup: src faces and the meshswap model …", flush=True)
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        shutil.copyfile(DATA / "grid" / "speaker_a_1.mpg", base / "data_src.mpg")
        shutil.copyfile(DATA / "grid" / "speaker_a_2.mpg", base / "data_src_2.mpg")
        shutil.copyfile(clip, base / "data_dst.mp4")
        facelab(base, "video", "extract", "src", "-i", str(base / "data_src.mpg"),
                "-i", str(base / "data_src_2.mpg"))
        facelab(base, "extract", "src")
        facelab(base, "video", "extract", "dst")
        facelab(base, "extract", "dst", "--no-debug")
        facelab(base, "train", "--model-name", MODEL, "--preset", "meshswap")
    return clip, base


def fresh(root: Path, name: str, base: Path, clip: Path) -> Path:
    ws = root / name
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir()
    shutil.copytree(base / "data_src", ws / "data_src")
    shutil.copytree(base / "model", ws / "model")
    shutil.copyfile(clip, ws / "data_dst.mp4")
    return ws


def produced(ws: Path) -> int:
    """Bytes a route left: everything under data_dst/ and the result."""
    return sum(breakdown(ws).values())


def breakdown(ws: Path) -> dict[str, int]:
    """Those bytes by kind: faces, debug frames, frames, merged frames or segments, result,
    manifests (the issue's goal counts faces, manifests and the result)."""
    parts = {"faces": 0, "debug frames": 0, "frames": 0, "merged": 0, "manifests": 0,
             "result": sum(p.stat().st_size for p in ws.glob("result.*"))}
    for f in (ws / "data_dst").rglob("*"):
        if not f.is_file():
            continue
        rel = f.relative_to(ws / "data_dst").parts
        kind = ("faces" if rel[0] == "aligned" else "debug frames" if rel[0] == "aligned_debug"
                else "merged" if rel[0] in ("merged", "merged_video", "merged_mask")
                else "manifests" if f.suffix in (".json", ".txt") else "frames")
        parts[kind] += f.stat().st_size
    return parts


def goal_bytes(ws: Path) -> int:
    b = breakdown(ws)
    return b["faces"] + b["manifests"] + b["result"]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def row(stage: str, frames: int, timing: tuple[float, float], base: tuple[float, float] | None
        ) -> str:
    wall, cpu = timing
    fps = frames / wall
    goal = GOALS.get(stage.split()[0])
    versus = ""
    if base is not None:
        versus = f" | {frames / base[0]:.1f} | {base[0] / wall:.2f}×"
    flag = f" (goal ≥ {goal:g}: {'met' if fps >= goal else 'NOT met'})" if goal else ""
    return f"| {stage} | {wall:.1f} s, {fps:.1f} frames/s{flag} | CPU {cpu:.0f} s{versus} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/facelab-bench-stream"))
    parser.add_argument("--frames", type=int, default=472, help="1080p frames (472: all)")
    parser.add_argument("--skip-png", action="store_true", help="time the stream route only")
    args = parser.parse_args()
    clip, base = setup(args.root, args.frames)
    with av.open(str(clip)) as c:
        n = sum(1 for p in c.demux(video=0) if p.size)
    print(f"clip {clip.name}: {n} frames 1920×1080 (Pexels 640×360 upscaled, sharpened, "
          "grain)\n", flush=True)

    s = fresh(args.root, "stream", base, clip)
    t_index = facelab(s, "video", "extract", "dst")
    t_faces = facelab(s, "extract", "dst")
    t_merge = facelab(s, "merge", "--model-name", MODEL)
    s_bytes = produced(s)
    print(f"stream route: index {t_index[0]:.1f} s, faces {t_faces[0]:.1f} s, merge "
          f"{t_merge[0]:.1f} s; {s_bytes / 1e6:.0f} MB written", flush=True)

    p_times: dict[str, tuple[float, float]] = {}
    p_bytes = 0
    if not args.skip_png:
        p = fresh(args.root, "png", base, clip)
        p_times["video"] = facelab(p, "video", "extract", "dst", "--frames", "png")
        for item in ("aligned", "aligned_debug", "faces.json", "aligned_missing.txt"):
            src, dst = s / "data_dst" / item, p / "data_dst" / item
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            elif src.exists():
                shutil.copyfile(src, dst)
        p_times["merge"] = facelab(p, "merge", "--model-name", MODEL, "--to-frames")
        p_times["assemble"] = facelab(p, "video", "assemble")
        p_bytes = produced(p)
        print(f"PNG route: frames {p_times['video'][0]:.1f} s, merge {p_times['merge'][0]:.1f} "
              f"s, assemble {p_times['assemble'][0]:.1f} s; {p_bytes / 1e6:.0f} MB written\n",
              flush=True)

    print("| stage | stream route | PNG route frames/s | speed-up |")
    print("|---|---|---|---|")
    print(row("extract (video → index / PNGs)", n, t_index, p_times.get("video")))
    print(row("faces: extract dst at 1080p", n, t_faces, None))
    png_merge = None
    if p_times:
        png_merge = (p_times["merge"][0] + p_times["assemble"][0],
                     p_times["merge"][1] + p_times["assemble"][1])
    print(row("merge to video (defaults)", n, t_merge, png_merge))
    if p_bytes:
        ten = 10 * 60 * 24000 / 1001 / n  # frames of 10 minutes at 23.976 / this clip's
        print(f"\ndisk between `video extract` and the result: stream {s_bytes / 1e6:.0f} MB, "
              f"PNG route {p_bytes / 1e6:.0f} MB: {100 * s_bytes / p_bytes:.2f} % "
              f"(goal ≤ 5 %); for 10 minutes ≈ {s_bytes * ten / 1e9:.1f} GB against "
              f"{p_bytes * ten / 1e9:.0f} GB")
        for name, root in (("stream", s), ("PNG route", p)):
            print(f"  {name}: " + ", ".join(f"{k} {v / 1e6:.1f} MB"
                                            for k, v in breakdown(root).items()))
        print(f"  faces, manifests and the result only (the goal's count): stream "
              f"{goal_bytes(s) / 1e6:.0f} MB = {100 * goal_bytes(s) / p_bytes:.2f} % of the "
              "PNG route's bytes")
        streamed = decoded(s / "result.mp4")
        merged = sorted((p / "data_dst" / "merged").glob("*.png"))
        vs_png = [psnr(a, cv2.imread(str(b))) for a, b in zip(streamed, merged, strict=True)]
        assembled = decoded(p / "result.mp4")
        vs_result = [psnr(a, b) for a, b in zip(streamed, assembled, strict=True)]
        control = [psnr(a, cv2.imread(str(b))) for a, b in zip(assembled, merged, strict=True)]
        print(f"streamed result vs the PNG route's merged frames: PSNR mean "
              f"{np.mean(vs_png):.2f} dB, min {min(vs_png):.2f} dB; vs its assembled "
              f"result: mean {np.mean(vs_result):.2f} dB, min {min(vs_result):.2f} dB")
        print(f"control, the codec noise of the PNG route itself (its assembled result vs its "
              f"merged frames): mean {np.mean(control):.2f} dB, min {min(control):.2f} dB")


if __name__ == "__main__":
    main()
