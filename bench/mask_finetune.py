"""Per-person fine-tuning of the segmenter (issue 18): does `facelab mask train` on 10
labelled faces of a new person raise the IoU on that person's other faces within 5
CPU-minutes?

The person is GRID speaker D (glasses), whom the generic network never trained on (its
validation speaker). Each of D's faces gets synthetic occluders (segment/occluders.py,
seeded: hands by default) pasted on it, and the "hand labels" are what a person would draw
in the studio: polygons around the visible face (the face's mesh label minus the
occluders, traced and simplified to 1 px like a drawn outline). 10 faces spread over the
clip carry their polygons; the other faces are the test. The side's network is fine-tuned
by the library `facelab mask train` runs (`segment/person.py`) for --minutes of CPU time;
IoU with the polygons on the test faces and the share of occluder pixels kept as face,
before (generic) and after (fine-tuned), and for the plain 68-point hull, in one run.

Usage: nice -n 19 .venv/bin/python bench/mask_finetune.py [--minutes 5] [--labelled 10]
       [--kinds hand] [--weights PATH] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from facelab.faces.faceimage import read_face, write_face
from facelab.faceset.polygons import polygon_mask
from facelab.progress import NULL
from facelab.segment import person, shipped
from facelab.segment.labels import face_label, hull68_mask
from facelab.segment.occluders import OCCLUDERS, occlude
from facelab.segment.options import MaskTrainOptions
from facelab.workspace import Workspace

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIP = "grid/speaker_d.mpg"


def traced(label: np.ndarray) -> list[dict]:
    """A label as drawn polygons: outer outlines include, holes exclude (1 px tolerance)."""
    found, tree = cv2.findContours((label > 0.5).astype(np.uint8), cv2.RETR_CCOMP,
                                   cv2.CHAIN_APPROX_SIMPLE)
    inc, exc = [], []
    for c, (_, _, _, parent) in zip(found, tree[0] if tree is not None else [], strict=False):
        pts = cv2.approxPolyDP(c, 1.0, True)[:, 0].astype(float)
        if len(pts) >= 3:
            (exc if parent >= 0 else inc).append({"type": "exclude" if parent >= 0
                                                  else "include", "pts": pts.tolist()})
    return inc + exc


def scores(probs: list[np.ndarray], labels: list[np.ndarray], occ: list[np.ndarray]
           ) -> tuple[float, float, float]:
    """Mean IoU, worst IoU, occluder pixels over the face kept as face (pooled)."""
    ious, kept, total = [], 0, 0
    for p, y, o in zip(probs, labels, occ, strict=True):
        size = y.shape[0]
        p = cv2.resize(p, (size, size), interpolation=cv2.INTER_LINEAR)
        ious.append(person.iou(p, y))
        kept += int(((p > 0.5) & o).sum())
        total += int(o.sum())
    return float(np.mean(ious)), float(np.min(ious)), kept / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--minutes", type=float, default=5.0, help="CPU minutes of fine-tuning")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--labelled", type=int, default=10)
    ap.add_argument("--kinds", default="hand", help=f"occluders, of {sorted(OCCLUDERS)}")
    ap.add_argument("--weights", type=Path, default=shipped.SHIPPED,
                    help="the generic network to start from (no suffix)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shipped.SHIPPED = args.weights  # the library's generic, for this run
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        root.mkdir()
        shutil.copyfile(args.data / CLIP, root / "data_dst.mpg")
        for cmd in (("video", "extract", "dst", "--frames", "png"),
                    ("extract", "dst", "--no-debug")):
            subprocess.run([sys.executable, "-m", "facelab", "-w", str(root), "-q", *cmd],
                           check=True, capture_output=True)
        ws = Workspace(root)
        paths = sorted(ws.aligned_dir("dst").glob("*.jpg"))
        chosen = set(np.linspace(0, len(paths) - 1, args.labelled).round().astype(int))
        test: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]] = []
        for k, p in enumerate(paths):
            image, meta = read_face(p)
            rng = np.random.default_rng([args.seed, k])
            o = occlude(image, face_label(meta), meta.landmarks, rng, kinds)
            polys = traced(o.label)
            if k in chosen:
                meta.mask_polys = polys
            write_face(p, o.image, meta)
            if k not in chosen:
                test.append((p, polygon_mask(polys, meta.size) if polys else
                             np.zeros((meta.size,) * 2, np.float32),
                             (o.occluder > 0.5) & (face_label(meta) > 0.5),
                             hull68_mask(meta.landmarks, meta.size)))
        images = [read_face(p)[0] for p, *_ in test]
        labels, occs = [t[1] for t in test], [t[2] for t in test]
        generic, card = shipped.load_shipped()
        before = scores(person.probabilities(generic, images), labels, occs)
        hull = scores([t[3] for t in test], labels, occs)
        t0 = time.monotonic()
        res = person.train(ws, "dst", MaskTrainOptions(minutes=args.minutes, steps=args.steps,
                                                       worst=0, validation=0.0), NULL)
        wall = time.monotonic() - t0
        tuned, _ = shipped.load(shipped.person_path(ws, "dst"))
        after = scores(person.probabilities(tuned, images), labels, occs)
    print(f"GRID speaker D, occluders {','.join(kinds)}: {len(chosen)} labelled faces, "
          f"{len(test)} test faces; generic {args.weights.name} "
          f"({card.get('architecture')})")
    print(f"fine-tuning: {res.steps} steps, {res.cpu_seconds:.0f} CPU s, {wall:.0f} s wall")
    print(f"{'mask':<22}{'IoU mean':>9}{'IoU min':>9}{'occluder kept':>15}")
    for name, s in (("68-point hull", hull), ("generic network", before),
                    ("fine-tuned network", after)):
        print(f"{name:<22}{s[0]:>9.3f}{s[1]:>9.3f}{100 * s[2]:>14.1f}%")


if __name__ == "__main__":
    main()
