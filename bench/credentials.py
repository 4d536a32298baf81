"""C2PA Content Credentials bench (issue 20): what signing costs, and recovery by soft binding.

1. Per merged frame: a 640×360 frame (the Pexels clip's, else a GRID frame scaled to
   360p) marked as merge marks it (watermark, XMP) and PNG-encoded, then signed and filed
   in a store (`sign_result_bytes`): ms per frame against the encode itself.
2. Assemble: the demo clip (examples/speaker_a_1.mpg, 75 frames) marked and signed as
   merged frames, then `assemble` into every format. There is no switch to leave the
   manifest out, so the signing call inside assemble (`sign_result_file`) is timed on its
   own beside the whole assemble, and so is the manifest check a rerun does (`read_file`).
3. Recovery: each clip of the watermark bench (GRID A1, A2, B, C, D, the Pexels clip)
   marked as merge marks it and assembled to a signed mp4 (its manifest filed in the
   workspace's store), then the bench's "CRF 30 + 50 %, no metadata" row (PyAV libx264
   yuv420p, preset medium, half size, nothing copied) and `verify(..., store=...)`: is the
   manifest absent, the watermark found, the manifest recovered and its claims matching?

   A CRF-failed payload is matched against the store's payloads (recover.py); the last
   columns show the margin: the best Z of 1,000 random facelab payloads against the clip.

Usage: .venv/bin/python bench/credentials.py [--frames N] [--repeat R] [--decoys D]
       [--only frame|assemble|recovery]
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

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEMO = ROOT / "examples" / "speaker_a_1.mpg"
CLIPS = ["grid/speaker_a_1.mpg", "grid/speaker_a_2.mpg", "grid/speaker_b.mpg",
         "grid/speaker_c.mpg", "grid/speaker_d.mpg", "pexels/woman_pose_variety.mp4"]
TMP = Path(tempfile.mkdtemp(prefix="facelab-bench-cred-"))
os.environ.setdefault("XDG_CONFIG_HOME", str(TMP / "config"))  # never the user's key

from watermark import read  # noqa: E402  (bench/ is on sys.path when a script runs)

from facelab.provenance import Mark  # noqa: E402
from facelab.provenance.credentials import read_file, sign_result_bytes, signing_for  # noqa: E402
from facelab.provenance.png import encode_png  # noqa: E402
from facelab.provenance.verify import verify  # noqa: E402
from facelab.provenance.watermark import mark_frame, model_payload  # noqa: E402
from facelab.provenance.watermark.code import TAG, match  # noqa: E402
from facelab.video import assemble as assemble_mod  # noqa: E402
from facelab.video.assemble import AssembleOptions, assemble  # noqa: E402
from facelab.video.extract import ExtractOptions, extract_frames  # noqa: E402
from facelab.video.formats import FORMATS  # noqa: E402
from facelab.workspace import Workspace  # noqa: E402

MARK = Mark.synthetic("quick96@1:bench0001")


def ms(seconds: list[float]) -> str:
    return f"{1000 * statistics.median(seconds):.1f} (mean {1000 * statistics.mean(seconds):.1f})"


def per_frame(frames: int) -> None:
    pexels = DATA / "pexels" / "woman_pose_variety.mp4"
    if pexels.is_file():
        src, images = "Pexels clip", read(pexels, frames)
    else:
        src = "demo clip scaled to 640×360"
        images = [cv2.resize(x, (640, 360)) for x in read(DEMO, frames)]
    signing = signing_for(MARK, TMP / "store-frames")
    enc, sig = [], []
    for i, image in enumerate(images):
        t = time.perf_counter()
        png = encode_png(mark_frame(image, MARK, index=i), MARK)
        t1 = time.perf_counter()
        sign_result_bytes(png, f"{i:05d}.png", signing)
        t2 = time.perf_counter()
        enc.append(t1 - t)
        sig.append(t2 - t1)
    print(f"\n1. per merged frame, {len(images)} frames of the {src} at "
          f"{images[0].shape[1]}×{images[0].shape[0]}:")
    print(f"   watermark + XMP + PNG encode: {ms(enc)} ms; sign + store: {ms(sig)} ms "
          f"(+{100 * statistics.median(sig) / statistics.median(enc):.0f} %)")


def signed_workspace(clip: Path, frames: int | None, name: str) -> Workspace:
    """A workspace whose merged/ holds `clip`'s frames marked and signed as merge does."""
    root = TMP / name
    root.mkdir(parents=True)
    shutil.copyfile(clip, root / f"data_dst{clip.suffix}")
    ws = Workspace(root)
    extract_frames(ws, "dst", opts=ExtractOptions(fmt="png"))
    ws.merged_dir.mkdir(exist_ok=True)
    signing = signing_for(MARK, root / "credentials", {"dst": root / f"data_dst{clip.suffix}"})
    paths = sorted(ws.frames_dir("dst").glob("*.png"))[:frames]
    for i, p in enumerate(paths):
        png = encode_png(mark_frame(cv2.imread(str(p)), MARK, index=i), MARK)
        (ws.merged_dir / p.name).write_bytes(sign_result_bytes(png, p.name, signing))
    for p in sorted(ws.frames_dir("dst").glob("*.png"))[len(paths):]:
        p.unlink()
    return ws


def timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t)
    return wrapper


