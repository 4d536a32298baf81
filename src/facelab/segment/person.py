"""A side's own segmenter (DeepFaceLab XSeg's workflow, lighter): fine-tune the generic
network on the faces whose mask polygons were drawn in the studio, write every face's mask
into its metadata, and say which faces the network is least sure of, to label next.

The labelled faces are those of `aligned/` and `aligned_confirmed/` carrying polygons (a
skipped face, W, never trains); their labels are what the polygons paint
(`faceset.polygons.polygon_mask`). Fine-tuning starts from the side's own network when one
exists (a second `mask train` continues) or from the generic one shipped in the package,
with light augmentation (flip, small rotation/scale/shift, colour), for a CPU-time or step
budget; with 5 or more labelled faces a share is held out and the card records the IoU on
them before and after. The network and its card are written atomically to
`<workspace>/segmenter/<side>.*` (segment/shipped.py reads them), never half-written.

A face's mask (`FaceMeta.mask`: the network's probability × 255, at most MASK_SIDE² pixels)
is written through the faces' own metadata writer, under the side's faces lock, so sort,
trash, skip/confirm and undo carry it with the face; `MASK_BY` in the metadata names the
network that made it, so an interrupted `mask apply` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab import locks
from facelab.errors import FacelabError
from facelab.faces.faceimage import read_face, read_meta, update_meta
from facelab.faces.noface import empty_faceset_message
from facelab.faceset.folder import list_faces
from facelab.faceset.labels import ALIGNED, CONFIRMED, FOLDERS, labelled_faces, noted, writing
from facelab.faceset.polygons import polygon_mask
from facelab.fsutil import atomic_path, timestamp
from facelab.progress import NULL, Reporter
from facelab.segment import infer, shipped
from facelab.segment.fit import Batch, run
from facelab.segment.network import SegNet, save_segmenter
from facelab.segment.options import MaskTrainOptions
from facelab.train.warp import draw_augment, jitter_matrix
from facelab.workspace import Side, Workspace

MASK_SIDE = 256  # stored masks: at most this side (the face's own when smaller)
MASK_BY = "mask_by"  # metadata key: the id of the network that wrote the mask
UNSURE = (0.2, 0.8)  # a probability in between is a pixel the network is unsure of
MIN_VALIDATION = 5  # labelled faces needed before some are held out
MIN_LABEL = 0.001  # a label painting less than this share of the face is refused
CHUNK = 32  # faces read and predicted at a time


@dataclass
class TrainResult:
    """What `train` did: the faces, the budget spent, IoU before and after."""

    path: Path
    base: str  # "generic" or "person"
    faces: list[str]
    held_out: list[str]
    steps: int
    cpu_seconds: float
    before: float  # mean IoU with the polygons, held-out faces (else the training ones)
    after: float
    measured_on: str  # "held-out" or "training"
    worst: list[tuple[Path, float]] = field(default_factory=list)


def _check_side(side: str) -> Side:
    if side not in ("src", "dst"):
        raise FacelabError(f"Unknown side '{side}': use src or dst.")
    return side  # type: ignore[return-value]


def network_id(path: Path) -> str:
    """A short digest of a network's weights file: which network wrote a mask."""
    h = hashlib.sha256(path.with_suffix(".safetensors").read_bytes())
    return h.hexdigest()[:16]


def side_network(ws: Workspace, side: Side) -> tuple[SegNet, dict[str, Any], str, str]:
    """The side's network, its card, where it came from ("person"/"generic") and its id."""
    net, card, source = shipped.load_for(ws, side)
    path = shipped.person_path(ws, side) if source == "person" else shipped.SHIPPED
    return net, card, source, network_id(path)


def _name(p: Path) -> str:
    return f"{p.parent.name}/{p.name}"


def check_labels(paths: list[Path]) -> None:
    """Refuse, in one line, a face whose polygons paint (almost) nothing inside it."""
    for p in paths:
        meta = read_meta(p)
        if polygon_mask(meta.mask_polys, meta.size).mean() < MIN_LABEL:
            raise FacelabError(f"{_name(p)}: its mask polygons paint nothing inside the face "
                               "(they lie outside it, or an exclude covers them): redraw "
                               "them in the studio's mask editor.")


