"""`facelab merge`: every dst frame, its faces swapped, written to data_dst/merged/.

Frames without a face are written unchanged, so the merged count always matches the
source. Every PNG written carries the provenance mark (no option omits it). Work is spread
over a process pool (each worker loads the model once, one thread each); frames are
streamed in chunks of a few whose faces are predicted as one batch, a few chunks in flight
per worker. A family whose `ModelInfo.needs_mesh` (meshswap) also gets each dst face's
FaceMesh mesh, in its crop's pixels, and pose; for the others no per-face work is added.

A rerun skips the frames already made with the same model and options and makes the others
again, whatever the last run was killed in (`merge/resume.py` records each frame's
settings); one merge at a time per workspace (the `merge` lock), and the temporary files
of a killed one are removed at the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab import locks
from facelab.device import choose_precision, resolve_device
from facelab.errors import FacelabError
from facelab.executor import create_executor, default_workers
from facelab.faces.faceimage import FaceMeta
from facelab.faces.facetype import FaceType, face_transform, transform_points
from facelab.fsutil import clean_stale_parts, naming, temp_sibling
from facelab.merge.compose import Placed, merge_face
from facelab.merge.jobs import FaceJob, dst_faces, dst_fps, dst_frames, face_jobs, without_mesh
from facelab.merge.options import MergeOptions
from facelab.merge.predictor import ModelInfo, Predictor, load_predictor, model_info
from facelab.merge.resume import SAVE_EVERY_S, MergeRecord, frame_done
from facelab.progress import Reporter
from facelab.provenance.mark import Mark
from facelab.provenance.png import png_bytes_with_mark
from facelab.provenance.watermark import mark_frame
from facelab.video.frames import read_image
from facelab.workspace import Workspace

BATCH_FRAMES = 4  # frames per pool item, their faces predicted as one batch
DEBUG_DIR = "merged_debug"  # in data_dst/: dst | prediction | mask | result per face


@dataclass
class MergeReport:
    frames: int = 0
    merged_now: int = 0
    skipped: int = 0
    faces: int = 0
    frames_without_face: int = 0
    model_id: str = ""
    out_dir: Path | None = None
    written: list[Path] = field(default_factory=list)


def parse_frames(spec: str | None, count: int) -> range | None:
    """`10-20` (frame numbers as in the file names, inclusive), `10-` or `15`; None: all."""
    if spec is None:
        return None
    lo, sep, hi = spec.partition("-")
    try:
        a = int(lo) if lo else 1
        b = int(hi) if hi else (count if sep else a)
    except ValueError:
        raise FacelabError(f"--frames must look like 10-20, 10- or 15, not {spec!r}.") from None
    if a < 0 or b < a:
        raise FacelabError(f"--frames {spec!r} is an empty range.")
    return range(a, b + 1)


def _frame_number(path: Path) -> int | None:
    return int(path.stem) if path.stem.isdigit() else None


# ── the worker side ─────────────────────────────────────────────────────────────────────

_W: dict[str, Any] = {}


@dataclass(frozen=True)
class _Setup:
    model_dir: Path
    model_name: str
    device: str
    options: MergeOptions
    out_dir: Path
    mask_dir: Path | None
    debug_dir: Path | None
    mark: Mark
    precision: str = "fp32"  # the prediction's, resolved (never "auto")


def _init(setup: _Setup, threads: int = 1) -> None:
    """Load the model (and the optional mesher / enhancer) once per process."""
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(threads)
    _W.clear()
    _W["setup"] = setup
    _W["predictor"] = load_predictor(setup.model_dir, setup.model_name, setup.device,
                                     setup.precision)
    _W["mesher"] = None
    if "prd" in setup.options.mask_parts:
        _W["mesher"] = _mesher()
    _W["enhance"] = None
    if setup.options.super_resolution != "none":
        from facelab.merge.enhance import create_enhancer

        _W["enhance"] = create_enhancer(setup.options.super_resolution, setup.device).enhance


def _mesher() -> Any:
    """The `prd` mask's source: FaceMesh on the predicted face (no packaged face parser
    exists; see docs/MERGE.md). Returns crop points or None."""
    from facelab.faces.landmarks import MeshLandmarker

    mesh = MeshLandmarker()

    def points(face: np.ndarray) -> np.ndarray | None:
        r = face.shape[0]
        pts = mesh.mesh(face, (r * 0.2, r * 0.2, r * 0.8, r * 0.8))
        return None if pts is None else pts[:, :2]

    return points


def _work(chunk: list[tuple[Path, list[FaceJob]]]) -> list[tuple[int, list[Path]]]:
    """Merge a few consecutive frames; per frame (faces merged, files written).

    All their faces go through the model as one batch: on CPU a batch of 4 costs about
    17 % less per face than one at a time (docs/BENCHMARKS.md, Merge)."""
    setup: _Setup = _W["setup"]
    predictor: Predictor = _W["predictor"]
    res = predictor.resolution
    face_type = predictor.info.face_type
    frames, mats, crops = [], [], []
    for frame_path, faces in chunk:
        frame = read_image(frame_path)
        frames.append(frame)
        mats.append([face_transform(f.landmarks, face_type, res, f.yaw) for f in faces])
        crops.extend(cv2.warpAffine(frame, m, (res, res), flags=cv2.INTER_CUBIC,
                                    borderMode=cv2.BORDER_REPLICATE) for m in mats[-1])
    predicted: np.ndarray | None = None
    learned: np.ndarray | None = None
    batch = np.empty((0, res, res, 3), np.float32)
    if crops:
        batch = np.stack(crops).astype(np.float32) / 255
        if predictor.info.needs_mesh:
            meshes, poses = _crop_meshes(chunk, mats)
            predicted, learned = predictor.predict(batch, meshes, poses)
        else:
            predicted, learned = predictor.predict(batch)
    results, k = [], 0
    for (frame_path, faces), frame, frame_mats in zip(chunk, frames, mats, strict=True):
        placed = []
        for f, m in zip(faces, frame_mats, strict=True):
            assert predicted is not None
            placed.append(Placed(m, f.landmarks, predicted[k],
                                 None if learned is None else learned[k], batch[k]))
            k += 1
        results.append(_merge_frame(frame_path.stem, frame, placed, setup))
    return results


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
                 setup: _Setup) -> tuple[int, list[Path]]:
    """Compose the frame's predicted faces and write it; (faces merged, files written)."""
    opts = setup.options
    out = np.zeros_like(frame) if opts.mode == "raw" else frame.copy()
    alpha = np.zeros(frame.shape[:2], np.float32)
    debug_tiles = []
    for p in placed:
        roi, mask, (x0, y0, x1, y1) = merge_face(out if opts.mode != "raw" else frame, p, opts,
                                                 _W["mesher"], _W["enhance"])
        region = out[y0:y1, x0:x1]
        if opts.mode == "raw":
            keep = mask > 0
            region[keep] = roi[keep]
        else:
            region[...] = roi
        alpha[y0:y1, x0:x1] = np.maximum(alpha[y0:y1, x0:x1], mask)
        if setup.debug_dir is not None:
            debug_tiles.append(_debug_tile(p, out, mask, (x0, y0, x1, y1)))
    written = _write(stem, out, alpha, setup, opts, debug_tiles)
    return len(placed), written


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


