"""Training samples: faces re-cut at the model's face type, augmented, batched by workers.

Images stay BGR end to end (as OpenCV reads them and as the merger writes them), as float32
CHW in [0, 1]; masks are 1×H×W. Each stored face is re-cropped through its landmarks
(`face_transform(meta.landmarks, model_type, res, meta.yaw)`), so one faceset serves models
of any face type and resolution, in one resampling from the stored pixels. A face carrying
a segmenter mask (`facelab mask apply`) is trained masked: its occluded pixels leave the
sample's mask, so the losses ignore them (warp.render).

`make_loader` serves src and dst together (one batch dict per step), because yaw-sorted
src feeding needs dst's yaws and a trainer always steps both sides at once. Every sample has
its own generator, drawn from (seed, batch, side, place in the global batch), so a rank of a
data-parallel run (`shard`) builds its slice of global batch i without the other samples.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from facelab.errors import FacelabError
from facelab.faces.faceimage import FaceMeta, read_meta
from facelab.faces.facetype import FaceType, face_transform, transform_points
from facelab.faceset.folder import list_faces
from facelab.train.warp import Augment, draw_augment, render, rng_for
from facelab.train.workers import quiet_worker, starting_workers

SRC_SCALE_LIMIT = 0.3  # the user's src face scale option, −30…30 %


@dataclass(frozen=True)
class SampleOptions:
    """How samples are augmented and fed. `src_scale` and `yaw_sorted` act on src only."""

    random_warp: bool = True
    random_flip: bool = True
    src_scale: float = 0.0  # fraction: shifts src's ±15 % random scale range
    yaw_sorted: bool = False  # feed src so its yaw histogram follows dst's
    mask_blur: bool = False  # blur the hull mask (radius res/32) instead of a hard edge
    eyes_mouth: bool = False  # also serve the eyes-and-mouth mask (`src_em`, `dst_em`)
    yaw_bins: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not -SRC_SCALE_LIMIT <= self.src_scale <= SRC_SCALE_LIMIT:
            raise FacelabError(f"The src face scale {self.src_scale:+.0%} is out of range: "
                               "choose between -30% and +30%.")


class Sample(NamedTuple):
    """One face: the unwarped target, the (warped) network input, the landmark-hull mask."""

    target: np.ndarray  # 3×H×W float32 BGR
    input: np.ndarray  # 3×H×W float32 BGR
    mask: np.ndarray  # 1×H×W float32; 2×H×W with the eyes-and-mouth mask as channel 1


class Faceset:
    """The aligned faces of one folder, served at a model's resolution and face type."""

    def __init__(self, folder: Path | str, resolution: int, face_type: FaceType | str) -> None:
        self.folder = Path(folder)
        self.resolution = int(resolution)
        self.face_type = FaceType.parse(str(face_type))
        self.paths = list_faces(self.folder)
        if not self.paths:  # "run extract", or, when it ran, that no frame held a face
            from facelab.faces.noface import empty_faceset_message

            raise FacelabError(empty_faceset_message(self.folder))
        self.metas: list[FaceMeta] = [read_meta(p) for p in self.paths]  # headers only: fast
        # segmenter masks (`facelab mask apply`) kept PNG-compressed: a few KB a face, not a
        # decoded array each, however large the faceset (and cheap to pass to workers)
        self.occlusions: dict[int, bytes] = {}
        for i, m in enumerate(self.metas):
            if m.mask is not None:
                self.occlusions[i] = cv2.imencode(".png", m.mask)[1].tobytes()
                m.mask = None
        self.yaws = np.array([m.yaw for m in self.metas], np.float64)
        self._mats: dict[int, np.ndarray] = {}  # face_to_crop, filled as faces are used

    @property
    def name(self) -> str:
        """`data_src/aligned`-style name for messages."""
        return f"{self.folder.parent.name}/{self.folder.name}"

    def __len__(self) -> int:
        return len(self.paths)

    def face_to_crop(self, i: int) -> np.ndarray:
        """2×3 affine from stored-face pixels to the model's crop (no augmentation)."""
        m = self.metas[i]
        return face_transform(m.landmarks, self.face_type, self.resolution, m.yaw)

    def crop_landmarks(self, i: int) -> np.ndarray:
        """Face i's 68 landmarks in the model's crop pixels."""
        return transform_points(self.metas[i].landmarks, self.face_to_crop(i))

    def occlusion(self, i: int, size: tuple[int, int]) -> np.ndarray | None:
        """Face i's segmenter mask (uint8) resized to `size` (w, h), None without one."""
        png = self.occlusions.get(i)
        if png is None:
            return None
        occ = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
        return occ if occ.shape[::-1] == size else cv2.resize(occ, size,
                                                              interpolation=cv2.INTER_LINEAR)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, face_to_crop, landmarks), the image pre-shrunk with area averaging so the
        crop's single cubic resampling does not alias when the model is smaller."""
        mat, lm = self._mats.get(i), np.asarray(self.metas[i].landmarks, np.float64)
        if mat is None:
            mat = self._mats[i] = self.face_to_crop(i)
        factor = float(np.sqrt(abs(np.linalg.det(mat[:, :2]))))  # crop px per stored px
        # JPEG can decode at 1/2 or 1/4 size in the DCT: cheaper than decoding and shrinking
        flag = (cv2.IMREAD_REDUCED_COLOR_4 if factor <= 0.25 else
                cv2.IMREAD_REDUCED_COLOR_2 if factor <= 0.5 else cv2.IMREAD_COLOR)
        image = cv2.imdecode(np.fromfile(self.paths[i], np.uint8), flag)
        if image is None:
            raise FacelabError(f"{self.paths[i].name} in {self.name} is not a readable JPEG.")
        h, w = image.shape[:2]
        if w != self.metas[i].size:  # decoded smaller: express the crop in its pixels
            mat, lm, factor = self._rescaled(mat, lm, w / self.metas[i].size, factor)
        if factor < 0.7:
            nw, nh = max(8, round(w * factor)), max(8, round(h * factor))
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
            mat, lm, factor = self._rescaled(mat, lm, nw / w, factor)
        return image, mat, lm

    @staticmethod
    def _rescaled(mat: np.ndarray, lm: np.ndarray, f: float,
                  factor: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Crop transform and landmarks for the image resized by f (pixel centres kept)."""
        back = np.array([[1 / f, 0, 0.5 / f - 0.5], [0, 1 / f, 0.5 / f - 0.5], [0, 0, 1]])
        return (np.vstack([mat, [0, 0, 1]]) @ back)[:2], (lm + 0.5) * f - 0.5, factor / f

    def render_u8(self, i: int, aug: Augment, mask_blur: bool = False,
                  eyes_mouth: bool = False) -> Sample:
        """Face i under a given augmentation, as uint8 CHW (what workers pass along); a
        face with a segmenter mask has its occluded pixels out of the mask (warp.render)."""
        image, mat, lm = self._load(i)
        occlusion = self.occlusion(i, (image.shape[1], image.shape[0]))
        if occlusion is None and self.occlusions:  # one batch layout for the whole set
            occlusion = np.full(image.shape[:2], 255, np.uint8)
        target, warped, mask = render(image, mat, lm, self.resolution, aug, mask_blur,
                                      eyes_mouth, occlusion)
        chw = lambda a: np.ascontiguousarray(a.transpose(2, 0, 1))  # noqa: E731
        return Sample(chw(target), chw(warped), chw(mask) if mask.ndim == 3 else mask[None])

    def render(self, i: int, aug: Augment, mask_blur: bool = False,
               eyes_mouth: bool = False) -> Sample:
        """Face i under a given augmentation, float32 in [0, 1] (for tests and previews)."""
        u8 = self.render_u8(i, aug, mask_blur, eyes_mouth)
        return Sample(*(a.astype(np.float32) / 255 for a in u8))

    def sample(self, i: int, rng: np.random.Generator, options: SampleOptions,
               scale_shift: float = 0.0, as_uint8: bool = False) -> Sample:
        """Face i under a fresh random augmentation drawn from `rng`."""
        aug = draw_augment(rng, warp=options.random_warp, flip=options.random_flip,
                           scale_shift=scale_shift)
        return (self.render_u8 if as_uint8 else self.render)(i, aug, options.mask_blur,
                                                              options.eyes_mouth)


class YawMatcher:
    """Draws src faces so that their yaw histogram follows dst's (DFL's yaw-sorted src).

    Yaws are binned over both sets' range; a bin is drawn with dst's frequency and a face
    uniformly inside it; a dst bin with no src face gives its weight to the nearest src bin.
    """

    def __init__(self, src_yaws: np.ndarray, dst_yaws: np.ndarray, bins: int = 16) -> None:
        src_yaws, dst_yaws = np.asarray(src_yaws, float), np.asarray(dst_yaws, float)
        lo = min(src_yaws.min(), dst_yaws.min())
        hi = max(src_yaws.max(), dst_yaws.max())
        edges = np.linspace(lo, hi + 1e-6, bins + 1)
        src_bin = np.clip(np.digitize(src_yaws, edges) - 1, 0, bins - 1)
        dst_bin = np.clip(np.digitize(dst_yaws, edges) - 1, 0, bins - 1)
        self.members = [np.flatnonzero(src_bin == b) for b in range(bins)]
        full = np.array([b for b in range(bins) if len(self.members[b])])
        probs = np.zeros(bins)
        for b, count in enumerate(np.bincount(dst_bin, minlength=bins)):
            probs[full[np.argmin(np.abs(full - b))]] += count
        self.probs = probs / probs.sum()

    def draw(self, rng: np.random.Generator) -> int:
        b = rng.choice(len(self.probs), p=self.probs)
        return int(self.members[b][rng.integers(len(self.members[b]))])


class _Epochs:
    """Face indices as a function of position only: position j of the endless stream is
    face perm_e[j mod n] with e = j // n and perm_e drawn from (seed, side, e). Every face
    comes once per epoch, as DFL does, and batch i is the same whichever worker builds it
    and whenever the run started: a resumed run sees exactly the batches of a straight one.
    """

    def __init__(self, n: int, seed: int, side: int) -> None:
        self.n, self.seed, self.side = n, seed, side
        self.perms: dict[int, np.ndarray] = {}

    def take(self, start: int, k: int) -> list[int]:
        out = []
        for j in range(start, start + k):
            e = j // self.n
            perm = self.perms.get(e)
            if perm is None:
                self.perms = {e: rng_for(self.seed, 2, self.side, e).permutation(self.n)}
                perm = self.perms[e]
            out.append(int(perm[j % self.n]))
        return out


class PairStream(IterableDataset):
    """Endless batches: rank r of `shard` (r, N) serves places r·b … r·b+b−1 of the global
    batches of N·b samples, each sample drawn from its own generator."""

    def __init__(self, src: Faceset, dst: Faceset | None, batch_size: int,
                 options: SampleOptions, start: int = 0, shard: tuple[int, int] = (0, 1)
                 ) -> None:
        super().__init__()
        self.src, self.dst, self.batch_size, self.options = src, dst, batch_size, options
        self.start, self.shard = start, shard

    def _side(self, faces: Faceset, idx: list[int], rngs: list[np.random.Generator],
              scale: float, side: str) -> tuple[list[np.ndarray], list[str]]:
        samples = [faces.sample(i, rng, self.options, scale, as_uint8=True)
                   for i, rng in zip(idx, rngs, strict=True)]
        inputs, targets, masks = (np.stack([s[k] for s in samples]) for k in (1, 0, 2))
        arrays = [inputs, targets, np.ascontiguousarray(masks[:, :1])]
        names = [side, f"{side}_target", f"{side}_mask"]
        if self.options.eyes_mouth:
            arrays.append(np.ascontiguousarray(masks[:, 1:2]))
            names.append(f"{side}_em")
        if faces.occlusions:  # the segmenter's pixels to keep (warp.render's last channel)
            arrays.append(np.ascontiguousarray(masks[:, -1:]))
            names.append(f"{side}_keep")
        return arrays, names

    def _pack(self, arrays: list[np.ndarray], names: list[str]) -> dict[str, torch.Tensor]:
        """uint8 views of one storage: a worker hands over one small shared-memory block per
        batch, not six float ones (each costs a descriptor and a mapping in the trainer)."""
        flat = torch.empty(sum(a.size for a in arrays), dtype=torch.uint8)
        out, pos = {}, 0
        for name, a in zip(names, arrays, strict=True):
            view = flat[pos:pos + a.size].view(a.shape)
            view.copy_(torch.from_numpy(a))
            out[name], pos = view, pos + a.size
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        o, n = self.options, self.batch_size
        rank, ranks = self.shard
        places = range(rank * n, rank * n + n)  # this rank's places in the global batch
        src_order = _Epochs(len(self.src), o.seed, 0)
        dst_order = _Epochs(len(self.dst), o.seed, 1) if self.dst else None
        yaw = (YawMatcher(self.src.yaws, self.dst.yaws, o.yaw_bins)
               if o.yaw_sorted and self.dst else None)
        # DataLoader takes batches from its workers in turn, so worker w builds batches
        # start + w, start + w + W, …: the stream's order is the batch index's order
        for i in itertools.count(self.start + worker, workers):
            first = i * n * ranks + rank * n  # this slice's place in the endless stream
            rngs = [rng_for(o.seed, 1, i, 0, j) for j in places]
            idx = ([yaw.draw(rng) for rng in rngs] if yaw else src_order.take(first, n))
            arrays, names = self._side(self.src, idx, rngs, o.src_scale, "src")
            if self.dst and dst_order:
                more, more_names = self._side(self.dst, dst_order.take(first, n),
                                              [rng_for(o.seed, 1, i, 1, j) for j in places],
                                              0.0, "dst")
                arrays, names = arrays + more, names + more_names
            yield self._pack(arrays, names)


def _worker_init(_: int) -> None:
    """One thread per worker: the workers are the parallelism, oversubscription only hurts.
    Signals are the trainer's (train/workers.py)."""
    quiet_worker()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def make_loader(src: Faceset, dst: Faceset | None, batch_size: int, options: SampleOptions,
                workers: int = 2, start: int = 0, shard: tuple[int, int] = (0, 1)
                ) -> Iterator[dict[str, torch.Tensor]]:
    """An endless iterator of batches: dict(src, src_target, src_mask[, dst, dst_target,
    dst_mask]) (plus src_em/dst_em with `eyes_mouth`, src_keep/dst_keep for a faceset with
    segmenter masks), float32 BGR CHW in [0, 1], from
    batch number `start` on. Batch i depends only on the seed and i, not on the worker
    count or where the run started (so a resumed run is exact). `shard` (rank, ranks): this
    rank's `batch_size` samples of global batch i (ranks · batch_size samples), the same
    samples one rank with that global batch would draw there.

    Workers build whole batches (no per-sample collation) and prefetch a few each, so a
    training step rarely waits; workers=0 builds them in the caller's process.
    """
    total = batch_size * shard[1]
    for faces in (src, dst):
        if faces is not None and total > len(faces):
            ranks = f" ({shard[1]} ranks × {batch_size})" if shard[1] > 1 else ""
            raise FacelabError(f"Batch size {total}{ranks} is larger than the {len(faces)} "
                               f"faces in {faces.name}: lower the batch size or extract more "
                               "faces.")
    if batch_size < 1:
        raise FacelabError(f"Batch size {batch_size} is too small: use 1 or more.")
    loader = DataLoader(
        PairStream(src, dst, batch_size, options, start, shard), batch_size=None,
        num_workers=workers,
        pin_memory=False, persistent_workers=workers > 0, worker_init_fn=_worker_init,
        prefetch_factor=4 if workers > 0 else None,
        # spawn, not fork: a forked child inherits OpenCV's and the runtimes' thread pools
        # mid-state and can hang on its first cv2 call (seen in the full test run)
        multiprocessing_context=mp.get_context("spawn") if workers > 0 else None,
    )
    with starting_workers():  # persistent workers start here
        return _as_float(iter(loader))


def _as_float(batches: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    """uint8 → float32 in [0, 1], in the trainer's process (a fraction of a millisecond)."""
    for batch in batches:
        yield {k: v.float().div_(255) for k, v in batch.items()}
