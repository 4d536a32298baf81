"""Extraction on a Ray cluster against the local worker pool (issue 19): is Ray's overhead
small, and what does one item cost, part by part?

Starts a 2-node Ray cluster on 127.0.0.1 alone (head and one worker node, 1 CPU each:
tests/ray_node.py, token authentication), then extracts the same clip (kept in its video,
the default route) in turn with the local pool (its own measured layout, as a user runs
it) and on the cluster (`--cluster`), `--rounds` times each, alternating, and prints the
frames/s of each and their ratio (cluster / local; ≥ 0.9: Ray's overhead is small). The
per-frame costs, measured in this process on the clip's first frames (1 thread): decode
(one frame of the kept video), detect + landmarks + align, write (JPEG + metadata), and the
bytes that travel back to the driver per frame (the faces' files), with the driver's cost
to write them, and what travels out: the driver's cost to cut each item's piece of the
video and the piece's bytes per frame against the film's own. docs/SCALE.md does the
arithmetic for long films from these figures.

Usage: nice .venv/bin/python bench/scale.py [--clip pexels/woman_pose_variety.mp4]
       [--rounds 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NODE = [sys.executable, str(ROOT / "tests" / "ray_node.py")]


def facelab(*args: str | Path) -> float:
    """A CLI run's wall seconds (a real process, as a user runs it)."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "facelab", *map(str, args)],
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr[-2000:])
    return time.perf_counter() - t


def start_cluster(tmp: Path) -> str:
    token = tmp / "token"
    token.write_text(secrets.token_hex(32))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
                      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = ["--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats"]
    for args in (["--head", f"--port={port}", "--include-dashboard=false"],
                 [f"--address=127.0.0.1:{port}"]):
        subprocess.run([*NODE, "start", *args, *node], check=True, capture_output=True)
    return f"127.0.0.1:{port}"


def parts(ws: Path, frames: int = 40) -> dict[str, float]:
    """ms per frame of decode, detect+align and write, and bytes written per frame."""
    import cv2

    from facelab.faces.extract import face_name
    from facelab.faces.extractor import Extractor, ExtractorOptions
    from facelab.faces.faceimage import write_face
    from facelab.video.source import open_frames
    from facelab.workspace import Workspace

    cv2.setNumThreads(1)
    source = open_frames(Workspace(ws), "dst")
    names = source.names[:frames]
    t = time.perf_counter()
    decoded = list(source.frames(names))
    decode = (time.perf_counter() - t) / len(names)
    extractor = Extractor(ExtractorOptions())
    extractor.run(decoded[0][1])  # models loaded
    t = time.perf_counter()
    found = [(n, f, extractor.run(f)) for n, f in decoded]
    detect = (time.perf_counter() - t) / len(names)
    out = Path(tempfile.mkdtemp(prefix="scale_"))
    t = time.perf_counter()
    for name, frame, faces in found:
        for face in faces:
            meta = face.meta(name, (frame.shape[1], frame.shape[0]))
            meta.original_name = face_name(Path(name), face.index)
            write_face(out / meta.original_name, face.image, meta, 95)
    write = (time.perf_counter() - t) / len(names)
    size = sum(p.stat().st_size for p in out.iterdir()) / len(names)
    data = [p.read_bytes() for p in out.iterdir()]
    t = time.perf_counter()
    for k, blob in enumerate(data):  # the driver's side: bytes to a file, atomically
        (out / f"copy{k}.tmp").write_bytes(blob)
        os.replace(out / f"copy{k}.tmp", out / f"copy{k}.jpg")
    driver = (time.perf_counter() - t) / len(names)
    shutil.rmtree(out)
    # what the driver sends: each item's piece of the video (cut from its key frame)
    from facelab.video.segment import Cutter

    cutter = Cutter(source.video, source.index)
    runs = source.chunks(source.names)
    t = time.perf_counter()
    sent = sum(len(cutter.cut([source.ordinal(n) for n in run])[1]) for run in runs)
    cut = (time.perf_counter() - t) / len(source)
    cutter.close()
    film = source.video.stat().st_size
    source.close()
    return {"decode_ms": decode * 1e3, "detect_ms": detect * 1e3, "write_ms": write * 1e3,
            "bytes": size, "driver_write_ms": driver * 1e3, "driver_cut_ms": cut * 1e3,
            "piece_bytes": sent / len(source), "film_bytes": film / len(source)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="pexels/woman_pose_variety.mp4")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="workspace folder (reused)")
    args = p.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="scale_ws_"))
    ws = base / "ws"
    clip = DATA / args.clip
    if not (ws / "data_dst" / "frames_index.json").is_file():
        ws.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, ws / f"data_dst{clip.suffix}")
        facelab("-w", ws, "video", "extract", "dst")
    frames = int(json.loads((ws / "data_dst" / "frames_index.json").read_text())["frames"])
    tmp = Path(tempfile.mkdtemp(prefix="scale_ray_"))
    address = start_cluster(tmp)
    try:
        walls: dict[str, list[float]] = {"local": [], "cluster": []}
        for r in range(args.rounds):
            order = ("local", "cluster") if r % 2 == 0 else ("cluster", "local")
            for how in order:
                extra = ("--cluster", address) if how == "cluster" else ()
                # --force: every frame again (old faces go to the workspace's trash)
                wall = facelab("-w", ws, "extract", "dst", "--force", "--no-debug", *extra)
                walls[how].append(wall)
                print(f"round {r + 1} {how:<8}: {wall:.1f} s wall", flush=True)
                shutil.rmtree(ws / ".trash", ignore_errors=True)
        n = frames
        fps = {k: n / statistics.median(v) for k, v in walls.items()}
        print(f"{args.clip}: {n} frames; local pool {fps['local']:.1f} frames/s, "
              f"2-node Ray cluster {fps['cluster']:.1f} frames/s: ratio "
              f"{fps['cluster'] / fps['local']:.2f} (start-up included: Ray's actors load "
              "the detectors once each)", flush=True)
    finally:
        subprocess.run([*NODE, "stop", "--force"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    cost = parts(ws)
    print("per frame, 1 thread: " + ", ".join(
        f"{k} {v:.2f}" if k.endswith("_ms") else f"{k} {v / 1024:.1f} KiB"
        for k, v in cost.items()) + " (bytes: the faces back to the driver; piece_bytes: "
        "the video sent out with the items, film_bytes: the film's own per frame)")


if __name__ == "__main__":
    main()
