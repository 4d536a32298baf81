"""The segmenter's masks in a merge (mask modes seg-dst, seg-prd): which network, the dst
faces segmented as their frames are read and smoothed over their track, the preview's
single frames.

seg-dst runs the dst side's network on each dst face cut at the model's alignment (at the
network's own side: `segment/infer.py`); seg-prd runs src's on the predicted face (the
face drawn is src's person: a network fine-tuned on src fits it best). A work item's
frames are read in clip order with up to `infer.WINDOW` frames of context on each side
(the driver adds them: `Item.context`), each frame's faces segmented when it is read, so
a batch's masks can be averaged with the frames after it without holding more than a
window of frames: what a frame gets depends only on its neighbours, never on where its
segment starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facelab.faces.facetype import FaceType, face_transform
from facelab.merge.compose import Placed
from facelab.merge.jobs import FaceJob
from facelab.merge.options import MergeOptions
from facelab.segment import infer

if TYPE_CHECKING:
    from facelab.segment.network import SegNet
    from facelab.workspace import Workspace

SEG_SIDES = {"seg-dst": "dst", "seg-prd": "src"}  # whose segmenter each part runs


def segmenter_paths(ws: Workspace, options: list[MergeOptions]) -> dict[str, Path]:
    """The segmenters the options' mask modes use, by side: the person's own where `mask
    train` made one, else the shipped generic network; each loaded once here so a missing
    one is refused (one line) before any frame is merged."""
    from facelab.segment.shipped import SHIPPED, has_person, load, person_path

    sides = {SEG_SIDES[p] for o in options for p in o.seg_parts}
    paths = {s: person_path(ws, s) if has_person(ws, s) else SHIPPED  # type: ignore[arg-type]
             for s in sorted(sides)}
    for path in paths.values():
        load(path)
    return paths


def segmenter_ids(paths: dict[str, Path]) -> dict[str, str]:
    """Per side, the first 16 hex digits of its weights' SHA-256: what a merge records, so
    frames made with another network (a new `mask train`) are made again."""
    out = {}
    for side, path in paths.items():
        digest = hashlib.sha256(path.with_suffix(".safetensors").read_bytes()).hexdigest()
        out[side] = digest[:16]
    return out


def _track(face: FaceJob, index: int) -> int:
    """The key a face's masks are smoothed under: its track, or (none) its own index."""
    return face.track if face.track >= 0 else -1 - index