def assemble_cost(repeat: int) -> None:
    ws = signed_workspace(DEMO, None, "demo")
    print(f"\n2. assemble of the demo clip ({DEMO.name}, 75 frames 360×288, with audio), "
          f"median of {repeat}:")
    print("| format | assemble s | key + input hashes s | signing s | share | rerun check s "
          "| size MB |")
    print("|---|---|---|---|---|---|---|")
    sign_fn, check_fn = assemble_mod.sign_result_file, assemble_mod.read_file
    setup_fn = assemble_mod.workspace_signing
    for fmt, spec in FORMATS.items():
        total, signs, checks, setups = [], [], [], []
        out = ws.root / f"result_{fmt}.{spec.ext}"
        assemble_mod.sign_result_file = timed(sign_fn, signs)
        assemble_mod.read_file = timed(check_fn, checks)
        assemble_mod.workspace_signing = timed(setup_fn, setups)
        try:
            for _ in range(repeat):
                t = time.perf_counter()
                assemble(ws, AssembleOptions(format=fmt, output=out, force=True))
                total.append(time.perf_counter() - t)
            assert assemble(ws, AssembleOptions(format=fmt, output=out)).skipped
        finally:
            assemble_mod.sign_result_file, assemble_mod.read_file = sign_fn, check_fn
            assemble_mod.workspace_signing = setup_fn
        s = statistics.median(signs) if signs else 0.0
        c = f"{statistics.median(checks):.3f}" if checks else "none (webm)"
        k = statistics.median(setups)
        print(f"| {fmt} | {statistics.median(total):.2f} | {k:.3f} | {s:.3f} | "
              f"{100 * (s + k) / statistics.median(total):.0f} % | {c} | "
              f"{out.stat().st_size / 1e6:.2f} |", flush=True)


def reencode(src: Path, dest: Path) -> None:
    """The watermark bench's CRF 30 + 50 % row: half size, libx264 CRF 30, no metadata."""
    with av.open(str(src)) as c, av.open(str(dest), "w") as out:
        vs = c.streams.video[0]
        s = out.add_stream("libx264", rate=vs.average_rate or 25)
        s.width, s.height = vs.width // 4 * 2, vs.height // 4 * 2
        s.pix_fmt, s.options = "yuv420p", {"crf": "30", "preset": "medium"}
        for f in c.decode(vs):
            out.mux(s.encode(f.reformat(s.width, s.height, interpolation="AREA")))
        out.mux(s.encode(None))


def decoys(store: Path, count: int) -> None:
    """Manifests of `count` other models filed in `store`: the matcher must pick ours."""
    png = encode_png(np.zeros((8, 8, 3), np.uint8))
    for k in range(count):
        other = Mark.synthetic(f"quick96@1:decoy{k:04d}")
        sign_result_bytes(png, "decoy.png", signing_for(other, store))


def null_best(soft: np.ndarray, draws: int = 1000) -> float:
    """The best match Z of `draws` random facelab payloads (not ours) against `soft`."""
    rng = np.random.default_rng(0)
    ours = model_payload(MARK.model_id)
    others = [(TAG << 24) | int(x) for x in rng.integers(0, 1 << 24, draws)]
    return match(soft, [p for p in others if p != ours])[1]


def recovery(frames: int | None, n_decoys: int) -> None:
    print("\n3. recovery after CRF 30 + 50 %, no metadata (the watermark bench's row); each "
          f"store also holds the manifests of {n_decoys} other models:")
    print("| clip | frames | signed mp4 | after re-encode | watermark (clip Z) | payload read "
          "| recovered how | claims match | best of 1,000 other payloads | verify s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ok = 0
    present = [c for c in CLIPS if (DATA / c).is_file()]
    for clip in present:
        ws = signed_workspace(DATA / clip, frames, Path(clip).stem)
        decoys(ws.root / "credentials", n_decoys)
        rep = assemble(ws, AssembleOptions(format="mp4", audio=False))
        before = read_file(rep.output).state
        stripped = ws.root / "uploaded.mp4"
        reencode(rep.output, stripped)
        t = time.perf_counter()
        v = verify(stripped, store=ws.root / "credentials")
        took = time.perf_counter() - t
        mark = next((f for f in v.findings if f.detector == "watermark"), None)
        r = v.recovery
        good = (v.credentials.state == "absent" and mark is not None and r is not None
                and r.matches)
        ok += good
        z = mark.where.split("clip Z ")[1].split(",")[0] if mark else "-"
        null = f"{null_best(mark.soft):.1f}" if mark is not None and mark.soft is not None \
            else "-"
        print(f"| {clip} | {rep.frames} | {before} | {v.credentials.state} | "
              f"{'found' if mark else 'NOT found'} ({z}) | "
              f"{'yes' if mark and mark.payload is not None else 'no'} | "
              f"{r.how if r else '-'} | {'yes' if r and r.matches else 'no'} | {null} "
              f"| {took:.2f} |", flush=True)
    print(f"   recovered with matching claims: {ok}/{len(present)} clips")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=None,
                    help="first N frames per clip (default: all; per-frame part: 100)")
    ap.add_argument("--repeat", type=int, default=3, help="assembles per format")
    ap.add_argument("--decoys", type=int, default=20, help="other models in each store")
    ap.add_argument("--only", choices=("frame", "assemble", "recovery"), default=None)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    try:
        if args.only in (None, "frame"):
            per_frame(args.frames or 100)
        if args.only in (None, "assemble"):
            assemble_cost(args.repeat)
        if args.only in (None, "recovery"):
            recovery(args.frames, args.decoys)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
