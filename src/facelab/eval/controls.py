"""Known-answer "results" that show what the measures can tell apart (tests, bench/quality).

None uses a model: dst's own frames; src's real faces pasted into dst's frames (identity
must say src); a blurred average src face pasted into every frame (closer to src, yet blurry
and frozen: the trap that identity alone falls into); dst with its face blurred, or with
only its background blurred (face fidelity must not move); a mirror image (pose error);
random per-frame shifts (jitter).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.eval import background
from facelab.faces.facetype import FIT_POINTS, similarity_fit
from facelab.faces.record import Landmarks
from facelab.fsutil import atomic_path


def _hull_mask(points68: np.ndarray, shape: tuple[int, ...], shrink: float, feather: float,
               forehead: float = 0.0) -> np.ndarray:
    """float32 H×W in 0–1: the face hull (jaw, brows raised by `forehead`), shrunk by
    `shrink` and feathered by `feather`, all in eye distances."""
    h, w = shape[:2]
    eye = float(np.linalg.norm(points68[42:48].mean(0) - points68[36:42].mean(0)))
    up = points68[27] - points68[8]
    up = up / max(float(np.linalg.norm(up)), 1e-6)
    pts = np.vstack([points68[:17], points68[17:27] + up * forehead * eye])
    m = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(np.round(pts).astype(np.int32)), 255)
    k = max(1, int(shrink * eye))
    m = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
    return cv2.GaussianBlur(m.astype(np.float32) / 255, (0, 0), max(0.5, feather * eye))


def paste(frame: np.ndarray, target: Landmarks | None, face: np.ndarray,
          face_points: np.ndarray) -> np.ndarray:
    """`face` (an image whose face is marked by `face_points`) warped onto `target`'s face
    in `frame` and blended inside its hull."""
    if target is None:
        return frame.copy()
    mat = similarity_fit(face_points[FIT_POINTS], target.points68[FIT_POINTS])
    h, w = frame.shape[:2]
    warped = cv2.warpAffine(face, mat, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    alpha = _hull_mask(target.points68, frame.shape, 0.1, 0.1, forehead=0.4)[..., None]
    return (frame * (1 - alpha) + warped * alpha).round().clip(0, 255).astype(np.uint8)


def paste_faces(frames: list[np.ndarray], targets: list[Landmarks | None],
                faces: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Frame i gets faces[i % len(faces)]: real src faces, moving as src moved."""
    return [paste(f, t, *faces[i % len(faces)]) for i, (f, t) in
            enumerate(zip(frames, targets, strict=True))]


def average_face(faces: list[tuple[np.ndarray, np.ndarray]], blur: float = 2.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The pixel mean of aligned faces of one size (all aligned alike) and their mean
    landmarks, Gaussian-blurred by `blur` px: what an undertrained model draws."""
    images = np.stack([img.astype(np.float32) for img, _ in faces])
    mean = images.mean(0)
    if blur > 0:
        mean = cv2.GaussianBlur(mean, (0, 0), blur)
    points = np.mean([p for _, p in faces], axis=0)
    return mean.round().clip(0, 255).astype(np.uint8), points


def blur_faces(frames: list[np.ndarray], targets: list[Landmarks | None], sigma: float = 8.0
               ) -> list[np.ndarray]:
    out = []
    for f, t in zip(frames, targets, strict=True):
        if t is None:
            out.append(f.copy())
            continue
        alpha = _hull_mask(t.points68, f.shape, 0.1, 0.1, forehead=0.4)[..., None]
        b = cv2.GaussianBlur(f, (0, 0), sigma).astype(np.float32)
        out.append((f * (1 - alpha) + b * alpha).round().clip(0, 255).astype(np.uint8))
    return out


def blur_background(frames: list[np.ndarray], targets: list[Landmarks | None],
                    sigma: float = 8.0) -> list[np.ndarray]:
    """dst blurred outside the region a merge may touch (eval/background.py), the face
    left as it was."""
    out = []
    for f, t in zip(frames, targets, strict=True):
        keep = background.background_mask(t.points68 if t else None, f.shape,
                                          t.yaw if t else 0.0)
        g = f.copy()
        g[keep] = cv2.GaussianBlur(f, (0, 0), sigma)[keep]
        out.append(g)
    return out


def mirror(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(f[:, ::-1]) for f in frames]


def shake(frames: list[np.ndarray], pixels: float = 3.0, seed: int = 0) -> list[np.ndarray]:
    """Each frame moved by a random sub-pixel shift of up to `pixels` (camera shake)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        dx, dy = rng.uniform(-pixels, pixels, 2)
        mat = np.float32([[1, 0, dx], [0, 1, dy]])
        out.append(cv2.warpAffine(f, mat, (f.shape[1], f.shape[0]),
                                  borderMode=cv2.BORDER_REPLICATE))
    return out


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    """PNG frames 00001.png … (lossless: eval reads a folder of frames like a video)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames, 1):
        with atomic_path(folder / f"{i:05d}.png") as tmp:
            cv2.imwrite(str(tmp), f, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return folder
