"""Faceset sort bench: `sort --by hist` and `sort --by final --target 2000` on 5,000 faces.

The faces are made from the shared clips' real aligned faces (GRID speakers A, B, C, D,
every frame, accurate detector) by augmentation: a random similarity (scale 0.9–1.1,
rotation ±6°, shift ±10 px: a different crop), a horizontal flip half of the time (landmarks
mirrored and renumbered, so the pose says the face turned the other way) and a brightness
factor 0.7–1.3; metadata (landmarks, mesh, frame transform) follows every change. Each
method is timed cold (no feature cache: every face decoded and measured, in a process
pool) and warm (cache hit: a second sort of the same files). Peak RSS of the bench process
and of the pool workers are reported.

Usage: .venv/bin/python bench/sort.py [--faces 5000] [--target 2000] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _measure import cpu_s  # bench/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "grid"
CLIPS = ["speaker_a_1.mpg", "speaker_b.mpg", "speaker_c.mpg", "speaker_d.mpg"]
MIRROR68 = np.array([*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30,
                     *range(35, 30, -1), 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                     *range(54, 47, -1), *range(59, 54, -1), *range(64, 59, -1),
                     67, 66, 65])


def base_faces(work: Path) -> list[Path]:
    """Every aligned face of the GRID clips (extracted once into `work`)."""
    from facelab.faces.extract import FaceExtractOptions, extract_faces
    from facelab.video.extract import extract_frames
    from facelab.workspace import Workspace

    faces = []
    for clip in CLIPS:
        root = work / Path(clip).stem
        aligned = root / "data_dst" / "aligned"
        if not aligned.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DATA / clip, root / f"data_dst{Path(clip).suffix}")
            extract_frames(Workspace(root), "dst")
            extract_faces(Workspace(root), "dst", FaceExtractOptions(debug=False))
        faces += sorted(aligned.glob("*.jpg"))
    return faces


def augment(path: Path, rng: np.random.Generator, dest: Path) -> None:
    from facelab.faces.faceimage import read_face, write_face

    img, m = read_face(path)
    s = m.size
    a = cv2.getRotationMatrix2D((s / 2, s / 2), rng.uniform(-6, 6), rng.uniform(0.9, 1.1))
    a[:, 2] += rng.uniform(-10, 10, 2)
    a3 = np.vstack([a, [0, 0, 1]])
    if rng.random() < 0.5:  # mirror after the crop: x → s-1-x
        a3 = np.array([[-1, 0, s - 1], [0, 1, 0], [0, 0, 1]]) @ a3
        m.landmarks = m.landmarks[MIRROR68]
        m.yaw, m.roll = -m.yaw, -m.roll
    out = cv2.warpAffine(img, a3[:2], (s, s), flags=cv2.INTER_LINEAR)
    out = np.clip(out * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
    m.landmarks = m.landmarks @ a3[:2, :2].T + a3[:2, 2]
    if m.mesh is not None:
        mesh = m.mesh.copy()
        mesh[:, :2] = mesh[:, :2] @ a3[:2, :2].T + a3[:2, 2]
        m.mesh = mesh
    m.frame_to_face = (a3 @ np.vstack([m.frame_to_face, [0, 0, 1]]))[:2]
    m.original_name = dest.name
    write_face(dest, out, m)


def make_set(bases: list[Path], n: int, folder: Path) -> None:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    for i in range(n):
        augment(bases[i % len(bases)], rng, folder / f"{i:05d}_0.jpg")


def rss_mib() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return me, kids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=5000)
    ap.add_argument("--target", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=None, help="keep extracted clips here")
    args = ap.parse_args()

    from facelab.faceset.features import CACHE
    from facelab.faceset.folder import Faceset
    from facelab.faceset.ops import undo
    from facelab.faceset.sort import sort_faceset

    work = args.work or Path(tempfile.mkdtemp(prefix="facelab-sortbench-"))
    t = time.perf_counter()
    bases = base_faces(work)
    folder = work / f"set{args.faces}"
    if len(list(folder.glob("*.jpg"))) != args.faces or any(folder.parent.glob("*_trash/*")):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work / f"set{args.faces}_trash", ignore_errors=True)
        make_set(bases, args.faces, folder)
    size = sum(p.stat().st_size for p in folder.glob("*.jpg")) / 2**20
    print(f"{len(bases)} real faces → {args.faces} augmented ({size:.0f} MiB) in "
          f"{time.perf_counter() - t:.1f} s")
    fs = Faceset(folder, folder.name, f"--dir {folder}")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'method':<22}{'cache':<7}{'wall s':>8}{'CPU s':>7}{'moved':>7}{'RSS MiB':>9}"
          f"{'workers':>9}")
    for by, target in (("hist", None), ("final", args.target)):
        for cache in ("cold", "warm"):
            if cache == "cold":
                (folder / CACHE).unlink(missing_ok=True)
            t, cpu = time.perf_counter(), cpu_s()
            rep = sort_faceset(fs, by, target)
            dt, dcpu = time.perf_counter() - t, cpu_s() - cpu
            me, kids = rss_mib()
            label = by if target is None else f"{by} --target {target}"
            print(f"{label:<22}{cache:<7}{dt:>8.1f}{dcpu:>7.1f}{rep.moved:>7}{me:>9.0f}"
                  f"{kids:>9.0f}")
            if by == "final":
                t = time.perf_counter()
                undo(fs)  # put the trashed faces back for the next run
                print(f"{'  undo':<29}{time.perf_counter() - t:>8.1f}")


if __name__ == "__main__":
    main()