def load_labels(paths: list[Path], resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The faces (N×R×R×3 uint8) and what their polygons paint (N×R×R float32) at the
    network's resolution."""
    images, labels = [], []
    for p in paths:
        image, meta = read_face(p)
        label = polygon_mask(meta.mask_polys, meta.size)
        images.append(cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_AREA))
        labels.append(cv2.resize(label, (resolution, resolution), interpolation=cv2.INTER_AREA))
    return np.stack(images), np.stack(labels)


def _colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and white balance, mildly: the same person under
    the shot's other lights."""
    out = img.astype(np.float32)
    grey = out.mean(2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.75, 1.25)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
    out *= rng.uniform(0.93, 1.07, 3)
    return out.round().clip(0, 255).astype(np.uint8)


def batches(images: np.ndarray, labels: np.ndarray, size: int, seed: int
            ) -> Callable[[int], Batch]:
    """`batch(step)`: `size` faces drawn with flip, small affine and colour jitter; step
    i depends only on (seed, i)."""
    res = images.shape[1]

    def batch(step: int) -> Batch:
        rng = np.random.default_rng([seed, step])
        xs, ys = [], []
        for i in rng.integers(0, len(images), size):
            mat = jitter_matrix(draw_augment(rng, warp=False, flip=True), res)
            xs.append(_colour(cv2.warpAffine(images[i], mat, (res, res), flags=cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REPLICATE), rng))
            ys.append(cv2.warpAffine(labels[i], mat, (res, res), flags=cv2.INTER_LINEAR))
        return np.stack(xs), np.stack(ys).astype(np.float32)

    return batch


def probabilities(net: SegNet, faces: list[np.ndarray]) -> list[np.ndarray]:
    """Each face's mask probability at the network's resolution (faces of any sizes)."""
    return list(infer.masks(net, faces))


def iou(prob: np.ndarray, label: np.ndarray) -> float:
    """IoU of a mask probability with a label, both cut at 0.5."""
    p, y = prob > 0.5, label > 0.5
    return float((p & y).sum() / max((p | y).sum(), 1))


def mean_iou(net: SegNet, images: np.ndarray, labels: np.ndarray) -> float:
    probs = [q for i in range(0, len(images), CHUNK)
             for q in probabilities(net, list(images[i:i + CHUNK]))]
    return float(np.mean([iou(p, y) for p, y in zip(probs, labels, strict=True)]))


def confidence(prob: np.ndarray) -> float:
    """1 − the unsure pixels (UNSURE) as a share of the mask's area: a face whose mask
    edge is a wide blur, or which is patchy, scores low; a crisp mask near 1."""
    unsure = int(((prob > UNSURE[0]) & (prob < UNSURE[1])).sum())
    return float(max(0.0, 1.0 - unsure / max(int((prob >= 0.5).sum()), 1)))


def split(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, held-out) indices: a seeded `share` held out once there are enough."""
    if n < MIN_VALIDATION or share <= 0:
        return list(range(n)), []
    k = max(1, round(n * share))
    order = np.random.default_rng([seed, 7]).permutation(n)
    return sorted(int(i) for i in order[k:]), sorted(int(i) for i in order[:k])


def train(ws: Workspace, side: str, options: MaskTrainOptions | None = None,
          reporter: Reporter = NULL) -> TrainResult:
    """Fine-tune the side's segmenter on its labelled faces and save it (see the module)."""
    side = _check_side(side)
    o = options or MaskTrainOptions()
    paths = labelled_faces(ws, side, (ALIGNED, CONFIRMED))
    if not paths:
        raise FacelabError(f"No face of data_{side} has mask polygons to train on: draw some "
                           "in the studio's mask editor (`facelab studio`, Masks) on faces in "
                           "aligned/ or aligned_confirmed/.")
    check_labels(paths)
    out = shipped.person_path(ws, side)
    with locks.stage(ws.root, f"segmenter-{side}", f"the {side} segmenter", reporter):
        base = "person" if shipped.has_person(ws, side) and not o.restart else "generic"
        net, base_card = shipped.load(out if base == "person" else shipped.SHIPPED)
        net = _copy(net)
        reporter.status(f"Reading {len(paths)} labelled faces...")
        images, labels = load_labels(paths, net.resolution)
        fit_idx, val_idx = split(len(paths), o.validation, o.seed)
        measure = val_idx or fit_idx
        before = mean_iou(net, images[measure], labels[measure])
        report = run(net, batches(images[fit_idx], labels[fit_idx], o.batch_size, o.seed),
                     minutes=o.minutes, steps=o.steps, lr=o.lr, report_s=5.0,
                     log=lambda line: reporter.status(f"Fine-tuning: {line}", log=True))
        reporter.status("")
        after = mean_iou(net, images[measure], labels[measure])
        result = TrainResult(out, base, [_name(paths[i]) for i in fit_idx],
                             [_name(paths[i]) for i in val_idx], report.steps,
                             round(report.cpu_seconds, 1), round(before, 4), round(after, 4),
                             "held-out" if val_idx else "training")
        previous = base_card.get("fine_tuning", {}) if base == "person" else {}
        card = {"kind": "person", "side": side, "created": timestamp(),
                "base": base, "generic": base_card.get("generic") if base == "person"
                else _summary(base_card),
                "fine_tuning": {
                    "faces": result.faces, "held_out": result.held_out,
                    "steps": report.steps, "cpu_seconds": result.cpu_seconds,
                    "total_steps": report.steps + int(previous.get("total_steps", 0)),
                    "batch_size": o.batch_size, "lr": o.lr,
                    "augmentation": "flip, rotation ±10°, scale ±15 %, shift ±5 %, colour",
                    "iou_before": result.before, "iou_after": result.after,
                    "measured_on": result.measured_on}}
        out.parent.mkdir(parents=True, exist_ok=True)
        save_segmenter(net.eval(), out, card)  # weights, then card: each atomic
    if o.worst:
        result.worst = worst_faces(ws, side, o.worst, reporter)
    return result


