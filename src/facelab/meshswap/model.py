"""The meshswap model: src's faces and meshes as tensors, retrieval, warp and refiner.

A save holds everything a swap needs, self-contained like a DeepFaceLab faceset: the src
crops at the model's resolution and face type (uint8), their meshes in crop pixels, their
descriptors and frame numbers, src's and dst's neutral meshes, and the refiner's weights.
They are buffers of one `nn.Module`, so the checkpoint code saves, verifies and backs them
up like any model; `model_counts` reads the shapes a save needs from its fixed options.

`swap` is the merge-time path (a dst crop and its mesh in, src's face out); `train_batch`
builds the refiner's self-supervised samples: src face i is the target, the warp of *other*
src faces (never i, nor its neighbours in time, which would be near copies) onto i's mesh
is the input, so the refiner learns to repair exactly what the warp gets wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from facelab.errors import FacelabError
from facelab.faces.facemeta import FaceMeta
from facelab.faces.facetype import FaceType
from facelab.meshswap import descriptors, geometry, retrieval, warp
from facelab.meshswap.options import MeshSwapOptions
from facelab.meshswap.refiner import Refiner, base, shading

#: src faces within this many frames of the target are never its candidates in training.
EXCLUDE_FRAMES = 12
#: Random misalignment of the training shading input (fraction of the side, scale ±):
#: at merge time it comes from dst's crop, whose shape is not the target's.
SHADING_JITTER = 0.03
#: Colour jitter of training candidates (per-channel gain ±): the refiner must take
#: colour from the shading input, not trust the candidates'.
COLOR_JITTER = 0.08
#: Light of a whole training sample (per-channel gain ±, target and candidates alike).
LIGHT_JITTER = 0.15
#: The pasted region: the target's hull shrunk by this fraction of the face's width.
MASK_ERODE = 0.06


@dataclass(frozen=True)
class Warped:
    """The warp-only result for a batch of target meshes."""

    faces: np.ndarray  # B×R×R×3 float32 [0, 1]
    masks: np.ndarray  # B×R×R float32: the target mesh's hull
    chosen: np.ndarray  # B×k candidate indices, nearest first
    weights: np.ndarray  # B×k blend weights


def model_counts(fixed: dict[str, Any]) -> tuple[int, int]:
    """(src faces, mesh points) of a save, from its fixed options."""
    try:
        return int(fixed["faces"]), int(fixed["points"])
    except (KeyError, TypeError, ValueError):
        raise FacelabError("The meshswap save does not say how many faces it holds: it is "
                           "damaged or from another program.") from None


def _clip_frame(name: str) -> tuple[str, int]:
    """A frame file name's clip prefix and number ("00042.png" → ("", 42))."""
    m = re.match(r"^(.*?)(\d+)$", name.rsplit(".", 1)[0])
    return (m.group(1), int(m.group(2))) if m else (name, -1)


