"""The segmenter's training data: real faces, mesh labels, synthetic occluders, augmentation.

`extract_bank` runs facelab's own extractor (detector, FaceMesh, alignment) over the
consented footage in ../shared/data and keeps each face as a `head` crop with its label
(`labels.face_label`) and 68 landmarks; a sample is re-cut from that crop at a random face
type (full, whole-face or head: the segmenter serves facesets of any type), jittered and
flipped like training samples (`train/warp.py`), occluded (`occluders.occlude`) and then
degraded like footage (colour, blur, noise, JPEG). Sample i of a batch depends only on
(seed, step, i), so a run is reproducible.

Splits hold out whole people and clips: GRID speaker D (glasses) and the first 50 frames of
the Pexels clip validate; the Pexels frames with a hand near the face (`PEXELS_HAND`) are
the hand-labelled test set and are never trained on nor validated on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from facelab.faces.facetype import FaceType, face_transform, transform_points
from facelab.segment.labels import face_label, hull68_mask
from facelab.segment.occluders import OCCLUDERS, occlude
from facelab.train.warp import draw_augment, jitter_matrix

#: name → path under ../shared/data (videos and still images)
CLIPS = {"grid_a1": "grid/speaker_a_1.mpg", "grid_a2": "grid/speaker_a_2.mpg",
         "grid_b": "grid/speaker_b.mpg", "grid_c": "grid/speaker_c.mpg",
         "grid_d": "grid/speaker_d.mpg", "pexels": "pexels/woman_pose_variety.mp4",
         "hopper": "images/grace_hopper.jpg", "astronaut": "images/astronaut.png"}
PEXELS_HAND = range(50, 240)  # the hand enters at ~56 and leaves at ~230: margins included
VALIDATION = {"grid_d": range(0, 1 << 20), "pexels": range(0, 50)}
BANK_SIZE = 256  # side of the stored head crops
FACE_TYPES = (FaceType.FULL, FaceType.WHOLE_FACE, FaceType.HEAD)
TYPE_WEIGHTS = (0.4, 0.4, 0.2)


def split_of(clip: str, frame: int) -> str:
    """'test' (the hand frames), 'val' (held-out people and clip parts) or 'train'."""
    if clip == "pexels" and frame in PEXELS_HAND:
        return "test"
    return "val" if frame in VALIDATION.get(clip, ()) else "train"


@dataclass
class FaceBank:
    """Aligned head crops with their labels and landmarks (crop pixels), one row a face."""

    images: np.ndarray  # N×S×S×3 uint8 BGR
    labels: np.ndarray  # N×S×S uint8, the face label × 255
    landmarks: np.ndarray  # N×68×2 float32
    yaws: np.ndarray  # N float32, degrees
    clips: np.ndarray  # N str
    frames: np.ndarray  # N int32

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray | list[int]) -> FaceBank:
        return FaceBank(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def split(self, name: str) -> FaceBank:
        return self.subset([i for i, (c, f) in enumerate(zip(self.clips, self.frames,
                                                             strict=True))
                            if split_of(str(c), int(f)) == name])

    def save(self, path: Path) -> None:
        np.savez(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path) -> FaceBank:
        with np.load(path, allow_pickle=False) as z:
            return cls(**{f.name: z[f.name] for f in fields(cls)})


def _frames(path: Path, every: int) -> Iterator[tuple[int, np.ndarray]]:
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        from facelab.video.frames import read_image

        yield 0, read_image(path)
        return
    from facelab.video.frames import DecodeState, decode_video, to_array
    from facelab.video.probe import open_video

    with open_video(path) as container:
        for n, frame in enumerate(decode_video(container, DecodeState())):
            if n % every == 0:
                yield n, to_array(frame)


def extract_bank(data: Path, clips: dict[str, str] = CLIPS, every: int = 2,
                 size: int = BANK_SIZE, keep_test: bool = False,
                 log: Callable[[str], None] = print) -> FaceBank:
    """Every `every`-th frame of each clip through facelab's extractor (the largest face),
    as head crops with mesh labels. The test frames are skipped unless `keep_test`."""
    from facelab.faces.extractor import Extractor, ExtractorOptions

    ext = Extractor(ExtractorOptions(face_type=FaceType.HEAD, size=size, device="cpu"))
    rows: dict[str, list] = {f.name: [] for f in fields(FaceBank)}
    for name, rel in clips.items():
        found = 0
        for n, frame in _frames(data / rel, every):
            if not keep_test and split_of(name, n) == "test":
                continue
            faces = ext.run(frame)
            if not faces:
                continue
            face = max(faces, key=lambda f: np.ptp(f.landmarks.points68, axis=0).prod())
            meta = face.meta(f"{n:05d}.png", (frame.shape[1], frame.shape[0]))
            for key, value in (("images", face.image), ("landmarks", meta.landmarks),
                               ("labels", (face_label(meta) * 255).round()),
                               ("yaws", meta.yaw), ("clips", name), ("frames", n)):
                rows[key].append(value)
            found += 1
        log(f"{name}: {found} faces")
    return FaceBank(images=np.array(rows["images"], np.uint8),
                    labels=np.array(rows["labels"], np.uint8),
                    landmarks=np.array(rows["landmarks"], np.float32),
                    yaws=np.array(rows["yaws"], np.float32),
                    clips=np.array(rows["clips"], str), frames=np.array(rows["frames"], np.int32))


@dataclass(frozen=True)
class Recipe:
    """What a sample goes through; each switch is one ablation."""

    resolution: int = 128
    affine: bool = True  # rotation ±10°, scale ±15 %, shift ±5 % (train/warp.py)
    flip: bool = True
    colour: bool = True  # brightness, contrast, saturation, gamma, channel gains
    blur: bool = True  # defocus or motion blur, sensor noise
    jpeg: bool = True
    occluders: tuple[str, ...] = tuple(sorted(OCCLUDERS))
    occlusion_p: float = 0.8  # chance a sample gets occluders (one, sometimes two)


@dataclass
class Sample:
    image: np.ndarray  # R×R×3 uint8 BGR
    label: np.ndarray  # R×R float32: the face without its occluders
    face: np.ndarray  # R×R float32: the face region before occlusion
    occluder: np.ndarray  # R×R float32: occluder alpha
    landmarks: np.ndarray  # 68×2, crop pixels


def _degrade(img: np.ndarray, rng: np.random.Generator, r: Recipe) -> np.ndarray:
    out = img.astype(np.float32)
    if r.colour:
        grey = out.mean(2, keepdims=True)
        out = grey + (out - grey) * rng.uniform(0.6, 1.4)  # saturation
        out = (out - out.mean()) * rng.uniform(0.7, 1.3) + out.mean() * rng.uniform(0.7, 1.3)
        out *= rng.uniform(0.9, 1.1, 3)  # white balance
        out = 255 * (out.clip(0, 255) / 255) ** rng.uniform(0.75, 1.33)
    if r.blur and rng.random() < 0.3:
        if rng.random() < 0.5:
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.5))
        else:
            k = int(rng.integers(3, 8))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2] = 1 / k
            rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1)
            out = cv2.filter2D(out, -1, cv2.warpAffine(kernel, rot, (k, k)))
    if r.blur and rng.random() < 0.3:
        out += rng.normal(0, rng.uniform(1, 6), out.shape).astype(np.float32)
    out = out.round().clip(0, 255).astype(np.uint8)
    if r.jpeg and rng.random() < 0.5:
        quality = int(rng.integers(30, 95))
        buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def make_sample(bank: FaceBank, i: int, rng: np.random.Generator, r: Recipe) -> Sample:
    """Face i re-cut at a random face type and jitter, occluded, degraded."""
    res = r.resolution
    ftype = FACE_TYPES[rng.choice(len(FACE_TYPES), p=TYPE_WEIGHTS)]
    mat = face_transform(bank.landmarks[i], ftype, res, float(bank.yaws[i]))
    if r.affine or r.flip:
        aug = draw_augment(rng, warp=False, flip=r.flip)
        if not r.affine:
            aug = type(aug)(flip=aug.flip)
        jit = jitter_matrix(aug, res)  # after the cut: crop px → crop px
        mat = np.c_[jit[:, :2] @ mat[:, :2], jit[:, :2] @ mat[:, 2] + jit[:, 2]]
    src, src_mat = bank.images[i], mat
    if np.hypot(mat[0, 0], mat[0, 1]) < 0.6:  # shrinking: halve first, no aliasing
        src, src_mat = cv2.pyrDown(src), np.c_[mat[:, :2] * 2, mat[:, 2]]
    image = cv2.warpAffine(src, src_mat, (res, res), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    face = cv2.warpAffine(bank.labels[i].astype(np.float32) / 255, mat, (res, res),
                          flags=cv2.INTER_LINEAR)
    lm = transform_points(bank.landmarks[i], mat)
    label, occluder = face, np.zeros_like(face)
    if r.occluders and rng.random() < r.occlusion_p:
        occ = occlude(image, face, lm, rng, r.occluders, count=1 + int(rng.random() < 0.25))
        image, label, occluder = occ.image, occ.label, occ.occluder
    return Sample(_degrade(image, rng, r), label, face, occluder, lm)


def make_batch(bank: FaceBank, seed: int, step: int, batch: int, r: Recipe
               ) -> tuple[np.ndarray, np.ndarray]:
    """Batch `step` of a run: N×R×R×3 uint8 images and N×R×R float32 labels."""
    rng = np.random.default_rng([seed, step])
    idx = rng.integers(0, len(bank), batch)
    samples = [make_sample(bank, int(i), np.random.default_rng([seed, step, k]), r)
               for k, i in enumerate(idx)]
    return np.stack([s.image for s in samples]), np.stack([s.label for s in samples])


def validation_samples(bank: FaceBank, r: Recipe, per_face: int = 2, seed: int = 1234,
                       occluded: bool = True) -> list[Sample]:
    """A fixed validation set: `per_face` samples per face, every one occluded (or none)."""
    fixed = Recipe(**{**r.__dict__, "occlusion_p": 1.0 if occluded else 0.0})
    return [make_sample(bank, i, np.random.default_rng([seed, i, k]), fixed)
            for i in range(len(bank)) for k in range(per_face)]


def figures(pred: np.ndarray, samples: list[Sample]) -> dict[str, float]:
    """IoU of `pred` (N×R×R probabilities) with the labels (both at 0.5; mean per face and
    pooled), and the share of occluder pixels over the face that `pred` keeps as face."""
    p, y = pred > 0.5, np.stack([s.label for s in samples]) > 0.5
    inter = (p & y).sum((1, 2))
    union = (p | y).sum((1, 2))
    occ = np.stack([(s.occluder > 0.5) & (s.face > 0.5) for s in samples])
    n_occ = int(occ.sum())
    return {"iou_mean": float(np.mean(inter / np.maximum(union, 1))),
            "iou_pooled": float(inter.sum() / max(union.sum(), 1)),
            "occluder_in_mask": float((p & occ).sum() / n_occ) if n_occ else 0.0,
            "faces": len(samples)}


def baselines(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """The same figures for merge's masks that know nothing of occluders: the plain
    68-point hull (`dst`) and the mesh hull (`prd`'s region, the label before occlusion)."""
    res = samples[0].image.shape[0]
    hull = np.stack([hull68_mask(s.landmarks, res) for s in samples])
    return {"hull68": figures(hull, samples),
            "mesh_hull": figures(np.stack([s.face for s in samples]), samples)}