class FrameReader:
    """A work item's frames in clip order (with its context frames when seg-dst smooths),
    read once each; with `net` (seg-dst's), each dst face's raw mask by (position, track).

    `frames`: the item's (path, faces); `positions`: their places in the clip;
    `context`: (position, path, faces) of the frames around them; `read`: paths → their
    images in order; `res`, `face_type`: the model's crop."""

    def __init__(self, frames: list[tuple[Path, list[FaceJob]]], positions: list[int],
                 context: list[tuple[int, Path, list[FaceJob]]], options: list[MergeOptions],
                 read: Callable[[list[Path]], Iterator[np.ndarray]], net: SegNet | None,
                 res: int, face_type: FaceType) -> None:
        self.frames, self.positions, self.options = frames, positions, options
        self.net, self.res, self.face_type = net, res, face_type
        smooths = net is not None and any(o.smooth for o in options)
        self.window = infer.WINDOW if smooths else 0
        entries: list[tuple[int, Path, list[FaceJob], int | None]] = [
            (pos, path, faces, i) for i, (pos, (path, faces)) in
            enumerate(zip(positions, frames, strict=True))]
        if self.window:
            entries += [(pos, path, faces, None) for pos, path, faces in context]
        self.entries = sorted(entries, key=lambda e: e[0])
        self.images = read([e[1] for e in self.entries])
        self.read = 0
        self.kept: dict[int, np.ndarray] = {}
        self.raw: dict[tuple[int, int], np.ndarray] = {}

    def batch(self, start: int, count: int
              ) -> tuple[list[np.ndarray], list[list[np.ndarray]] | None]:
        """The images of item frames start … start + count - 1 and, with seg-dst, their
        faces' masks (smoothed where the frame's options smooth)."""
        pos = self.positions[start:start + count]
        self._read_to(max(pos) + self.window)
        images = [self.kept.pop(i) for i in range(start, start + count)]
        if self.net is None:
            return images, None
        seg: list[list[np.ndarray]] = []
        for p, (_, faces), opts in zip(pos, self.frames[start:start + count],
                                       self.options[start:start + count], strict=True):
            seg.append([infer.decided(infer.smoothed(
                self.raw, p, _track(f, j), self.window if opts.smooth and f.track >= 0 else 0))
                for j, f in enumerate(faces)])
        if start + count < len(self.positions):  # forget what no later window reaches
            first = self.positions[start + count] - self.window
            self.raw = {k: v for k, v in self.raw.items() if k[0] >= first}
        return images, seg

    def _read_to(self, last: int) -> None:
        """Read the entries up to clip position `last`; segment their dst faces (one batch)."""
        new: list[tuple[int, list[FaceJob], np.ndarray]] = []
        while self.read < len(self.entries) and self.entries[self.read][0] <= last:
            pos, _, faces, i = self.entries[self.read]
            image = next(self.images)
            self.read += 1
            if i is not None:
                self.kept[i] = image
            new.append((pos, faces, image))
        if self.net is not None:
            self.raw.update(raw_masks(self.net, new, self.res, self.face_type))


def raw_masks(net: SegNet, frames: list[tuple[int, list[FaceJob], np.ndarray]], res: int,
              face_type: FaceType) -> dict[tuple[int, int], np.ndarray]:
    """The dst faces of `frames` ((position, faces, image)) segmented in one batch, each
    cut where the model's crop (`res`, `face_type`) puts it; by (position, track)."""
    keys, crops = [], []
    for pos, faces, image in frames:
        for j, f in enumerate(faces):
            mat = face_transform(f.landmarks, face_type, res, f.yaw)
            crops.append(infer.cut(image, mat, res, net.resolution))
            keys.append((pos, _track(f, j)))
    return dict(zip(keys, infer.masks(net, crops), strict=True))


def frame_masks(net: SegNet, frames: list[tuple[int, list[FaceJob], np.ndarray]],
                position: int, smooth: bool, res: int, face_type: FaceType
                ) -> list[np.ndarray]:
    """seg-dst's masks of the faces of the frame at `position`, as a merge makes them:
    `frames` holds it and (smoothing) its neighbours within `infer.WINDOW`."""
    raw = raw_masks(net, frames, res, face_type)
    faces = next(f for p, f, _ in frames if p == position)
    return [infer.decided(infer.smoothed(raw, position, _track(f, j),
                                         infer.WINDOW if smooth and f.track >= 0 else 0))
            for j, f in enumerate(faces)]


def add_segments(placed: list[Placed], frame: np.ndarray, opts: MergeOptions,
                 nets: dict[str, SegNet]) -> None:
    """Fill in the seg-dst / seg-prd masks `opts` asks for where `placed` lacks them (the
    frame's own, unsmoothed: the preview's single frames), from `nets` by part."""
    for part in opts.seg_parts:
        attr = "seg_dst" if part == "seg-dst" else "seg_prd"
        todo = [p for p in placed if getattr(p, attr) is None]
        if not todo:
            continue
        net = nets[part]
        if part == "seg-dst":
            faces = [infer.cut(frame, p.frame_to_crop, p.predicted.shape[0], net.resolution)
                     for p in todo]
        else:
            faces = [infer.as_uint8(p.predicted) for p in todo]
        for p, mask in zip(todo, infer.masks(net, faces), strict=True):
            setattr(p, attr, infer.decided(mask))
