"""Identity calibration: how well a face descriptor separates the GRID speakers.

Every STEP-th frame of each GRID clip (A clip 1, A clip 2 = the same person; B, C, D others),
faces by the accurate extractor. For each descriptor: the distance of every frame of one
clip to the identity (mean descriptor) of another clip, the way `facelab eval` uses it;
same person = A1 frames ↔ A2 identity and back; different = every other pair of clips.
Prints the range of each group, the margin (min different − max same) and the midpoint
threshold. Descriptors: dlib's ResNet on its own 5-point chip (what eval uses), the same
network on our 68-point aligned crop resized to its 150 px, and a no-learning baseline
(uniform LBP histograms on a 4×4 grid of the aligned grey face, L2-normalised).

Usage: .venv/bin/python bench/eval_identity.py [--step 3]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import cv2
import numpy as np

from facelab.eval.identity import Recognizer
from facelab.eval.sources import load_frames
from facelab.faces.extractor import Extractor, ExtractorOptions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "grid"
CLIPS = ("speaker_a_1", "speaker_a_2", "speaker_b", "speaker_c", "speaker_d")


def lbp(face_bgr: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(cv2.resize(face_bgr, (128, 128)), cv2.COLOR_BGR2GRAY).astype(np.int16)
    c = g[1:-1, 1:-1]
    code = np.zeros_like(c, dtype=np.uint8)
    for bit, (dy, dx) in enumerate([(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0),
                                    (1, -1), (0, -1)]):
        code |= ((g[1 + dy:127 + dy, 1 + dx:127 + dx] >= c).astype(np.uint8) << bit)
    hists = [np.bincount(cell.ravel(), minlength=256)
             for rows in np.array_split(code, 4) for cell in np.array_split(rows, 4, axis=1)]
    h = np.concatenate(hists).astype(np.float32)
    return h / np.linalg.norm(h)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--step", type=int, default=3)
    args = ap.parse_args()
    ex = Extractor(ExtractorOptions(detector="accurate"))
    rec, whole = Recognizer(inner=True), Recognizer(inner=False)
    desc: dict[str, dict[str, np.ndarray]] = {"dlib-resnet (5-point chip, inner face)": {},
                                              "dlib-resnet (5-point chip)": {},
                                              "dlib-resnet (our 68-point crop)": {},
                                              "LBP baseline": {}}
    t_embed, n_faces = 0.0, 0
    for clip in CLIPS:
        frames = load_frames(DATA / f"{clip}.mpg")[:: args.step]
        pairs, crops = [], []
        for f in frames:
            faces = ex.run(f)
            if faces:
                face = max(faces, key=lambda x: np.ptp(x.landmarks.points68[:, 0]))
                pairs.append((f, face.landmarks.points68))
                crops.append(face.image)
        t0 = time.perf_counter()
        desc["dlib-resnet (5-point chip, inner face)"][clip] = rec.embed(pairs)
        t_embed += time.perf_counter() - t0
        desc["dlib-resnet (5-point chip)"][clip] = whole.embed(pairs)
        n_faces += len(pairs)
        _, net = rec._models
        chips = [np.ascontiguousarray(cv2.resize(c, (150, 150))[:, :, ::-1]) for c in crops]
        desc["dlib-resnet (our 68-point crop)"][clip] = np.asarray(
            [np.asarray(d) for d in net.compute_face_descriptor(chips)], np.float32)
        desc["LBP baseline"][clip] = np.asarray([lbp(c) for c in crops])
        print(f"{clip}: {len(pairs)}/{len(frames)} faces")
    print(f"dlib descriptor: {1000 * t_embed / n_faces:.0f} ms/face (chip + network, batched)")
    for name, d in desc.items():
        same, diff = [], []
        for a, b in itertools.permutations(CLIPS, 2):
            dist = np.linalg.norm(d[a] - d[b].mean(0), axis=1)
            (same if {a, b} == {"speaker_a_1", "speaker_a_2"} else diff).append(dist)
        s, o = np.concatenate(same), np.concatenate(diff)
        margin = o.min() - s.max()
        print(f"{name}: same {s.min():.3f}–{s.max():.3f} (mean {s.mean():.3f}), "
              f"different {o.min():.3f}–{o.max():.3f} (mean {o.mean():.3f}), "
              f"margin {margin:+.3f}, midpoint {(o.min() + s.max()) / 2:.3f}, "
              f"d' {(o.mean() - s.mean()) / np.sqrt((o.var() + s.var()) / 2):.1f}")


if __name__ == "__main__":
    main()