class MeshSwapModel(nn.Module):
    """See the module docstring. Construct with the counts, then fill by `build` or load."""

    def __init__(self, opts: MeshSwapOptions, faces: int, points: int) -> None:
        super().__init__()
        self.opts = opts
        r, f = opts.resolution, len(descriptors.FEATURES)
        self.register_buffer("src_crops", torch.zeros(faces, r, r, 3, dtype=torch.uint8))
        self.register_buffer("src_meshes", torch.zeros(faces, points, 3))
        self.register_buffer("src_desc", torch.zeros(faces, f, dtype=torch.float64))
        self.register_buffer("src_clip", torch.zeros(faces, dtype=torch.int64))
        self.register_buffer("src_frame", torch.zeros(faces, dtype=torch.int64))
        self.register_buffer("src_neutral", torch.zeros(points, 3, dtype=torch.float64))
        self.register_buffer("dst_neutral", torch.zeros(points, 3, dtype=torch.float64))
        self.refiner: Refiner | None = Refiner(opts.refiner_dims) if opts.refiner else None
        self._index: retrieval.Index | None = None

    # ── shapes and caches ──

    @property
    def resolution(self) -> int:
        return self.opts.resolution

    @property
    def face_type(self) -> FaceType:
        return FaceType.parse(self.opts.face_type)

    @property
    def faces(self) -> int:
        return int(self.src_crops.shape[0])

    @property
    def points(self) -> int:
        return int(self.src_meshes.shape[1])

    def counts(self) -> dict[str, int]:
        """What `model_counts` reads back: store with the fixed options."""
        return {"faces": self.faces, "points": self.points}

    def index(self) -> retrieval.Index:
        if self._index is None or len(self._index) != self.faces:
            self._index = retrieval.Index(self.src_desc.cpu().numpy())
        return self._index

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:  # moved or loaded: re-index
        self._index = None
        return super()._apply(fn, recurse) if recurse else super()._apply(fn)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.src_crops.cpu().numpy(), self.src_meshes.cpu().double().numpy()

    # ── retrieval and warp ──

    def choose(self, query: np.ndarray, k: int,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k src faces nearest each query descriptor (B×F) and their blend weights
        (B×k). Weights are a kernel of the distance minus the kernel at the (k+1)-th
        nearest, so a candidate enters and leaves the blend at weight 0: the blend is a
        continuous function of the query, and a smooth dst motion gives a smooth result.
        `exclude` (B×K bool): faces not to take for each query."""
        d = self.index().distances(np.atleast_2d(query))
        if exclude is not None:
            d = np.where(exclude, np.inf, d)
        k = max(1, min(k, self.faces - 1))
        order = np.argsort(d, axis=1, kind="stable")[:, :k + 1]
        near = np.take_along_axis(d, order, 1)
        kern = np.exp(-(near**2) / (2 * retrieval.BLEND_SIGMA**2))
        w = np.clip(kern[:, :k] - kern[:, k:k + 1], 0, None)
        tie = w.sum(1) <= 1e-12  # all k as far as the next: the nearest alone
        w[tie] = 0
        w[tie, 0] = 1
        return order[:, :k], w / w.sum(1, keepdims=True)

    def warped(self, targets: np.ndarray, query: np.ndarray, k: int | None = None,
               exclude: np.ndarray | None = None,
               gains: np.ndarray | None = None) -> Warped:
        """src faces nearest `query` (B×F descriptors) warped onto `targets` (B×N×3 crop px)
        and blended; `gains` (B×k×3) scale each candidate's colour (training jitter)."""
        crops, meshes = self._arrays()
        chosen, weights = self.choose(query, k or self.opts.candidates, exclude)
        r = self.resolution
        out = np.empty((len(targets), r, r, 3), np.float32)
        masks = np.empty((len(targets), r, r), np.float32)
        for b, target in enumerate(np.asarray(targets, np.float64)):
            plan = warp.plan_warp(target, r)
            acc = np.zeros((r, r, 3), np.float32)
            for j, (c, w) in enumerate(zip(chosen[b], weights[b], strict=True)):
                if w <= 0:
                    continue
                img = warp.warp(crops[c], meshes[c], plan).astype(np.float32)
                if gains is not None:
                    img *= gains[b, j]
                acc += w * img
            out[b] = np.clip(acc / 255, 0, 1)
            masks[b] = _inner_mask(target, r)
        return Warped(out, masks, chosen, weights)

    def targets(self, meshes: np.ndarray) -> np.ndarray:
        """Where src's face goes for dst faces with these meshes (B×N×3 crop px): src's
        neutral shape carrying each dst face's pose and expression."""
        return geometry.target_mesh(self.src_neutral.cpu().numpy(), np.asarray(meshes, np.float64),
                                    self.dst_neutral.cpu().numpy())

    # ── the refiner ──

    def _device(self) -> torch.device:
        return self.src_meshes.device

    def refiner_input(self, warped: np.ndarray, masks: np.ndarray,
                      lit: torch.Tensor) -> torch.Tensor:
        """B×7×R×R: warp, shading of `lit` (B×3×R×R, the face being replaced), mask."""
        dev = self._device()
        w = torch.from_numpy(np.ascontiguousarray(warped.transpose(0, 3, 1, 2))).to(dev)
        m = torch.from_numpy(masks[:, None]).to(dev)
        return torch.cat([w, shading(lit.to(dev)), m], 1)

    def refine(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The refined faces (B×3×R×R) of a batch with an "input"; the warp itself when the
        model has no refiner."""
        x = batch["input"]
        return x[:, :3] if self.refiner is None else self.refiner(x)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """DSSIM + MSE (DeepFaceLab's, ×10 each) on the face region of the refined faces."""
        from facelab.train.losses import image_loss, soft_mask

        return image_loss(self.refine(batch), batch["target"], soft_mask(batch["mask"])).mean()

    def train_batch(self, rng: np.random.Generator, size: int) -> dict[str, torch.Tensor]:
        """The refiner's self-supervised samples (see the module docstring): "input",
        "target", "mask", "warp" tensors, and "index" (the target faces)."""
        crops, meshes = self._arrays()
        idx = rng.integers(0, self.faces, size)
        clip, frame = self.src_clip.cpu().numpy(), self.src_frame.cpu().numpy()
        near = (clip[idx, None] == clip[None]) & (np.abs(frame[idx, None] - frame[None])
                                                  <= EXCLUDE_FRAMES)
        near[np.arange(size), idx] = True  # never a face with itself
        if near.all(1).any():  # a faceset of one short clip: only the face itself excluded
            near = np.zeros_like(near)
            near[np.arange(size), idx] = True
        k = self.opts.candidates
        gains = rng.uniform(1 - COLOR_JITTER, 1 + COLOR_JITTER, (size, k, 3)).astype(np.float32)
        w = self.warped(meshes[idx], self.src_desc.cpu().numpy()[idx], k, near, gains)
        target = torch.from_numpy(crops[idx].transpose(0, 3, 1, 2).astype(np.float32) / 255)
        warped = torch.from_numpy(w.faces.transpose(0, 3, 1, 2).copy())
        masks = torch.from_numpy(w.masks[:, None])
        # the same light on target and warp (the refiner must keep the scene's), and mirror
        # images: a faceset of a few dozen faces is otherwise learnt by heart
        light = torch.from_numpy(rng.uniform(1 - LIGHT_JITTER, 1 + LIGHT_JITTER, (size, 3, 1, 1))
                                 .astype(np.float32))
        target, warped = (target * light).clamp(0, 1), (warped * light).clamp(0, 1)
        flip = torch.from_numpy(rng.random(size) < 0.5)
        target, warped, masks = (torch.where(flip[:, None, None, None], t.flip(-1), t)
                                 for t in (target, warped, masks))
        lit = _jitter(target, rng)
        dev = self._device()
        x = torch.cat([warped, shading(lit), masks], 1)
        return {"input": x.to(dev), "target": target.to(dev), "mask": masks.to(dev),
                "warp": warped.to(dev), "index": torch.from_numpy(idx)}

    # ── merge time ──

    @torch.no_grad()
    def swap(self, crops: np.ndarray, meshes: np.ndarray, yaw: np.ndarray,
             pitch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """dst crops (B×R×R×3 float32 BGR [0, 1]) with their meshes in crop pixels (B×N×3)
        and poses (degrees) → (src's faces B×R×R×3, their masks B×R×R)."""
        meshes = np.asarray(meshes, np.float64)[:, :self.points]
        targets = self.targets(meshes)
        query = descriptors.describe(targets, np.asarray(yaw, np.float64),
                                     np.asarray(pitch, np.float64))
        w = self.warped(targets, query)
        if self.refiner is None and not self.opts.shade:
            return w.faces, w.masks
        lit = torch.from_numpy(np.ascontiguousarray(np.asarray(crops, np.float32)
                                                    .transpose(0, 3, 1, 2)))
        x = self.refiner_input(w.faces, w.masks, lit)
        out = base(x).clamp(0, 1) if self.refiner is None else self.refiner(x)
        return out.float().permute(0, 2, 3, 1).cpu().numpy(), w.masks


def _inner_mask(target: np.ndarray, r: int) -> np.ndarray:
    """The face region to paste, in [0, 1]: the target mesh's hull shrunk by MASK_ERODE of
    the face's width and feathered, so the hair, ears and background that lie inside the
    src faces' silhouettes near its edge stay dst's."""
    import cv2

    hull = warp.face_mask(target, r)
    width = float(np.ptp(target[:, 0]))
    k = max(1, round(MASK_ERODE * width))
    inner = cv2.erode(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
    return cv2.GaussianBlur(inner.astype(np.float32) / 255, (0, 0), max(0.5, k / 2))


def _jitter(faces: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """faces shifted and scaled a little at random (the training shading's misalignment)."""
    import torch.nn.functional as F

    b = faces.shape[0]
    s = torch.from_numpy(rng.uniform(1 - SHADING_JITTER, 1 + SHADING_JITTER, b)).float()
    t = torch.from_numpy(rng.uniform(-SHADING_JITTER, SHADING_JITTER, (b, 2)) * 2).float()
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(faces.shape), align_corners=False)
    return F.grid_sample(faces, grid, padding_mode="border", align_corners=False)


def build(src: Any, dst_metas: Sequence[FaceMeta], opts: MeshSwapOptions) -> MeshSwapModel:
    """A new model from src's faceset (a `train.data.Faceset` at the model's resolution and
    face type) and dst's faces' metadata: crops, meshes in crop pixels, descriptors,
    neutral meshes. One FacelabError line when src cannot serve (too few faces, no blinks or
    open mouths, faces without a mesh)."""
    from facelab.train.warp import Augment

    names = [p.name for p in src.paths]
    raw = descriptors.meshes_of(src.metas, names)
    dst_raw = descriptors.meshes_of(dst_metas)
    if not len(dst_raw):
        raise FacelabError("The dst faceset holds no faces: run `facelab extract dst`.")
    points = min(raw.shape[1], dst_raw.shape[1])
    meshes = np.empty((len(raw), points, 3))
    for i, mesh in enumerate(raw[:, :points]):
        mat = src.face_to_crop(i)
        meshes[i, :, :2] = mesh[:, :2] @ mat[:, :2].T + mat[:, 2]
        meshes[i, :, 2] = mesh[:, 2] * np.sqrt(abs(np.linalg.det(mat[:, :2])))
    yaw = np.array([m.yaw for m in src.metas])
    pitch = np.array([m.pitch for m in src.metas])
    desc = descriptors.describe(meshes, yaw, pitch)
    retrieval.check_variety(desc, "src")
    model = MeshSwapModel(opts, len(meshes), points)
    crops = np.stack([
        np.clip(np.rint(src.render(i, Augment()).target.transpose(1, 2, 0) * 255), 0, 255)
        .astype(np.uint8) for i in range(len(meshes))])
    clips: dict[str, int] = {}
    ids = [_clip_frame(m.source_filename) for m in src.metas]
    model.src_crops.copy_(torch.from_numpy(crops))
    model.src_meshes.copy_(torch.from_numpy(meshes))
    model.src_desc.copy_(torch.from_numpy(desc))
    model.src_clip.copy_(torch.tensor([clips.setdefault(c, len(clips)) for c, _ in ids]))
    model.src_frame.copy_(torch.tensor([f for _, f in ids]))
    model.src_neutral.copy_(torch.from_numpy(geometry.neutral_mesh(meshes, desc)))
    dst_desc = descriptors.describe(dst_raw[:, :points], 0.0, 0.0)
    model.dst_neutral.copy_(torch.from_numpy(geometry.neutral_mesh(dst_raw[:, :points], dst_desc)))
    return model