def _copy(net: SegNet) -> SegNet:
    """A private copy to train (the loaded one is cached and shared)."""
    clone = SegNet(net.resolution, net.widths)
    clone.load_state_dict(net.state_dict())
    return clone


def _summary(card: dict[str, Any]) -> dict[str, Any]:
    keys = ("what", "format", "dtype", "architecture", "command", "quality")
    return {k: card[k] for k in keys if k in card}


def _faces(ws: Workspace, side: Side, folders: tuple[str, ...] = FOLDERS) -> list[Path]:
    data = ws.frames_dir(side)
    paths = [p for f in folders for p in list_faces(data / f)]
    if not paths:
        raise FacelabError(empty_faceset_message(ws.aligned_dir(side)))
    return paths


def _chunks(paths: list[Path]) -> Iterator[list[tuple[Path, np.ndarray, Any]]]:
    """The faces, CHUNK at a time, read (a face gone meanwhile is passed over)."""
    for i in range(0, len(paths), CHUNK):
        read = []
        for p in paths[i:i + CHUNK]:
            try:
                image, meta = read_face(p)
            except FileNotFoundError:
                continue
            read.append((p, image, meta))
        yield read


def stored_mask(prob: np.ndarray, size: int) -> np.ndarray:
    """A probability map as the uint8 mask stored in a face's metadata."""
    side = min(size, MASK_SIDE)
    if prob.shape != (side, side):
        prob = cv2.resize(prob, (side, side), interpolation=cv2.INTER_LINEAR)
    return np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)


def _made_by(meta: Any, net_id: str) -> bool:
    """Whether the face's stored mask was written by the network `net_id`."""
    return meta.mask is not None and meta.extra.get(MASK_BY) == net_id


@dataclass
class ApplyResult:
    written: int
    up_to_date: int
    source: str  # "person" or "generic"


def apply(ws: Workspace, side: str, reporter: Reporter = NULL, redo: bool = False
          ) -> ApplyResult:
    """Write every face's mask (aligned, confirmed and skipped) from the side's network.
    Faces whose mask this network already wrote are left (resume) unless `redo`."""
    side = _check_side(side)
    net, _, source, net_id = side_network(ws, side)
    written = kept = 0
    with _faces_lock(ws, side, reporter):
        paths = _faces(ws, side)  # listed under the lock: no sort renames them meanwhile
        with reporter.task(f"Masks of data_{side}", len(paths)) as task:
            for chunk in _chunks(paths):
                todo = [c for c in chunk if redo or not _made_by(c[2], net_id)]
                kept += len(chunk) - len(todo)
                probs = probabilities(net, [img for _, img, _ in todo])
                for (p, _, meta), prob in zip(todo, probs, strict=True):
                    meta.mask = stored_mask(prob, meta.size)
                    meta.extra[MASK_BY] = net_id
                    _write(p, meta)
                    written += 1
                task.advance(len(chunk))
    return ApplyResult(written, kept, source)


