"""Train the generic face segmenter (issue 18) from the consented footage, reproducibly.

Run from the project root (nice it on a shared machine):

    nice -n 19 .venv/bin/python tools/train_segmenter.py --minutes 8 --out /tmp/seg/segmenter

1. faces: every 2nd frame of ../shared/data's clips through facelab's extractor, kept as head
   crops with their mesh labels (cached in --work, about a minute the first time);
2. splits (segment/data.py): GRID speaker D and Pexels frames 0–49 validate; the Pexels
   hand frames 50–239 are the hand-labelled test and are never used here;
3. training: re-cut at random face types, jitter, flip, synthetic occluders, colour, blur,
   JPEG; BCE + Dice, Adam, cosine learning rate over the budget (CPU minutes, steps or a
   wall-clock deadline), seed; `--steps N --seed S` repeats a run exactly;
4. measures on the synthetic-occlusion validation set (every face occluded) and on the
   clean one: IoU with the label and the share of occluder pixels over the face kept as
   face, beside the same figures for the plain 68-point hull and the mesh hull; inference
   ms per face (batch 1, fp32, 1 and 2 threads);
5. measures on the hand-labelled held-out faces (tests/fixtures/segment/pexels_hand.json,
   re-extracted from ../shared/data: real hands the network never saw) the same figures for
   the network, the mesh hull and the 68-point hull;
6. writes --out.safetensors and --out.json (the model card: data, recipe, run, figures).

`--init PATH` goes on training the network PATH (its card's run is kept in the new card).
`--evaluate PATH` re-measures a trained network PATH on the held-out faces and writes it to
--out (default PATH) in `--dtype` (float16 halves the file) with the figures of the written
weights in its card: how the shipped network was made from a run's output.

`--kinds` lists the occluder kinds (an ablation: `--kinds hand,hair`, or `none`), and
`--no-affine`, `--no-flip`, `--no-colour`, `--no-blur`, `--no-jpeg` switch augmentations off.
`--calibrate` prints the IoU of the forehead-extended 68-point label against the mesh label
per forehead factor (labels.FOREHEAD), `--bench` only times the network.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from facelab.segment import fit, fixtures
from facelab.segment.data import (
    CLIPS,
    PEXELS_HAND,
    VALIDATION,
    FaceBank,
    Recipe,
    baselines,
    extract_bank,
    figures,
    make_batch,
    validation_samples,
)
from facelab.segment.labels import landmarks_label
from facelab.segment.network import DTYPES, SegNet, load_segmenter, save_segmenter
from facelab.segment.occluders import OCCLUDERS

ROOT = Path(__file__).resolve().parents[1]
LICENCES = {"grid": "GRID audiovisual corpus, CC BY 4.0 (Cooke, Barker, Cunningham & Shao 2006)",
            "pexels": "Pexels licence, video 3063838 (Wolfgang Langer)",
            "images": "public domain (US Navy; NASA)"}
GOALS = {"iou_mean": ">= 0.90", "occluder_in_mask": "<= 0.05", "ms_per_face_cpu": "<= 15"}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=Path("/tmp/facelab-segmenter"))
    p.add_argument("--out", type=Path, default=None, help="default: WORK/segmenter")
    p.add_argument("--minutes", type=float, default=None,
                   help="budget in CPU minutes of this process (the same work on a busy machine)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--wall-minutes", type=float, default=None, help="a wall-clock deadline")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (a second one spins on a busy machine)")
    p.add_argument("--every", type=int, default=2, help="keep every n-th frame")
    p.add_argument("--kinds", default="all", help="occluder kinds, comma-separated, or none")
    p.add_argument("--occlusion-p", type=float, default=0.8)
    for name in ("affine", "flip", "colour", "blur", "jpeg"):
        p.add_argument(f"--no-{name}", action="store_true")
    p.add_argument("--val-per-face", type=int, default=2)
    p.add_argument("--report-s", type=float, default=30.0)
    p.add_argument("--calibrate", action="store_true")
    p.add_argument("--bench", action="store_true")
    p.add_argument("--evaluate", type=Path, default=None, metavar="PATH",
                   help="re-measure the network PATH (no suffix) and write it to --out")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--init", type=Path, default=None, metavar="PATH",
                   help="start from the network PATH (no suffix) instead of random weights")
    return p.parse_args()


def held_out(net: SegNet, data: Path) -> dict:
    """The held-out figures (segment/fixtures.py): network, mesh hull and 68-point hull."""
    faces = fixtures.extract(data)
    pred = fit.predict(net, np.stack([f.image for f in faces]))
    return {"file": str(fixtures.PEXELS_HAND_FILE.relative_to(ROOT)),
            "made": fixtures.load()["made"], "frames": [f.frame for f in faces],
            "goals": GOALS, **fixtures.score(pred, faces)}


def evaluate(args: argparse.Namespace) -> int:
    """Re-measure a trained network, write it in --dtype, measure what was written."""
    net, card = load_segmenter(args.evaluate)
    out = args.out or args.evaluate
    out.parent.mkdir(parents=True, exist_ok=True)
    save_segmenter(net, out, card, dtype=args.dtype)
    net, card = load_segmenter(out)
    card["quality"] = {**card.get("quality", {}), "held_out_hand_labelled": held_out(
        net, args.data)}
    card["evaluated"] = {"command": " ".join(sys.argv), "dtype": args.dtype}
    weights, _ = save_segmenter(net, out, card, dtype=args.dtype)
    print(json.dumps(card["quality"]["held_out_hand_labelled"], indent=1))
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) and its card")
    return 0


def bank_for(args: argparse.Namespace) -> FaceBank:
    path = args.work / f"bank-every{args.every}.npz"
    if path.is_file():
        return FaceBank.load(path)
    args.work.mkdir(parents=True, exist_ok=True)
    bank = extract_bank(args.data, every=args.every, log=lambda s: print(s, flush=True))
    bank.save(path)
    return bank


def calibrate(bank: FaceBank) -> None:
    size = bank.images.shape[1]
    for factor in (0.0, 0.1, 0.15, 0.16, 0.17, 0.18, 0.19, 0.2, 0.3):
        ious = []
        for lm, lab in zip(bank.landmarks, bank.labels, strict=True):
            p, y = landmarks_label(lm, size, factor) > 0.5, lab > 127
            ious.append((p & y).sum() / max((p | y).sum(), 1))
        print(f"forehead {factor:.2f}: IoU with the mesh label {np.mean(ious):.4f} "
              f"(min {np.min(ious):.4f})")


def main() -> int:
    args = parse()
    torch.set_num_threads(args.threads)
    if args.evaluate:
        return evaluate(args)
    if args.bench:
        for res in (128, 160):
            net = SegNet(res)
            for t in (1, 2):
                print(f"resolution {res}, {t} thread(s): {fit.time_inference(net, t, 100)}")
        return 0
    kinds = () if args.kinds == "none" else tuple(sorted(OCCLUDERS)) if args.kinds == "all" \
        else tuple(args.kinds.split(","))
    recipe = Recipe(resolution=args.resolution, affine=not args.no_affine, flip=not args.no_flip,
                    colour=not args.no_colour, blur=not args.no_blur, jpeg=not args.no_jpeg,
                    occluders=kinds, occlusion_p=args.occlusion_p)
    t0 = time.monotonic()
    bank = bank_for(args)
    if args.calibrate:
        calibrate(bank)
        return 0
    train, val = bank.split("train"), bank.split("val")
    counts = {c: int((train.clips == c).sum()) for c in CLIPS}
    print(f"faces: {len(train)} train {counts}, {len(val)} validation "
          f"({time.monotonic() - t0:.0f} s)", flush=True)
    # validation: the full recipe's geometry and degradation, all occluder kinds
    val_recipe = Recipe(resolution=args.resolution)
    val_occ = validation_samples(val, val_recipe, args.val_per_face)
    val_clean = validation_samples(val, val_recipe, 1, occluded=False)

    torch.manual_seed(args.seed)
    net, previous = SegNet(args.resolution), None
    if args.init:  # go on training a network (a new seed draws new batches)
        start, previous = load_segmenter(args.init)
        if start.resolution != args.resolution:
            raise SystemExit(f"--init is a {start.resolution}-px network: pass --resolution "
                             f"{start.resolution}")
        net.load_state_dict(start.state_dict())
    report = fit.run(net, lambda step: make_batch(train, args.seed, step, args.batch, recipe),
                     minutes=args.minutes, steps=args.steps, wall_minutes=args.wall_minutes,
                     lr=args.lr, report_s=args.report_s, log=lambda s: print(s, flush=True))
    net.eval()
    quality = {}
    for name, samples in (("synthetic_occlusion", val_occ), ("clean", val_clean)):
        pred = fit.predict(net, np.stack([s.image for s in samples]))
        quality[name] = {"segmenter": figures(pred, samples), **baselines(samples)}
    if (args.data / "pexels" / "woman_pose_variety.mp4").is_file():
        quality["held_out_hand_labelled"] = held_out(net, args.data)
    timing = {f"{t}_thread{'s' * (t > 1)}": fit.time_inference(net, t, 100) for t in (1, 2)}
    card = {
        "what": "facelab's generic face segmenter: aligned face (any face type) → face mask "
                "without occluders",
        "data": {"clips": CLIPS, "licences": LICENCES, "every_nth_frame": args.every,
                 "train_faces": counts,
                 "validation": {k: [v.start, min(v.stop, 100_000)] for k, v in VALIDATION.items()},
                 "never_used": {"pexels": [PEXELS_HAND.start, PEXELS_HAND.stop]},
                 "labels": "FaceMesh hull (segment/labels.py) minus synthetic occluders"},
        "recipe": {**recipe.__dict__, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                   "loss": "BCE + soft Dice", "optimizer": "Adam, cosine to 5 %",
                   "cpu_minutes": args.minutes, "steps": args.steps,
                   "wall_minutes": args.wall_minutes},
        "run": {"steps": report.steps, "cpu_seconds": round(report.cpu_seconds, 1),
                "wall_seconds": round(report.seconds, 1),
                "losses": [round(x, 4) for x in report.losses], "threads": args.threads,
                "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__},
        "quality": quality, "inference": timing,
        "command": " ".join(sys.argv),
        "continues": None if previous is None else {
            "from": str(args.init), "command": previous.get("command"),
            "run": previous.get("run"), "recipe": previous.get("recipe"),
            "continues": previous.get("continues")},
    }
    out = args.out or args.work / "segmenter"
    out.parent.mkdir(parents=True, exist_ok=True)
    weights, card_path = save_segmenter(net, out, card)
    print(json.dumps({"quality": quality, "inference": timing, "steps": report.steps}, indent=1))
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) and {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
