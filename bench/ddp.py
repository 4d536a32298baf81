"""Data-parallel training bench: samples/s per rank, N ranks against 1 on this machine.

The tiny model of tests/test_train_ddp.py (quick96 at resolution 64, dims 32/8/8/8, fp32 on
the CPU, samples built in the training processes: workers 0) trains --iters iterations on
real faces (GRID speakers B and C, 4 fps, extracted into a temporary workspace; or the
aligned faces of --workspace W, copied there), in these runs, each a fresh
process started by this script (--one) and timed by the trainer itself:

* 1 rank × batch b, 1 thread (what each of 2 ranks gets on 2 cores);
* 1 rank × batch b, every thread (`facelab train`'s default);
* 1 rank × batch N·b, every thread (the same global batch as N ranks);
* N ranks × batch b (`facelab train --nproc N`: the launcher shares the cores out).

It prints ms/iter (the run's mean over every iteration, the first included), samples/s
(the global batch per iteration time), samples/s per rank, the ratio of each run's
samples/s to the first run's (measured in the same invocation), and the 1-minute load
average before each run: other jobs on a shared machine change every figure.

Usage: .venv/bin/python bench/ddp.py [--nproc 2] [--batch 4] [--iters 20] [--workspace W]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TINY = {"ae_dims": 32, "e_dims": 8, "d_dims": 8, "d_mask_dims": 8, "resolution": 64}


def _workspace(root: Path) -> Path:
    """GRID B (src) and C (dst) at 4 fps, 12 faces each, as the test's fixture makes them."""
    from facelab.faces.extract import FaceExtractOptions, extract_faces
    from facelab.video.extract import ExtractOptions, extract_frames
    from facelab.workspace import Workspace

    spaces = []
    for name, clip in (("b", "speaker_b.mpg"), ("c", "speaker_c.mpg")):
        ws = Workspace(root / name)
        ws.root.mkdir(parents=True)
        shutil.copyfile(DATA / "grid" / clip, ws.root / "data_src.mpg")
        extract_frames(ws, "src", None, ExtractOptions(fps=Fraction(4)))
        extract_faces(ws, "src", FaceExtractOptions(workers=1))
        spaces.append(ws)
    spaces[0].aligned_dir("dst").mkdir(parents=True, exist_ok=True)
    for face in spaces[1].aligned_dir("src").iterdir():
        shutil.move(face, spaces[0].aligned_dir("dst") / face.name)
    return spaces[0].root  # root/b


def _one(ws: Path, name: str, batch: int, nproc: int, iters: int) -> dict[str, Any]:
    """One run in this process (a fresh one): the trainer's own ms/iter."""
    from facelab.cli.train_launch import launch
    from facelab.progress import NullReporter
    from facelab.train.run_options import TrainOptions

    opts = TrainOptions(model_name=name, preset="quick96", overrides=dict(TINY),
                        precision="fp32", device="cpu", batch_size=batch, workers=0,
                        preview_every=0, target_iteration=iters, nproc=nproc,
                        backup_every=0)
    if nproc > 1:
        rep = launch(ws, opts, None, quiet=True)
    else:
        from facelab.train.trainer import train
        from facelab.workspace import Workspace

        rep = train(Workspace(ws), opts, NullReporter())
    ms = rep.ms_per_iter
    return {"ms": ms, "samples_s": batch * nproc * 1000 / ms, "ranks": nproc,
            "threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="per rank")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--workspace", type=Path)
    ap.add_argument("--one", nargs=3, metavar=("NAME", "BATCH", "NPROC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        name, batch, nproc = args.one
        print(json.dumps(_one(args.workspace, name, int(batch), int(nproc), args.iters)))
        return
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as tmp:
        ws = Path(tmp) / "b"
        if args.workspace:  # its faces only: the runs' models go to the temporary copy
            for side in ("src", "dst"):
                shutil.copytree(args.workspace / f"data_{side}" / "aligned",
                                ws / f"data_{side}" / "aligned")
        else:
            _workspace(Path(tmp))
        n, b = args.nproc, args.batch
        runs = [(f"1 rank × {b}, 1 thread", b, 1, "1"), (f"1 rank × {b}", b, 1, None),
                (f"1 rank × {n * b}", n * b, 1, None), (f"{n} ranks × {b}", b, n, None)]
        print(f"{os.cpu_count()} cores, tiny quick96 at 64 px, fp32, {args.iters} iterations "
              "a run, workers 0")
        print(f"{'run':24} {'load':>5} {'ms/iter':>8} {'samples/s':>10} {'per rank':>9} "
              f"{'× run 1':>8}")
        first = None
        for i, (label, batch, nproc, threads) in enumerate(runs):
            env = dict(os.environ)
            if threads:
                env["OMP_NUM_THREADS"] = threads
            load = os.getloadavg()[0]
            shutil.rmtree(ws / "model", ignore_errors=True)
            out = subprocess.run(
                [sys.executable, __file__, "--workspace", str(ws), "--iters", str(args.iters),
                 "--one", f"bench{i}", str(batch), str(nproc)],
                env=env, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            first = first or r["samples_s"]
            print(f"{label:24} {load:5.2f} {r['ms']:8.0f} {r['samples_s']:10.1f} "
                  f"{r['samples_s'] / r['ranks']:9.1f} {r['samples_s'] / first:8.2f}")


if __name__ == "__main__":
    main()