def _faces_lock(ws: Workspace, side: Side, reporter: Reporter) -> Any:
    """The side's faces lock, the one extraction, sort, trash and the mask editor hold."""
    return locks.stage(ws.root, f"faces-{side}", f"data_{side}/aligned (the {side} faceset)",
                       reporter)


def _write(path: Path, meta: Any) -> None:
    with writing(path):
        update_meta(path, meta)
        noted(path, meta)


def remove(ws: Workspace, side: str, reporter: Reporter = NULL) -> int:
    """Clear every face's mask (polygons untouched); how many faces had one."""
    side = _check_side(side)
    cleared = 0
    with _faces_lock(ws, side, reporter):
        paths = _faces(ws, side)
        with reporter.task(f"Clearing masks of data_{side}", len(paths)) as task:
            for p in paths:
                meta = read_meta(p)
                if meta.mask is not None or MASK_BY in meta.extra:
                    meta.mask = None
                    meta.extra.pop(MASK_BY, None)
                    _write(p, meta)
                    cleared += 1
                task.advance()
    return cleared


def worst_faces(ws: Workspace, side: str, n: int = 10, reporter: Reporter = NULL
                ) -> list[tuple[Path, float]]:
    """The `n` unlabelled faces of `aligned/` whose masks the side's network is least sure
    of (lowest `confidence` first), from their stored masks when this network wrote them,
    else predicted. Also writes `<workspace>/segmenter/<side>_worst.jpg`: the first CHUNK
    of them with their masks, to look at before labelling."""
    side = _check_side(side)
    paths = _faces(ws, side, (ALIGNED,))
    net, _, _, net_id = side_network(ws, side)
    scored: list[tuple[float, Path]] = []
    with reporter.task(f"Mask confidence of data_{side}/aligned", len(paths)) as task:
        for chunk in _chunks(paths):
            chunk = [c for c in chunk if not c[2].mask_polys]  # labelled: known already
            for (p, _, _), prob in zip(chunk, _masks(net, net_id, chunk), strict=True):
                scored.append((confidence(prob), p))
            task.advance(len(chunk))
    worst = sorted(scored, key=lambda s: (s[0], s[1].name))[:n]
    if worst:
        shown = next(_chunks([p for _, p in worst]))
        tiles = [(_thumb(img), _thumb(prob)) for (_, img, _), prob
                 in zip(shown, _masks(net, net_id, shown), strict=True)]
        _write_sheet(ws.root / shipped.FOLDER / f"{side}_worst.jpg", tiles)
    return [(p, round(c, 4)) for c, p in worst]


def _masks(net: SegNet, net_id: str, faces: list[tuple[Path, np.ndarray, Any]]
           ) -> list[np.ndarray]:
    """The faces' mask probabilities: stored when this network wrote them, else predicted."""
    fresh = [k for k, (_, _, m) in enumerate(faces) if not _made_by(m, net_id)]
    out = {k: prob for k, prob in zip(fresh, probabilities(net, [faces[k][1] for k in fresh]),
                                      strict=True)}
    return [out[k] if k in out else faces[k][2].mask.astype(np.float32) / 255
            for k in range(len(faces))]


THUMB = 128


def _thumb(a: np.ndarray) -> np.ndarray:
    return cv2.resize(a, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def _write_sheet(path: Path, items: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Each face with its mask tinted over it (outside dimmed, unsure band in red)."""
    tiles = []
    for face, prob in items:
        f = face.astype(np.float32)
        p = prob[..., None]
        tile = f * (0.35 + 0.65 * p)
        unsure = ((prob > UNSURE[0]) & (prob < UNSURE[1]))[..., None]
        tile = np.where(unsure, 0.5 * tile + 0.5 * np.array([0, 0, 255], np.float32), tile)
        tiles.append(tile.clip(0, 255).astype(np.uint8))
    cols = min(len(tiles), 5)
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((rows * THUMB, cols * THUMB, 3), np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * THUMB:(r + 1) * THUMB, c * THUMB:(c + 1) * THUMB] = t
    with atomic_path(path) as tmp:
        tmp.write_bytes(cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, 90])[1])
