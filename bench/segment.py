"""The segmenter benchmark (issue 18): the shipped generic network on the hand-labelled
held-out faces (real hands it never saw), beside the masks that know nothing of occluders,
in the same run, and its inference time.

Faces: tests/fixtures/segment/pexels_hand.json, re-extracted from ../shared/data (Pexels
frames with a hand over the face, and controls without). Per mask (the network, the FaceMesh
hull, the plain 68-point hull): IoU with the labelled face region (mean, worst face, pooled)
and the share of occluder pixels over the face that the mask keeps as face. Then the
network's milliseconds per face, batch 1, fp32, on 1 and 2 torch threads: the median wall
time and the median CPU time of this process (on a busy machine the CPU time is what an idle
core would take). Goals: IoU >= 0.90, occluder pixels in the mask <= 5 %, <= 15 ms a face.

Usage: .venv/bin/python bench/segment.py [--data ../shared/data] [--weights PATH] [--runs 200]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from facelab.segment import fit, fixtures
from facelab.segment.network import load_segmenter
from facelab.segment.shipped import SHIPPED

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--weights", type=Path, default=SHIPPED, help="a network (no suffix)")
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(1)
    net, card = load_segmenter(args.weights)
    t0 = time.monotonic()
    faces = fixtures.extract(args.data)
    pred = fit.predict(net, np.stack([f.image for f in faces]))
    scores = fixtures.score(pred, faces)
    print(f"network {args.weights.name} ({card.get('dtype')}, {card['architecture']}); "
          f"{len(faces)} held-out faces extracted and scored in {time.monotonic() - t0:.1f} s")
    print(f"{'faces':<13}{'mask':<11}{'IoU mean':>9}{'IoU min':>9}{'pooled':>8}"
          f"{'occluder in mask':>18}")
    for part, rows in scores.items():
        for name, s in rows.items():
            print(f"{part + ' (' + str(s['faces']) + ')':<13}{name:<11}{s['iou_mean']:>9.3f}"
                  f"{s['iou_min']:>9.3f}{s['iou_pooled']:>8.3f}"
                  f"{100 * s['occluder_in_mask']:>17.1f}%")
    for threads in (1, 2):
        t = fit.time_inference(net, threads, args.runs)
        print(f"inference, batch 1, fp32, {threads} thread(s): {t['wall_ms']:.2f} ms wall, "
              f"{t['cpu_ms']:.2f} ms CPU per face")


if __name__ == "__main__":
    main()
