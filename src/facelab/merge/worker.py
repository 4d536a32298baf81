"""The merge's worker side: a chunk of dst frames in, each merged frame written (marked).

Each pool process (or the driver, with one worker) loads the model once (`init`), then
`work` reads a few consecutive frames, predicts all their faces as one batch, composes each
face into its frame (`merge/compose.py`), marks the frame (metadata and the invisible
watermark, no option omits them) and writes it under a temporary name renamed when
complete. The driver (`merge/merger.py`) only records and fsyncs what came back.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facelab.device import resolve_device
from facelab.faces.facetype import face_transform, transform_points
from facelab.fsutil import naming, temp_sibling
from facelab.merge.compose import Enhance, Mesher, Placed, merge_face
from facelab.merge.jobs import FaceJob
from facelab.merge.options import MergeOptions
from facelab.merge.predictor import Predictor, load_predictor
from facelab.merge.segmasks import SEG_SIDES, FrameReader
from facelab.merge.video_out import SegmentWriter, VideoSpec, segment_path
from facelab.provenance.credentials import Signing, sign_result_bytes
from facelab.provenance.mark import Mark
from facelab.provenance.png import encode_png
from facelab.provenance.watermark import mark_frame
from facelab.segment import infer
from facelab.video.frames import read_image
from facelab.video.source import FrameSource

if TYPE_CHECKING:
    from facelab.segment.network import SegNet

BATCH_FRAMES = 4  # frames whose faces are predicted as one batch
_W: dict[str, Any] = {}


@dataclass(frozen=True)
class Setup:
    model_dir: Path
    model_name: str
    device: str
    options: MergeOptions
    out_dir: Path  # merged/ (frames) or merged_video/ (segments)
    mask_dir: Path | None
    debug_dir: Path | None
    mark: Mark
    precision: str = "fp32"  # the prediction's, resolved (never "auto")
    source: FrameSource | None = None  # dst's frames (None: read each path as an image)
    video: VideoSpec | None = None  # set: each item is one segment of the result video
    #: the segmenters the mask mode uses, by side (dst: seg-dst, src: seg-prd), as
    #: `segment.shipped.load` paths (the driver picks the person's own or the generic one)
    segmenters: dict[str, Path] = field(default_factory=dict)
    #: the C2PA manifest each merged frame carries, embedded last (None: unsigned, only
    #: for callers that write no result)
    signing: Signing | None = None


@dataclass(frozen=True)
class Item:
    """One unit of work: consecutive frames with their faces; `segment` names the video
    segment they make (`--to-video`), None when each frame is written as a PNG."""

    frames: list[tuple[Path, list[FaceJob]]]
    segment: str | None = None
    #: each frame's options where frame ranges give some their own (`merge/ranges.py`);
    #: None: the setup's for all
    options: list[MergeOptions] | None = None
    #: the frames' positions in the clip (None: consecutive), and the frames around them
    #: (position, path, faces) whose seg-dst masks the frames' own are smoothed with
    positions: list[int] | None = None
    context: list[tuple[int, Path, list[FaceJob]]] = field(default_factory=list)


def init(setup: Setup, threads: int = 1) -> None:
    """Load the model (and the optional mesher / enhancer) once per process."""
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(threads)
    _W.clear()
    _W["setup"] = setup
    _W["predictor"] = load_predictor(setup.model_dir, setup.model_name, setup.device,
                                     setup.precision)
    _W["mesher"] = None
    _W["enhancers"] = {}
    _W["segmenters"] = {}
    _tools(setup.options)


def _tools(opts: MergeOptions) -> tuple[Mesher | None, Enhance | None]:
    """The mesher and enhancer `opts` need, each loaded once per process (a frame range may
    ask for ones the run's options do not)."""
    mesher = None
    if "prd" in opts.mask_parts:
        mesher = _W["mesher"] = _W["mesher"] or make_mesher()
    enhance = None
    if opts.super_resolution != "none":
        enhancers = _W["enhancers"]
        if opts.super_resolution not in enhancers:
            from facelab.merge.enhance import create_enhancer

            enhancers[opts.super_resolution] = create_enhancer(
                opts.super_resolution, _W["setup"].device).enhance
        enhance = enhancers[opts.super_resolution]
    return mesher, enhance


def segmenter(part: str) -> SegNet:
    """The network of mask part `part` (seg-dst or seg-prd), loaded once per process."""
    from facelab.segment.shipped import load

    side = SEG_SIDES[part]
    nets = _W["segmenters"]
    if side not in nets:
        net = load(_W["setup"].segmenters[side])[0]
        device = resolve_device(_W["setup"].device)
        if device.type != "cpu":  # a copy: the cached network stays where others use it
            net = copy.deepcopy(net).to(device)
        nets[side] = net
    return nets[side]


def make_mesher() -> Mesher:
    """The `prd` mask's source: FaceMesh on the predicted face, its outline (the
    segmenter's mask of it, which also cuts out occluders, is `seg-prd`). Returns crop
    points or None."""
    from facelab.faces.landmarks import MeshLandmarker

    mesh = MeshLandmarker()

    def points(face: np.ndarray) -> np.ndarray | None:
        r = face.shape[0]
        pts = mesh.mesh(face, (r * 0.2, r * 0.2, r * 0.8, r * 0.8))
        return None if pts is None else pts[:, :2]

    return points


def work(item: Item) -> list[tuple[int, list[Path]]]:
    """Merge a run of consecutive frames, a batch of `BATCH_FRAMES` at a time; per frame
    (faces merged, files written). With a segment, the frames are encoded into it and the
    segment's file is reported with the last frame.

    All of a batch's faces go through the model at once: on CPU a batch of 4 costs about
    17 % less per face than one at a time (docs/BENCHMARKS.md, Merge). With seg-dst the dst
    faces are segmented as they are read (the item's context frames too, a few frames
    ahead of the batch: `infer.WINDOW`), each batch's masks smoothed over their track."""
    setup: Setup = _W["setup"]
    writer = None
    if item.segment is not None:
        assert setup.video is not None
        writer = SegmentWriter(segment_path(setup.out_dir, item.segment), setup.video)
    results: list[tuple[int, list[Path]]] = []
    try:
        options = item.options or [setup.options] * len(item.frames)
        predictor: Predictor = _W["predictor"]
        dst_net = segmenter("seg-dst") if any("seg-dst" in o.seg_parts
                                              for o in options) else None
        frames = FrameReader(item.frames, item.positions or list(range(len(item.frames))),
                             item.context, options, lambda paths: _frames(setup, paths),
                             dst_net, predictor.resolution, predictor.info.face_type)
        prd_net = segmenter("seg-prd") if any("seg-prd" in o.seg_parts
                                              for o in options) else None
        for i in range(0, len(item.frames), BATCH_FRAMES):
            batch = item.frames[i:i + BATCH_FRAMES]
            images, seg_dst = frames.batch(i, len(batch))
            placed_all = _predict(batch, images, seg_dst, prd_net)
            for (path, _), placed, frame, opts in zip(batch, placed_all, images,
                                                      options[i:i + BATCH_FRAMES], strict=True):
                if writer is None:
                    results.append(_merge_frame(path.stem, frame, placed, setup, opts))
                    continue
                out, _alpha, tiles = _compose_frame(frame, placed, setup, opts)
                writer.add(mark_frame(out, setup.mark, index=_index(path.stem)))
                results.append((len(placed), _write_debug(path.stem, tiles, setup)))
        if writer is not None:
            faces, written = results[-1]
            results[-1] = (faces, [*written, writer.close()])
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    return results


def _index(stem: str) -> int | None:
    return int(stem) if stem.isdigit() else None


def _frames(setup: Setup, paths: list[Path]) -> Iterator[np.ndarray]:
    """The frames' pixels in order: from the dst source (a video decodes its run from a
    key frame), or each path read as an image."""
    if setup.source is None:
        return (read_image(p) for p in paths)
    return (image for _, image in setup.source.frames([p.name for p in paths]))


def _predict(batch: list[tuple[Path, list[FaceJob]]], images: list[np.ndarray],
             seg_dst: list[list[np.ndarray]] | None, prd_net: SegNet | None
             ) -> list[list[Placed]]:
    return predict_faces(_W["predictor"], batch, images, seg_dst, prd_net)


def predict_faces(predictor: Predictor, batch: list[tuple[Path, list[FaceJob]]],
                  images: list[np.ndarray], seg_dst: list[list[np.ndarray]] | None = None,
                  prd_net: SegNet | None = None) -> list[list[Placed]]:
    """Crop every face of the batch, predict them as one batch; per frame its placed
    faces, with `seg_dst` (per frame, per face) and, given `prd_net`, the segmenter's
    masks of the predicted faces (one batch). (The preview, `merge/preview.py`, predicts
    through this too.)"""
    res = predictor.resolution
    face_type = predictor.info.face_type
    mats, crops = [], []
    for (_, faces), frame in zip(batch, images, strict=True):
        mats.append([face_transform(f.landmarks, face_type, res, f.yaw) for f in faces])
        crops.extend(cv2.warpAffine(frame, m, (res, res), flags=cv2.INTER_CUBIC,
                                    borderMode=cv2.BORDER_REPLICATE) for m in mats[-1])
    predicted: np.ndarray | None = None
    learned: np.ndarray | None = None
    crops_f = np.empty((0, res, res, 3), np.float32)
    if crops:
        crops_f = np.stack(crops).astype(np.float32) / 255
        if predictor.info.needs_mesh:
            meshes, poses = _crop_meshes(batch, mats)
            predicted, learned = predictor.predict(crops_f, meshes, poses)
        else:
            predicted, learned = predictor.predict(crops_f)
    seg_prd = None
    if prd_net is not None and predicted is not None:
        seg_prd = infer.decided(infer.masks(prd_net, [infer.as_uint8(f) for f in predicted]))
    placed_all, k = [], 0
    for fi, ((_, faces), frame_mats) in enumerate(zip(batch, mats, strict=True)):
        placed = []
        for j, (f, m) in enumerate(zip(faces, frame_mats, strict=True)):
            assert predicted is not None
            placed.append(Placed(m, f.landmarks, predicted[k],
                                 None if learned is None else learned[k], crops_f[k],
                                 None if seg_dst is None else seg_dst[fi][j],
                                 None if seg_prd is None else seg_prd[k]))
            k += 1
        placed_all.append(placed)
    return placed_all


def _crop_meshes(chunk: list[tuple[Path, list[FaceJob]]],
                 mats: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's dst meshes in their crops' pixels (x, y through the crop transform,
    depth scaled alike) and their poses (yaw, pitch), in batch order."""
    meshes, poses = [], []
    for (_, faces), frame_mats in zip(chunk, mats, strict=True):
        for f, m in zip(faces, frame_mats, strict=True):
            assert f.mesh is not None  # the driver asked face_jobs for meshes
            scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
            meshes.append(np.c_[transform_points(f.mesh[:, :2], m), f.mesh[:, 2] * scale])
            poses.append((f.yaw, f.pitch))
    n = min(len(m) for m in meshes)  # FaceMesh without irises has 468 points, not 478
    return np.stack([m[:n] for m in meshes]).astype(np.float32), np.asarray(poses, np.float32)


def _merge_frame(stem: str, frame: np.ndarray, placed: list[Placed],
                 setup: Setup, opts: MergeOptions) -> tuple[int, list[Path]]:
    """Compose the frame's predicted faces and write it; (faces merged, files written)."""
    out, alpha, debug_tiles = _compose_frame(frame, placed, setup, opts)
    written = _write(stem, out, alpha, setup, opts, debug_tiles)
    return len(placed), written


def _compose_frame(frame: np.ndarray, placed: list[Placed], setup: Setup,
                   opts: MergeOptions | None = None
                   ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    opts = opts or setup.options
    return compose_frame(frame, placed, opts, *_tools(opts), setup.debug_dir is not None)


def compose_frame(frame: np.ndarray, placed: list[Placed], opts: MergeOptions,
                  mesher: Mesher | None, enhance: Enhance | None, debug: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The frame with its predicted faces composed in (a new array: `frame` is left as it
    is), its alpha (the faces' masks) and the debug tiles (when asked for)."""
    out = np.zeros_like(frame) if opts.mode == "raw" else frame.copy()
    alpha = np.zeros(frame.shape[:2], np.float32)
    debug_tiles = []
    for p in placed:
        roi, mask, (x0, y0, x1, y1) = merge_face(out if opts.mode != "raw" else frame, p, opts,
                                                 mesher, enhance)
        region = out[y0:y1, x0:x1]
        if opts.mode == "raw":
            keep = mask > 0
            region[keep] = roi[keep]
        else:
            region[...] = roi
        alpha[y0:y1, x0:x1] = np.maximum(alpha[y0:y1, x0:x1], mask)
        if debug:
            debug_tiles.append(_debug_tile(p, out, mask, (x0, y0, x1, y1)))
    return out, alpha, debug_tiles


def _debug_tile(p: Placed, out: np.ndarray, mask: np.ndarray,
                box: tuple[int, int, int, int]) -> np.ndarray:
    """dst | prediction | mask | result, each at the model's resolution."""
    res = p.predicted.shape[0]
    x0, y0, x1, y1 = box
    full = np.zeros(out.shape[:2], np.float32)
    full[y0:y1, x0:x1] = mask
    crop = lambda img, flags=cv2.INTER_LINEAR: cv2.warpAffine(  # noqa: E731
        img, p.frame_to_crop, (res, res), flags=flags)
    tiles = [
        (p.dst_crop * 255).round().astype(np.uint8),
        (p.predicted * 255).round().astype(np.uint8),
        cv2.cvtColor((crop(full) * 255).round().astype(np.uint8), cv2.COLOR_GRAY2BGR),
        crop(out),
    ]
    return np.hstack(tiles)


def marked_image(stem: str, out: np.ndarray, alpha: np.ndarray, mark: Mark,
                 opts: MergeOptions, mask: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The pixels of merged frame `stem` as its PNG holds them (BGR, or BGRA with
    --export-alpha and --mode raw), and its 8-bit alpha when that or `mask` wants it."""
    # the invisible watermark (its sign follows the frame number): no option leaves it out
    out = mark_frame(out, mark, index=_index(stem))
    rgba = opts.export_alpha or opts.mode == "raw"
    a8 = _alpha8(alpha) if rgba or mask else None
    return (cv2.merge([out, a8]) if a8 is not None and rgba else out), a8


def _write(stem: str, out: np.ndarray, alpha: np.ndarray, setup: Setup,
           opts: MergeOptions, debug_tiles: list[np.ndarray]) -> list[Path]:
    image, a8 = marked_image(stem, out, alpha, setup.mark, opts, setup.mask_dir is not None)
    written = []
    path = setup.out_dir / f"{stem}.png"
    data = encode_png(image, setup.mark)
    if setup.signing is not None:  # last, over the mark and the watermark
        data = sign_result_bytes(data, path.name, setup.signing)
    _put(path, data)
    written.append(path)
    if setup.mask_dir is not None:
        mpath = setup.mask_dir / f"{stem}.png"
        _put(mpath, encode_png(a8))
        written.append(mpath)
    if setup.debug_dir is not None and debug_tiles:
        dpath = setup.debug_dir / f"{stem}.jpg"
        _, jpg = cv2.imencode(".jpg", np.vstack(debug_tiles), [cv2.IMWRITE_JPEG_QUALITY, 90])
        _put(dpath, jpg.tobytes())
        written.append(dpath)
    return written


def _put(path: Path, data: bytes) -> None:
    """Write under a temporary name and rename: never a half-written file under `path`.

    Unlike fsutil.atomic_path the worker does not fsync: that waited 10–17 ms on the disk
    per frame here, a worker's whole colour transfer and blend. The driver fsyncs each file
    once it is recorded (`_sync`), off the workers' path, and a resume redoes a merged
    frame whose PNG does not end in IEND (what a power cut between rename and write-back
    leaves)."""
    tmp = temp_sibling(path)
    try:
        with naming(path):
            tmp.write_bytes(data)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _alpha8(alpha: np.ndarray) -> np.ndarray:
    """The faces' masks as 8-bit alpha (only made when written: ~1 ms a 360p frame)."""
    return (alpha * 255).round().astype(np.uint8)


def _write_debug(stem: str, tiles: list[np.ndarray], setup: Setup) -> list[Path]:
    """The frame's debug image (dst | prediction | mask | result per face), when asked for."""
    if setup.debug_dir is None or not tiles:
        return []
    path = setup.debug_dir / f"{stem}.jpg"
    _, jpg = cv2.imencode(".jpg", np.vstack(tiles), [cv2.IMWRITE_JPEG_QUALITY, 90])
    _put(path, jpg.tobytes())
    return [path]