def _write(stem: str, out: np.ndarray, alpha: np.ndarray, setup: _Setup,
           opts: MergeOptions, debug_tiles: list[np.ndarray]) -> list[Path]:
    # the invisible watermark (its sign follows the frame number): no option leaves it out
    out = mark_frame(out, setup.mark, index=int(stem) if stem.isdigit() else None)
    a8 = (alpha * 255).round().astype(np.uint8)
    image = np.dstack([out, a8]) if (opts.export_alpha or opts.mode == "raw") else out
    written = []
    path = setup.out_dir / f"{stem}.png"
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise FacelabError(f"Cannot encode the merged frame {path.name}.")
    _put(path, png_bytes_with_mark(data.tobytes(), setup.mark))
    written.append(path)
    if setup.mask_dir is not None:
        mpath = setup.mask_dir / f"{stem}.png"
        _put(mpath, cv2.imencode(".png", a8)[1].tobytes())
        written.append(mpath)
    if setup.debug_dir is not None and debug_tiles:
        dpath = setup.debug_dir / f"{stem}.jpg"
        ok, jpg = cv2.imencode(".jpg", np.vstack(debug_tiles), [cv2.IMWRITE_JPEG_QUALITY, 90])
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


def _sync(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ── the driver ──────────────────────────────────────────────────────────────────────────


def _settings(info: ModelInfo, opts: MergeOptions, precision: str) -> dict[str, Any]:
    return {"model_id": info.model_id, "options": opts.to_json(), "precision": precision}


def merge(ws: Workspace, model_name: str, opts: MergeOptions, reporter: Reporter,
          device: str = "auto", frames_spec: str | None = None, debug: bool = False,
          workers: int | None = None, precision: str = "auto", force: bool = False
          ) -> MergeReport:
    """Merge the dst frames with model `model_name`; returns what was done. `precision` of
    the prediction: auto = bf16 on a CPU where it measured faster (1.56× less CPU per face
    for quick96 here, 61 dB from fp32's output), on a GPU bf16/fp16; fp32 = exact. `force`
    remakes the chosen frames even where made with these settings."""
    opts.validate()
    ws.require()
    with locks.stage(ws.root, "merge", "the merge of this workspace", reporter):
        return _merge(ws, model_name, opts, reporter, device, frames_spec, debug, workers,
                      precision, force)


def _merge(ws: Workspace, model_name: str, opts: MergeOptions, reporter: Reporter,
           device: str, frames_spec: str | None, debug: bool, workers: int | None,
           precision: str, force: bool) -> MergeReport:
    reporter.status(f"Reading model '{model_name}' and the dst faces …")  # a long dst: seconds
    info = model_info(ws.model_dir, model_name)
    if opts.mode == "auto":  # the family's: a shaded meshswap face brings dst's light itself
        opts = dataclasses.replace(opts, mode=info.blend)
    frames = dst_frames(ws)
    if not frames:
        raise FacelabError(f"{ws.frames_dir('dst')} holds no frames: run "
                           "`facelab video extract dst` first.")
    by_frame = dst_faces(ws)
    _check_face_type(ws, info, by_frame)
    wanted = parse_frames(frames_spec, len(frames))
    if wanted is not None:
        frames = [p for p in frames if _frame_number(p) in wanted]
        if not frames:
            raise FacelabError(f"No dst frame is numbered within --frames {frames_spec}.")
    if info.needs_mesh:
        _check_meshes(ws, info, by_frame, frames)
    jobs = face_jobs(frames, by_frame, opts.smooth, dst_fps(ws), meshes=info.needs_mesh)

    out_dir = ws.merged_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    all_debug = ws.frames_dir("dst") / DEBUG_DIR
    for d in (out_dir, ws.merged_mask_dir, all_debug):  # what a killed merge was writing
        clean_stale_parts(d)
    mask_dir = ws.merged_mask_dir if opts.export_alpha else None
    debug_dir = all_debug if debug else None
    for d in (mask_dir, debug_dir):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    precision = choose_precision(precision, resolve_device(device))[0]
    made = MergeRecord(out_dir, _settings(info, opts, precision))
    todo = [p for p in frames if force
            or not (made.current(p.stem) and frame_done(p, out_dir, mask_dir, debug_dir))]
    made.forget([p.stem for p in todo])  # until remade, none of them counts as done
    made.save()
    report = MergeReport(frames=len(frames), skipped=len(frames) - len(todo),
                         model_id=info.model_id, out_dir=out_dir)
    report.frames_without_face = sum(1 for p in frames if not jobs.get(p.name))
    setup = _Setup(ws.model_dir, model_name, device, opts, out_dir, mask_dir, debug_dir,
                   Mark.synthetic(info.model_id), precision)
    items = [(p, jobs.get(p.name, [])) for p in todo]
    n_workers = workers if workers is not None else _default_workers(len(items), device)
    with reporter.task("Merging dst frames", len(items)) as task:
        chunks = [items[i:i + BATCH_FRAMES] for i in range(0, len(items), BATCH_FRAMES)]
        threads = default_workers() if n_workers <= 1 else 1  # in-process: every core
        try:
            with create_executor(n_workers, init=_init, initargs=(setup, threads),
                                 preload=("facelab.merge.merger",)) as ex:
                for chunk, results in zip(chunks, ex.map(_work, chunks), strict=True):
                    for (frame, _), (faces, written) in zip(chunk, results, strict=True):
                        _sync(written)
                        made.record(frame.stem)
                        report.merged_now += 1
                        report.faces += faces
                        task.advance()
                    made.save(every=SAVE_EVERY_S)
        except BaseException:
            with contextlib.suppress(OSError):  # the error that stopped the run says more
                made.save()
            raise
        made.save()
    return report


def _default_workers(items: int, device: str) -> int:
    if items < 8 or device.startswith("cuda"):
        return 1
    return default_workers(4)


def _check_face_type(ws: Workspace, info: ModelInfo, by_frame: dict[str, list[FaceMeta]]) -> None:
    """A model trained on a wider face type than dst's faces were extracted with would
    paste pixels the aligned faces never covered; DeepFaceLab refuses it too."""
    order = [t.value for t in FaceType]  # narrowest to widest
    model_type = info.face_type.value
    first = next(iter(by_frame.values()))[0]
    if first.face_type in order and order.index(model_type) > order.index(first.face_type):
        raise FacelabError(
            f"Model {info.name!r} is a {model_type} face model but the dst faces in "
            f"{ws.aligned_dir('dst')} are {first.face_type}: extract dst again with "
            f"--face-type {model_type} or use a model of that face type.")


def _check_meshes(ws: Workspace, info: ModelInfo, by_frame: dict[str, list[FaceMeta]],
                  frames: list[Path]) -> None:
    """A family that works from dst's meshes cannot merge a face without one."""
    bare = without_mesh(by_frame, frames)
    if bare:
        more = f" (and {len(bare) - 1} other faces)" if len(bare) > 1 else ""
        raise FacelabError(
            f"dst face {bare[0].face_index} of frame {bare[0].source_filename}{more} in "
            f"{ws.aligned_dir('dst')} has no FaceMesh mesh, which model {info.name!r} "
            f"({info.family}) works from: extract dst again with the mesh landmarker (the "
            "default of `facelab extract dst`).")
