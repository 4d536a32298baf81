"""One dst frame merged again as an option changes: the library under the studio's merger.

DeepFaceLab's interactive merger shows one frame at a time and re-merges it on every key.
`Previewer` opens the workspace and loads the model once, then `render(frame, options)`
returns the frame exactly as `facelab merge` makes it (marked; the pixels its PNG holds),
through the merge's own code: the face jobs of `merge/jobs.py` smoothed over the whole clip,
`worker.predict_faces` and `worker.compose_frame`, the mark of `worker.marked_image`.

What an option change does not touch is kept: the decoded frames, the face jobs per
smoothing strength and the model's prediction per face. Only `smooth` changes the crops the
model sees; every other option (mode, mask, erode, blur, colour, scale, degrade, enhancer)
re-composes from the kept prediction, a few tens of ms a 360p frame here. The prediction is
made for the frames the merge predicts together (4 consecutive frames of its work item,
`worker.BATCH_FRAMES`): a batch of a different size can differ by a float rounding, so the
preview predicts the merge's own batch, and scrubbing to a neighbour costs no prediction.

Bit for bit equal to a whole-clip merge with the same options, model and precision whose
workers run as many threads as `threads` (the default: all cores, a one-process merge's and
the default of a short clip): another thread count can round the model's output in its last
float bit, which moves a pixel by one grey level at most, rarely. A merge of part of the
clip (`--frames`) smooths over those frames only, so with smoothing on it can differ from
the preview, which shows what a whole-clip merge makes. The segmenter's masks (seg-dst,
seg-prd) are made for the frame shown (seg-dst's with its neighbours', as the merge smooths
them), in another batch than the merge's: within a float rounding of its masks.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from facelab.device import choose_precision, resolve_device
from facelab.errors import FacelabError
from facelab.executor import default_workers
from facelab.merge.compose import Enhance, Mesher, Placed
from facelab.merge.jobs import FaceJob, dst_faces, dst_fps, dst_frames, face_jobs
from facelab.merge.merger import _check_face_type, _check_meshes
from facelab.merge.options import MergeOptions
from facelab.merge.predictor import load_predictor, model_info
from facelab.merge.segmasks import SEG_SIDES, add_segments, frame_masks, segmenter_paths
from facelab.merge.stream import segment_length
from facelab.merge.worker import (
    BATCH_FRAMES,
    compose_frame,
    make_mesher,
    marked_image,
    predict_faces,
)
from facelab.provenance.mark import Mark
from facelab.train.checkpoint import list_models
from facelab.video.source import MIN_CHUNK, FolderFrames, VideoSource, frame_number, open_frames
from facelab.workspace import Workspace

FRAMES_KEPT = 32  # decoded dst frames (a 360p frame: 0.4 MB)
BATCHES_KEPT = 8  # predicted batches (4 frames' faces each; SAE 256: ~10 MB a batch)
SMOOTHS_KEPT = 3  # face job sets (one per smoothing strength)


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or(self, key: Any, make: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        while len(self) > self.size:
            self.popitem(last=False)
        return value


class Previewer:
    """A workspace's dst frames merged one at a time with any options (thread-safe: one
    render at a time). `model_name` None: the workspace's only model. `to_video` (None:
    merge's default, the video when dst was kept in it) picks which merge's prediction
    batches to follow."""

    def __init__(self, ws: Workspace, model_name: str | None = None, device: str = "auto",
                 precision: str = "auto", to_video: bool | None = None,
                 threads: int | None = None) -> None:
        ws.require()
        self.ws = ws
        self.model_name = model_name or _only_model(ws)
        self.info = model_info(ws.model_dir, self.model_name)
        self.source = open_frames(ws, "dst")
        frames = dst_frames(ws)
        if not frames:
            raise FacelabError(f"{ws.frames_dir('dst')} holds no frames: run `facelab video "
                               "extract dst` first.")
        self._paths = frames
        self._by_frame = dst_faces(ws)
        _check_face_type(ws, self.info, self._by_frame)
        if self.info.needs_mesh:
            _check_meshes(ws, self.info, self._by_frame, frames)
        self.names = [p.name for p in frames]
        self._index = {n: i for i, n in enumerate(self.names)}
        self._numbers = {frame_number(n): n for n in self.names}
        self.fps = dst_fps(ws)
        self.device = device
        self.precision = choose_precision(precision, resolve_device(device))[0]
        self.threads = threads or default_workers()
        self.mark = Mark.synthetic(self.info.model_id)
        if to_video is None:
            to_video = isinstance(self.source, VideoSource)
        self._batch_of = _batches(self.source, self.names, to_video, self.fps)
        self.predictor = load_predictor(ws.model_dir, self.model_name, device,
                                        self.precision)
        self._lock = threading.Lock()
        self._frames = _Lru(FRAMES_KEPT)
        self._jobs = _Lru(SMOOTHS_KEPT)
        self._placed = _Lru(BATCHES_KEPT)
        self._mesher: Mesher | None = None
        self._enhancers: dict[str, Enhance] = {}

    def __enter__(self) -> Previewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.source.close()

    def name_of(self, frame: str | int) -> str:
        """The frame's name (`00042.png`) from its number or name; FacelabError if absent."""
        name = self._numbers.get(frame) if isinstance(frame, int) else (
            frame if frame in self._index else self._numbers.get(frame_number(frame)))
        if name is None:
            raise FacelabError(f"dst has no frame {frame!r} (its frames are "
                               f"{self.names[0]} to {self.names[-1]}).")
        return name

    def frame(self, frame: str | int) -> np.ndarray:
        """The dst frame as decoded (BGR; kept, never modify it)."""
        with self._lock:
            return self._frame(self.name_of(frame))

    def render(self, frame: str | int, opts: MergeOptions) -> np.ndarray:
        """Frame `frame` (number or name) merged with `opts`, marked: the pixels merge's
        PNG holds (BGR; BGRA with export_alpha or mode raw)."""
        opts.validate()
        if opts.mode == "auto":  # as merge does: the model family's blend
            opts = dataclasses.replace(opts, mode=self.info.blend)
        with self._lock:
            name = self.name_of(frame)
            placed = self._placed_faces(name, opts.smooth)
            if opts.seg_parts:
                self._add_segments(name, placed, opts)
            out, alpha, _ = compose_frame(self._frame(name), placed, opts, *self._tools(opts))
            return marked_image(Path(name).stem, out, alpha, self.mark, opts)[0]

    # ── what the option changes leave alone ─────────────────────────────────────────

    def _frame(self, name: str) -> np.ndarray:
        return self._frames.get_or(name, lambda: self.source.read(name))

    def _face_jobs(self, smooth: int) -> dict[str, list[FaceJob]]:
        return self._jobs.get_or(smooth, lambda: face_jobs(
            self._paths, self._by_frame, smooth, self.fps, meshes=self.info.needs_mesh))

    def _placed_faces(self, name: str, smooth: int) -> list[Placed]:
        batch = self._batch_of[name]
        placed = self._placed.get_or((batch, smooth), lambda: self._predict(batch, smooth))
        return placed[batch.index(name)]

    def _predict(self, batch: tuple[str, ...], smooth: int) -> list[list[Placed]]:
        """The batch's faces through the model as the merge's worker predicts them."""
        import torch

        missing = [n for n in batch if n not in self._frames]
        for n, image in self.source.frames(missing):  # one decode pass for a video
            self._frames.get_or(n, lambda image=image: image)
        images = [self._frame(n) for n in batch]
        jobs = self._face_jobs(smooth)
        folder = self.ws.frames_dir("dst")
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return predict_faces(self.predictor, [(folder / n, jobs.get(n, [])) for n in batch],
                                 images)
        finally:
            torch.set_num_threads(before)

    def _add_segments(self, name: str, placed: list[Placed], opts: MergeOptions) -> None:
        """The segmenter's masks `opts` asks for, as the merge makes them (seg-dst's
        smoothed with the neighbouring frames'), kept with the prediction."""
        from facelab.segment.infer import WINDOW
        from facelab.segment.shipped import load

        paths = segmenter_paths(self.ws, [opts])
        nets = {part: load(paths[SEG_SIDES[part]])[0] for part in opts.seg_parts}
        if "seg-dst" in nets and any(p.seg_dst is None for p in placed):
            pos, w = self._index[name], WINDOW if opts.smooth else 0
            near = self.names[max(0, pos - w):pos + w + 1]
            missing = [n for n in near if n not in self._frames]
            for n, image in self.source.frames(missing):
                self._frames.get_or(n, lambda image=image: image)
            jobs = self._face_jobs(opts.smooth)
            frames = [(self._index[n], jobs.get(n, []), self._frame(n)) for n in near]
            masks = frame_masks(nets["seg-dst"], frames, pos, bool(opts.smooth),
                                self.predictor.resolution, self.info.face_type)
            for p, mask in zip(placed, masks, strict=True):
                p.seg_dst = mask
        add_segments(placed, self._frame(name), opts, nets)  # seg-prd

    def _tools(self, opts: MergeOptions) -> tuple[Mesher | None, Enhance | None]:
        """The `prd` mask's mesher and the enhancer `opts` ask for, loaded once."""
        mesher = None
        if "prd" in opts.mask_parts:
            mesher = self._mesher = self._mesher or make_mesher()
        enhance = None
        if opts.super_resolution != "none":
            if opts.super_resolution not in self._enhancers:
                from facelab.merge.enhance import create_enhancer

                self._enhancers[opts.super_resolution] = create_enhancer(
                    opts.super_resolution, self.device).enhance
            enhance = self._enhancers[opts.super_resolution]
        return mesher, enhance


def _only_model(ws: Workspace) -> str:
    names = list_models(ws.model_dir) if ws.model_dir.is_dir() else []
    if len(names) != 1:
        which = f"one of {', '.join(names)}" if names else "none is trained yet"
        raise FacelabError(f"Name the model to preview ({which}).")
    return names[0]


def _batches(source: FolderFrames | VideoSource, names: list[str], to_video: bool,
             fps: float) -> dict[str, tuple[str, ...]]:
    """Each frame's prediction batch in a whole-clip merge from scratch: the merger's work
    items (segments of the video, or runs of the frames: `merger._merge`), cut in
    `BATCH_FRAMES` from each item's start as `worker.work` does."""
    if to_video:
        runs = source.chunks(names, segment_length(len(names), fps))
    else:
        runs = source.chunks(names, BATCH_FRAMES if isinstance(source, FolderFrames)
                             else MIN_CHUNK)
    out: dict[str, tuple[str, ...]] = {}
    for run in runs:
        for i in range(0, len(run), BATCH_FRAMES):
            batch = tuple(run[i:i + BATCH_FRAMES])
            out.update(dict.fromkeys(batch, batch))
    return out
