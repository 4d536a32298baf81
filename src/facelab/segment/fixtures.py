"""The hand-labelled held-out faces: real occluders the segmenter never saw, as polygons.

The Pexels clip may not be stored in the repository, so a fixture file
(`tests/fixtures/segment/pexels_hand.json`) holds only frame numbers and polygons in
aligned-face pixels: `include` (the face to the hairline, as `labels.face_label` defines
it) and `occluders` (the hand). `extract` re-runs facelab's extractor on those frames of
../shared/data at the file's face type and size, and rasterises the labels, so a test, the
training script and `bench/segment.py` score the same faces. `score` gives the network's
figures beside the two masks that know nothing of occluders: the mesh hull (the label
before occlusion, what a swap masks today) and the plain 68-point hull (merge's `dst`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import FacelabError
from facelab.segment.draw import fill
from facelab.segment.labels import face_label, hull68_mask

#: the committed fixture file (the repository's tests/, not installed with the package)
PEXELS_HAND_FILE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "segment" \
    / "pexels_hand.json"


@dataclass
class FixtureFace:
    """One labelled face: the aligned image and its masks (float32 in [0, 1], size²)."""

    frame: int
    hand: bool  # False: a control face with nothing in front of it
    image: np.ndarray  # size×size×3 uint8 BGR
    include: np.ndarray  # the face region, occluders ignored
    occluder: np.ndarray  # the hand
    mesh_hull: np.ndarray  # labels.face_label of the extracted face (the baseline)
    hull68: np.ndarray  # the plain 68-point hull (the other baseline)

    @property
    def label(self) -> np.ndarray:
        """What the segmenter should output: the face without its occluders."""
        return self.include * (1 - self.occluder)


def _polygons(value: Any, where: str) -> list[np.ndarray]:
    try:
        polys = [np.asarray(p, np.float64) for p in value]
    except (TypeError, ValueError):
        polys = []
    if not isinstance(value, list) or any(p.ndim != 2 or p.shape[1] != 2 or len(p) < 3
                                          for p in polys):
        raise FacelabError(f"{where}: polygons must be lists of at least 3 [x, y] points.")
    return polys


def load(path: Path = PEXELS_HAND_FILE) -> dict[str, Any]:
    """The fixture file, checked: clip, face_type, size and faces with their polygons."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FacelabError(f"The fixture file {path} is unreadable ({e!r}).") from None
    missing = [k for k in ("clip", "face_type", "size", "faces")
               if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise FacelabError(f"The fixture file {path} lacks {', '.join(missing)}.")
    for face in doc["faces"]:
        for key in ("include", "occluders"):
            face[key] = _polygons(face.get(key), f"{path.name} frame {face.get('frame')}")
    return doc


def rasterise(polys: list[np.ndarray], size: int) -> np.ndarray:
    """Anti-aliased union of the polygons as a float32 size² mask."""
    return fill(size, polys) if polys else np.zeros((size, size), np.float32)


def extract(data: Path, path: Path = PEXELS_HAND_FILE) -> list[FixtureFace]:
    """Every fixture face re-extracted from `data` (../shared/data) with its masks."""
    from facelab.faces.extractor import Extractor, ExtractorOptions
    from facelab.segment.data import _frames

    doc = load(path)
    size = int(doc["size"])
    wanted = {int(f["frame"]): f for f in doc["faces"]}
    ext = Extractor(ExtractorOptions(face_type=doc["face_type"], size=size, device="cpu"))
    out: list[FixtureFace] = []
    for n, frame in _frames(data / doc["clip"], 1):
        if n > max(wanted):
            break
        if n not in wanted:
            continue
        faces = ext.run(frame)
        if not faces:
            raise FacelabError(f"No face found in frame {n} of {doc['clip']}.")
        face = max(faces, key=lambda f: np.ptp(f.landmarks.points68, axis=0).prod())
        meta = face.meta(f"{n:05d}.png", (frame.shape[1], frame.shape[0]))
        spec = wanted[n]
        out.append(FixtureFace(n, bool(spec.get("hand", spec["occluders"])), face.image,
                               rasterise(spec["include"], size),
                               rasterise(spec["occluders"], size),
                               face_label(meta), hull68_mask(meta.landmarks, size)))
    return out


def figures(pred: np.ndarray, faces: list[FixtureFace]) -> dict[str, float]:
    """IoU of masks `pred` (N×S×S, cut at 0.5) with the labels (mean per face and pooled)
    and the share of occluder pixels over the face region that `pred` keeps as face."""
    p = np.asarray(pred) > 0.5
    y = np.stack([f.label for f in faces]) > 0.5
    occ = np.stack([(f.occluder > 0.5) & (f.include > 0.5) for f in faces])
    inter, union = (p & y).sum((1, 2)), (p | y).sum((1, 2))
    n_occ = int(occ.sum())
    return {"iou_mean": round(float(np.mean(inter / np.maximum(union, 1))), 4),
            "iou_min": round(float(np.min(inter / np.maximum(union, 1))), 4),
            "iou_pooled": round(float(inter.sum() / max(union.sum(), 1)), 4),
            "occluder_in_mask": round(float((p & occ).sum() / n_occ), 4) if n_occ else 0.0,
            "faces": len(faces)}


def score(pred: np.ndarray, faces: list[FixtureFace]) -> dict[str, dict[str, dict[str, float]]]:
    """The network's figures and the two hulls', on the hand faces, the controls and all."""
    masks = {"segmenter": np.asarray(pred),
             "mesh_hull": np.stack([f.mesh_hull for f in faces]),
             "hull68": np.stack([f.hull68 for f in faces])}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for part, keep in (("hand", (True,)), ("control", (False,)), ("all", (True, False))):
        idx = [i for i, f in enumerate(faces) if f.hand in keep]
        if idx:
            out[part] = {name: figures(m[idx], [faces[i] for i in idx])
                         for name, m in masks.items()}
    return out
