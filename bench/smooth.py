"""Landmark smoothing bench: how much jitter `merge/smooth.py` removes, and what it costs.

Real dst faces: GRID speakers A (clip 1), C and D (still heads, speech) and the Pexels clip
(head turns, expressions), every frame, extracted by `extract_frames` + `extract_faces`
(accurate detector) into a temporary workspace, or read from --workspaces DIR/<clip>/.
Per clip and strength, against the raw landmarks (face size = side of the similarity
fit's unit square, ≈ eyebrows to mouth):

* jitter: mean norm of the second temporal difference of the pose (centre, % of the face
  size; rotation, degrees) and of all 68 points (%), raw → smoothed, and the ratio;
* dev moving: mean distance smoothed↔raw landmarks (% of face size) on frames whose centre
  moves more than 1 % of the face size per frame (lag + noise removed: should stay < 1–2 %);
* mouth r: correlation of the inner-mouth opening (points 62–66) raw vs smoothed (≈ 1);
* ms: smoothing time per 100 faces.

Then the filter choice on semi-synthetic tracks whose truth is known: the Pexels pose
Gaussian-smoothed (σ 3 frames) as real head motion, and a still head, plus white noise of
GRID's or Pexels's measured level; RMSE to the truth / the noisy input's RMSE (lower is
better, < 1 = better than no smoothing) for the classic One-Euro (frame-difference speed,
forward+backward averaged), Savitzky–Golay, and ours.

Usage: .venv/bin/python bench/smooth.py [--workspaces DIR] [--strengths 0,1,2,4,6,10]
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIPS = {"grid_a1": (DATA / "grid" / "speaker_a_1.mpg", 25.0),
         "grid_c": (DATA / "grid" / "speaker_c.mpg", 25.0),
         "grid_d": (DATA / "grid" / "speaker_d.mpg", 25.0),
         "pexels": (DATA / "pexels" / "woman_pose_variety.mp4", 24000 / 1001)}


def extract(clip: Path, root: Path) -> Path:
    """Workspace `root` with `clip` as dst, its frames and faces extracted (unless already
    there)."""
    from facelab.faces.extract import FaceExtractOptions, extract_faces
    from facelab.video.extract import extract_frames
    from facelab.workspace import Workspace

    aligned = root / "data_dst" / "aligned"
    if not aligned.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, root / f"data_dst{clip.suffix}")
        extract_frames(Workspace(root), "dst")
        extract_faces(Workspace(root), "dst", FaceExtractOptions(debug=False))
    return root


def pose(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """T×4 pose (centre x, y and log scale in face sizes, angle in radians), face size px."""
    from facelab.merge.smooth import decompose

    c, a, _ = decompose(lm)
    size = float(np.median(np.abs(a)))
    return np.stack([c.real / size, c.imag / size, np.log(np.abs(a)),
                     np.unwrap(np.angle(a))], 1), size


def clip_rows(name: str, root: Path, fps: float, strengths: list[int]) -> list[str]:
    from facelab.merge.jobs import dst_face_refs
    from facelab.merge.smooth import build_tracks, smooth_landmarks
    from facelab.workspace import Workspace

    refs = dst_face_refs(Workspace(root))
    tracks = [t for t in build_tracks(refs) if len(t) >= 5]
    rows = []
    for k in strengths:
        start = time.perf_counter()
        out = smooth_landmarks(refs, k, fps)
        ms = 1e5 * (time.perf_counter() - start) / len(refs)
        acc = np.zeros(9)
        for t in tracks:  # frame-weighted means over the tracks
            raw = np.stack([f.landmarks for f in t.faces])
            sm = np.stack([out[f.key] for f in t.faces])
            pr, size = pose(raw)
            ps, _ = pose(sm)
            d2 = lambda x: np.linalg.norm(np.diff(x, 2, axis=0), axis=-1).mean()  # noqa: E731
            speed = np.linalg.norm(np.gradient(pr[:, :2], axis=0), axis=1)
            dev = np.linalg.norm(sm - raw, axis=-1).mean(1) / size
            moving = speed > 0.01
            mouth = [np.linalg.norm(x[:, 66] - x[:, 62], axis=-1) for x in (raw, sm)]
            acc += len(t) * np.array([
                100 * d2(pr[:, :2]), 100 * d2(ps[:, :2]),
                math.degrees(d2(pr[:, 3:])), math.degrees(d2(ps[:, 3:])),
                100 * d2(raw) / size, 100 * d2(sm) / size,
                100 * dev[moving].mean() if moving.any() else 0.0, moving.mean(),
                np.corrcoef(*mouth)[0, 1] if k else 1.0])
        m = acc / sum(len(t) for t in tracks)
        ratio = lambda a, b: a / b if b else math.inf  # noqa: E731
        rows.append(
            f"{name:8} {k:3d} {len(refs):5d} {len(tracks):3d}  "
            f"{m[0]:.3f}→{m[1]:.3f} {ratio(m[0], m[1]):5.1f}x  "
            f"{m[2]:.3f}→{m[3]:.3f} {ratio(m[2], m[3]):5.1f}x  "
            f"{m[4]:.3f}→{m[5]:.3f} {ratio(m[4], m[5]):4.1f}x  "
            f"{m[6]:5.2f} ({100 * m[7]:3.0f}%) {m[8]:7.3f} {ms:6.1f}")
    return rows


def gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    h = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-h, h + 1) / sigma) ** 2)
    xp = np.concatenate([x[:1].repeat(h, 0), x, x[-1:].repeat(h, 0)])
    return np.stack([np.convolve(v, k / k.sum(), mode="valid") for v in xp.T], 1)


def one_euro_classic(x: np.ndarray, t: np.ndarray, min_cutoff: float, beta: float,
                     d_cutoff: float = 1.0) -> np.ndarray:
    """Casiez et al.'s filter as published (speed from the frame difference), forward and
    backward averaged."""
    def alpha(fc: np.ndarray | float, dt: float) -> np.ndarray | float:
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * fc * dt))

    def run(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        y, dx = x.copy(), np.zeros((*x.shape[1:2], 1))
        for i in range(1, len(x)):
            dt = abs(t[i] - t[i - 1])
            speed = np.linalg.norm(x[i] - y[i - 1], axis=-1, keepdims=True) / dt
            dx = dx + alpha(d_cutoff, dt) * (speed - dx)
            y[i] = y[i - 1] + alpha(min_cutoff + beta * dx, dt) * (x[i] - y[i - 1])
        return y

    return (run(x, t) + run(x[::-1], t[::-1])[::-1]) / 2


def savgol(x: np.ndarray, window: int, order: int = 2) -> np.ndarray:
    n, h = len(x), window // 2
    proj = np.linalg.pinv(np.vander(np.arange(-h, h + 1), order + 1, increasing=True))
    flat, out = x.reshape(n, -1), np.empty((n, x[0].size))
    for i in range(n):
        lo = min(max(i - h, 0), n - window)
        out[i] = ((i - lo - h) ** np.arange(order + 1)) @ (proj @ flat[lo:lo + window])
    return out.reshape(x.shape)


def filter_rows(pexels: np.ndarray, grid: list[np.ndarray]) -> list[str]:
    from facelab.merge.smooth import DEFAULT_SMOOTH, POSE_BETA, POSE_MIN_CUTOFF, adaptive_smooth

    noise = {"GRID": np.concatenate([g - gauss(g, 2.0) for g in grid]).std(0),
             "Pexels": (pexels - gauss(pexels, 2.0)).std(0)}
    truths = {"moving": gauss(pexels, 3.0), "still": np.zeros((300, 4))}
    cut = POSE_MIN_CUTOFF / DEFAULT_SMOOTH
    filters = {
        "one-euro classic 0.5 Hz β10": lambda x, t: one_euro_classic(x, t, 0.5, 10.0),
        "one-euro classic 1 Hz β20": lambda x, t: one_euro_classic(x, t, 1.0, 20.0),
        "savitzky-golay 9": lambda x, t: savgol(x, 9),
        "savitzky-golay 15": lambda x, t: savgol(x, 15),
        f"ours, strength {DEFAULT_SMOOTH}": lambda x, t: adaptive_smooth(x, t, cut, POSE_BETA),
    }
    rows = []
    rng = np.random.default_rng(0)
    for label, f in filters.items():
        cells = []
        for sig in noise.values():
            for truth in truths.values():
                t = np.arange(len(truth)) / 24.0
                err = []
                for _ in range(4):
                    x = truth + rng.normal(size=truth.shape) * sig
                    y = np.concatenate([f(x[:, None, :2], t)[:, 0],
                                        f(x[:, 2:3, None], t)[:, 0],
                                        f(x[:, 3:4, None], t)[:, 0]], 1)
                    err.append(np.sqrt(((y - truth) ** 2).mean()) /
                               np.sqrt(((x - truth) ** 2).mean()))
                cells.append(f"{np.mean(err):5.2f}")
        rows.append(f"{label:30} " + "  ".join(f"{c:>13}" for c in cells))
    head = f"{'filter (pose)':30} " + "  ".join(
        f"{n + ' ' + t:>13}" for n in noise for t in truths)
    sigmas = ", ".join(f"{n} σ centre {100 * s[:2].mean():.2f} %, scale {100 * s[2]:.2f} %, "
                       f"angle {math.degrees(s[3]):.2f}°" for n, s in noise.items())
    return [f"noise: {sigmas}", head, *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=Path, default=None,
                        help="keep/reuse extracted clips in DIR/<clip>/ (default: temporary)")
    parser.add_argument("--strengths", default="0,1,2,4,6,10")
    a = parser.parse_args()
    strengths = [int(s) for s in a.strengths.split(",")]
    from facelab.merge.jobs import dst_face_refs
    from facelab.merge.smooth import build_tracks
    from facelab.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="bench_smooth_") as tmp:
        base = a.workspaces or Path(tmp)
        roots = {n: extract(clip, base / n) for n, (clip, _) in CLIPS.items()}
        print(f"{'clip':8} {'k':>3} {'faces':>5} {'trk':>3}  {'centre jitter %':>20}  "
              f"{'rotation jitter °':>20}  {'68-point jitter %':>19}  "
              f"{'dev moving %':>12} {'mouth r':>7} {'ms/100':>6}")
        for n, (_, fps) in CLIPS.items():
            print("\n".join(clip_rows(n, roots[n], fps, strengths)), flush=True)
        poses = {}
        for n in CLIPS:
            longest = max(build_tracks(dst_face_refs(Workspace(roots[n]))), key=len)
            poses[n] = pose(np.stack([f.landmarks for f in longest.faces]))[0]
    print()
    print("\n".join(filter_rows(poses.pop("pexels"), list(poses.values()))))


if __name__ == "__main__":
    main()
