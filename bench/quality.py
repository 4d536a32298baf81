"""The quality benchmark (issue 6): the whole swap on fixed pairs with a fixed training
budget, scored by `facelab eval`, each beside a control that uses no model at all.

Pairs (src → dst) from ../shared/data: GRID A (both clips) → B, GRID C → D, GRID A → the Pexels
clip, and the ground-truth pair grid_a_gt: GRID A clip 1 → A clip 2 (the same person, so the
ideal result is dst itself: face PSNR/SSIM against dst are the measure there). Per pair:
`run_swap` with `--minutes` of training (default 30) in ROOT/<pair>/ (resumable: a rerun with a
larger budget trains on), then eval of its result.mp4; and the control: a blurred average of
src's faces pasted into every dst frame (eval/controls.py). Both are scored against the same
reference (dst's video; src's identity from its video's frames). Goals: every measure better
than the control; ≥ 90 % recognised as src, sharpness ≥ 0.8, expression correlation ≥ 0.8, pose
error ≤ 2°, jitter ≤ 1.0.

Usage: .venv/bin/python bench/quality.py [--minutes 30] [--pairs grid_a_b,grid_c_d,pexels,grid_a_gt]
           [--root /tmp/facelab_quality] [--controls-only] [--identity-every 2]
           [--config demo|sae64|quick96|meshswap|warp] [--set OPTION=VALUE ...]

--config demo is the demo's model (meshswap without its refiner, since issue 14); sae64 the
64-px SAE the demo trained before (the baseline row); meshswap is the family with its refiner
trained for --minutes; warp is the same with refiner=false (the warp-only control: src's
faces moved onto the target mesh, no network).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from facelab.eval import controls, run
from facelab.eval.sources import load_frames
from facelab.faces.facetype import FaceType, crop_face, face_transform, transform_points

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRID = DATA / "grid"
PAIRS = {
    "grid_a_b": ((GRID / "speaker_a_1.mpg", GRID / "speaker_a_2.mpg"), GRID / "speaker_b.mpg"),
    "grid_c_d": ((GRID / "speaker_c.mpg",), GRID / "speaker_d.mpg"),
    "pexels": ((GRID / "speaker_a_1.mpg", GRID / "speaker_a_2.mpg"),
               DATA / "pexels" / "woman_pose_variety.mp4"),
    "grid_a_gt": ((GRID / "speaker_a_1.mpg",), GRID / "speaker_a_2.mpg"),
}
CONFIGS = ("demo", "sae64", "quick96", "meshswap", "warp")
#: The 64-px SAE the demo trained before meshswap (the fastest SAE learner per CPU-minute
#: measured here, lr 2e-4, batch 8): the baseline row of issue 14.
SAE64 = {"resolution": 64, "ae_dims": 128, "e_dims": 32, "d_dims": 32, "d_mask_dims": 16}
COLS = [("identity_closer_to_src", "closer"), ("identity_top1", "top1"),
        ("identity_recognised_as_src", "recog"), ("sharpness_ratio", "sharp"),
        ("pose_error_deg", "pose°"), ("expression_error", "expr"),
        ("expression_corr", "corr"), ("jitter_ratio", "jitter"),
        ("background_psnr_db", "bg dB"), ("face_psnr_vs_dst_db", "face dB"),
        ("face_ssim_vs_dst", "ssim")]


def control_frames(ref: run.Reference, src: Path) -> list[np.ndarray]:
    frames = load_frames(ref.dst)
    faces = run._faces_of(src, ref.extractor, 40)
    aligned = []
    for img, pts in faces:
        mat = face_transform(pts, FaceType.WHOLE_FACE, 256)
        aligned.append((crop_face(img, mat, 256), transform_points(pts, mat)))
    return controls.paste_faces(frames, ref.faces, [controls.average_face(aligned)])


def swap(ws: Path, srcs: tuple[Path, ...], dst: Path, minutes: float,
         config: str, sets: dict[str, Any]) -> tuple[Path, float, int]:
    """The whole swap; `config` "demo" = the demo's model (meshswap), "sae64" = the 64-px SAE
    it used before (the baseline), "quick96" = DFL's Quick96, "meshswap" = meshswap with its
    refiner, "warp" = meshswap without it."""
    from facelab import demo
    from facelab.swap import SwapOptions, run_swap
    from facelab.workspace import Workspace

    out = ws / "result.mp4"
    extra: dict[str, Any] = {"preset": "quick96", "overrides": {}}
    if config == "demo":
        extra = {"preset": demo.PRESET, "overrides": dict(demo.OVERRIDES),
                 "batch_size": demo.BATCH, "lr": demo.LR}
    elif config == "sae64":  # the demo's model until meshswap: the SAE baseline
        extra = {"preset": "sae", "overrides": dict(SAE64), "batch_size": 8, "lr": 2e-4}
    if config in ("meshswap", "warp"):
        extra = {"preset": "meshswap", "overrides": {"refiner": config == "meshswap"}}
    extra["overrides"].update(sets)
    rep = run_swap(Workspace(ws), SwapOptions(src=srcs[0], more_src=srcs[1:], dst=dst,
                                              output=out, minutes=minutes, **extra))
    return out, rep.trained_minutes, rep.iteration


def detail(s: dict) -> str:
    """The per-channel figures behind a row (what `facelab eval` writes to eval.json)."""
    f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    ypr = s.get("pose_error_yaw_pitch_roll_deg") or [None] * 3
    return (f"    mouth {f(s.get('expression_corr_mouth'))} eyes "
            f"{f(s.get('expression_corr_eyes'))} | pose yaw/pitch/roll "
            f"{'/'.join(f(v) for v in ypr)}, offset removed "
            f"{f(s.get('pose_error_offset_removed_deg'))} | dist src/dst "
            f"{f(s.get('identity_dist_src'))}/{f(s.get('identity_dist_dst'))}")


def parse_set(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    low = value.strip().lower()
    if low in ("true", "false"):
        return key.strip(), low == "true"
    try:
        return key.strip(), int(value)
    except ValueError:
        return key.strip(), value.strip()


def row(name: str, s: dict, minutes: float | None, iteration: int | None = None) -> str:
    cells = [f"{'—' if s.get(k) is None else format(s[k], '.3f'):>7}" for k, _ in COLS]
    spent = "" if minutes is None else f"{minutes:.1f} ({iteration})"
    return f"{name:<18}" + " ".join(cells) + f" {spent:>12}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--root", type=Path, default=Path("/tmp/facelab_quality"))
    ap.add_argument("--controls-only", action="store_true")
    ap.add_argument("--identity-every", type=int, default=2)
    ap.add_argument("--config", choices=CONFIGS, default="demo")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                    help="a model option of the new model, e.g. eyes_mouth_priority=true "
                    "(its own workspace)")
    args = ap.parse_args()
    opts = run.EvalOptions(identity_every=args.identity_every)
    print(f"{'pair':<18}" + " ".join(f"{c:>7}" for _, c in COLS) + "    min")
    for name in args.pairs.split(","):
        srcs, dst = PAIRS[name]
        t0 = time.monotonic()
        ref = run.prepare(dst, srcs[0], opts)
        ctl = controls.write_frames(args.root / name / "control", control_frames(ref, srcs[0]))
        s = run.evaluate(ctl, ref, opts).summary
        print(row(f"{name} control", s, None), flush=True)
        print(detail(s), flush=True)
        if not args.controls_only:
            sets = dict(parse_set(x) for x in args.set)
            tag = "".join(f"_{k}-{v}" for k, v in sorted(sets.items()))
            result, minutes, it = swap(args.root / name / f"ws_{args.config}{tag}", srcs, dst,
                                       args.minutes, args.config, sets)
            s = run.evaluate(result, ref, opts).summary
            print(row(f"{name} swap", s, minutes, it), flush=True)
            print(detail(s), flush=True)
        print(f"  ({time.monotonic() - t0:.0f} s wall)", flush=True)


if __name__ == "__main__":
    main()
