"""`facelab merge`: every dst frame, its faces swapped, written to data_dst/merged/.

Frames without a face are written unchanged, so the merged count always matches the
source. Every PNG written carries the provenance mark (no option omits it). Work is spread
over a process pool (each worker loads the model once, one thread each); frames are
streamed in chunks of a few whose faces are predicted as one batch, a few chunks in flight
per worker. A family whose `ModelInfo.needs_mesh` (meshswap) also gets each dst face's
FaceMesh mesh, in its crop's pixels, and pose; for the others no per-face work is added.
A mask mode with the face segmenter (seg-dst, seg-prd) has each worker load its networks
once; seg-dst's work items also read the frames around them, whose masks theirs are
smoothed with (`merge/segmasks.py`), so a segment merged alone makes the same frames.

A rerun skips the frames already made with the same model and options and makes the others
again, whatever the last run was killed in (`merge/resume.py` records each frame's
settings); one merge at a time per workspace (the `merge` lock), and the temporary files
of a killed one are removed at the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab import locks
from facelab.cluster.stages import Cluster, cluster_executor, cluster_layout
from facelab.device import choose_precision, resolve_device
from facelab.errors import FacelabError
from facelab.executor import Executor, create_executor, default_workers
from facelab.faces.faceimage import FaceMeta
from facelab.faces.facetype import FaceType
from facelab.fsutil import clean_stale_parts
from facelab.merge.jobs import (
    FaceJob,
    dst_faces,
    dst_fps,
    dst_frames,
    face_jobs,
    without_mesh,
)
from facelab.merge.on_cluster import item_frames, worker_inputs
from facelab.merge.options import MergeOptions
from facelab.merge.predictor import ModelInfo, model_info
from facelab.merge.ranges import Range, load_ranges, options_for
from facelab.merge.resume import SAVE_EVERY_S, MergeRecord, frame_done
from facelab.merge.segmasks import segmenter_ids, segmenter_paths
from facelab.merge.stream import (
    VideoOutput,
    check_streamable,
    finish_stream,
    frame_done_debug,
    plan_stream,
)
from facelab.merge.video_out import SEGMENTS_DIR, segment_path
from facelab.merge.worker import BATCH_FRAMES, Item, Setup, init, work
from facelab.progress import Reporter
from facelab.provenance.credentials.result import workspace_signing
from facelab.provenance.mark import Mark
from facelab.segment.infer import WINDOW
from facelab.tuning import Layout, layout_for, run_measured
from facelab.video.source import MIN_CHUNK, FolderFrames, VideoSource, open_frames
from facelab.workspace import Workspace

DEBUG_DIR = "merged_debug"  # in data_dst/: dst | prediction | mask | result per face
#: frames per work item when seg-dst smooths (each also reads 2 × WINDOW context frames)
SEG_CHUNK = 16


@dataclass
class MergeReport:
    frames: int = 0
    merged_now: int = 0
    skipped: int = 0
    faces: int = 0
    frames_without_face: int = 0
    model_id: str = ""
    out_dir: Path | None = None
    output: Path | None = None  # the result video, when merged straight into it
    joined: bool = False  # the result video was (re)written by this run
    ranged: int = 0  # frames given other options by frame ranges (data_dst/merge.json)
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


def _sync(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ── the driver ──────────────────────────────────────────────────────────────────────────


def _settings(info: ModelInfo, opts: MergeOptions, precision: str,
              segmenters: dict[str, str] | None = None) -> dict[str, Any]:
    out = {"model_id": info.model_id, "options": opts.to_json(), "precision": precision}
    if segmenters and opts.seg_parts:
        out["segmenters"] = segmenters
    return out


def merge(ws: Workspace, model_name: str, opts: MergeOptions, reporter: Reporter,
          device: str = "auto", frames_spec: str | None = None, debug: bool = False,
          workers: int | None = None, precision: str = "auto", force: bool = False,
          to_video: bool | None = None, video: VideoOutput | None = None,
          ignore_ranges: bool = False, cluster: str | None = None) -> MergeReport:
    """Merge the dst frames with model `model_name`; returns what was done. `precision` of
    the prediction: auto = bf16 on a CPU where it measured faster (1.56× less CPU per face
    for quick96 here, 61 dB from fp32's output), on a GPU bf16/fp16; fp32 = exact. `force`
    remakes the chosen frames even where made with these settings. `to_video`: encode the
    result video straight away (`video`: its format and file) instead of writing merged/;
    None: when dst was kept in its video and every frame is merged. Frames in the ranges
    of data_dst/merge.json (set in the studio, `merge/ranges.py`) take the options given
    there over `opts`, unless `ignore_ranges`. `cluster`: run the items on that Ray
    cluster ("auto" or HOST:PORT; `facelab/cluster/`), joined before anything is touched."""
    opts.validate()
    ws.require()
    ranges = [] if ignore_ranges else load_ranges(ws)  # a damaged file: refused at once
    on = Cluster(cluster, cluster_layout(cluster)) if cluster else None
    with locks.stage(ws.root, "merge", "the merge of this workspace", reporter):
        return _merge(ws, model_name, opts, reporter, device, frames_spec, debug, workers,
                      precision, force, to_video, video or VideoOutput(), ranges, on)


def _merge(ws: Workspace, model_name: str, opts: MergeOptions, reporter: Reporter,
           device: str, frames_spec: str | None, debug: bool, workers: int | None,
           precision: str, force: bool, to_video: bool | None, video: VideoOutput,
           ranges: list[Range], on: Cluster | None = None) -> MergeReport:
    reporter.status(f"Reading model '{model_name}' and the dst faces …")  # a long dst: seconds
    info = model_info(ws.model_dir, model_name)
    if opts.mode == "auto":  # the family's: a shaded meshswap face brings dst's light itself
        opts = dataclasses.replace(opts, mode=info.blend)
    source = open_frames(ws, "dst")
    frames = dst_frames(ws)
    if not frames:
        raise FacelabError(f"{ws.frames_dir('dst')} holds no frames: run "
                           "`facelab video extract dst` first.")
    if to_video is None:
        to_video = isinstance(source, VideoSource) and frames_spec is None
    if to_video:
        check_streamable(opts, frames_spec, video)
    by_frame = dst_faces(ws)
    _check_face_type(ws, info, by_frame)
    wanted = parse_frames(frames_spec, len(frames))
    if wanted is not None:
        frames = [p for p in frames if _frame_number(p) in wanted]
        if not frames:
            raise FacelabError(f"No dst frame is numbered within --frames {frames_spec}.")
    if info.needs_mesh:
        _check_meshes(ws, info, by_frame, frames)
    own = _frame_options(frames, opts, ranges, info)  # frames a range gives other options
    if to_video:
        for o in set(own.values()):
            check_streamable(o, frames_spec, video)
    every = [opts, *own.values()]  # a missing segmenter is refused before any work
    segmenters = segmenter_paths(ws, every) if any(o.seg_parts for o in every) else {}
    smooths = {o.smooth for o in own.values()} | {opts.smooth}  # each smoothed as a whole
    jobs_by = {s: face_jobs(frames, by_frame, s, dst_fps(ws), meshes=info.needs_mesh)
               for s in smooths}
    jobs = jobs_by[opts.smooth]

    def faces_of(name: str) -> list[FaceJob]:
        return jobs_by[own[name].smooth if name in own else opts.smooth].get(name, [])

    out_dir = ws.frames_dir("dst") / SEGMENTS_DIR if to_video else ws.merged_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    all_debug = ws.frames_dir("dst") / DEBUG_DIR
    for d in (out_dir, ws.merged_mask_dir, all_debug):  # what a killed merge was writing
        clean_stale_parts(d)
    mask_dir = ws.merged_mask_dir if opts.export_alpha and not to_video else None
    debug_dir = all_debug if debug else None
    for d in (mask_dir, debug_dir):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    precision = choose_precision(precision, resolve_device(device))[0]
    seg_ids = segmenter_ids(segmenters)  # another network (a `mask train`) remakes the frames
    settings = _settings(info, opts, precision, seg_ids)
    stream = plan_stream(ws, source, frames, video) if to_video else None
    if stream is not None:
        settings["video"] = stream.spec.to_json()
    made = MergeRecord(out_dir, settings)
    report = MergeReport(frames=len(frames), model_id=info.model_id, out_dir=out_dir,
                         ranged=len(own))
    # what each frame (or segment) is recorded with: the run's settings, or its own
    theirs = {name: _settings(info, o, precision, seg_ids) for name, o in own.items()}
    report.frames_without_face = sum(1 for p in frames if not jobs.get(p.name))
    # seg-dst smoothed over time: each item also reads the frames around it
    window = WINDOW if any("seg-dst" in o.seg_parts and o.smooth for o in every) else 0
    around = _Context([p.name for p in frames], faces_of, ws.frames_dir("dst"), window)
    if stream is None:
        todo = [p for p in frames if force or not (
            made.current(p.stem, theirs.get(p.name))
            and frame_done(p, out_dir, mask_dir, debug_dir))]
        runs = source.chunks([p.name for p in todo], SEG_CHUNK if window else (
            BATCH_FRAMES if isinstance(source, FolderFrames) else MIN_CHUNK))
        folder = ws.frames_dir("dst")
        items = [Item([(folder / n, faces_of(n)) for n in run], None,
                      _item_options(run, own, opts), *around.of(run)) for run in runs]
        keys = [[Path(n).stem for n in run] for run in runs]
        recorded = {Path(n).stem: s for n, s in theirs.items()}
    else:
        recorded = {name: _segment_settings(settings, run, own) for name, run in
                    stream.segments if any(n in own for n in run)}
        todo_segments = [(name, run) for name, run in stream.segments if force or not (
            made.current(name, recorded.get(name)) and segment_path(out_dir, name).is_file()
            and (debug_dir is None or all(frame_done_debug(debug_dir, n) for n in run)))]
        items = [Item([(out_dir.parent / n, faces_of(n)) for n in run], name,
                      _item_options(run, own, opts), *around.of(run))
                 for name, run in todo_segments]
        keys = [[name] for name, _ in todo_segments]
    made.forget([k for ks in keys for k in ks])  # until remade, none of them counts as done
    made.save()
    report.skipped = len(frames) - sum(len(it.frames) for it in items)
    mark = Mark.synthetic(info.model_id)
    signing = workspace_signing(ws.root, mark)
    setup = Setup(ws.model_dir, model_name, device, opts, out_dir, mask_dir, debug_dir,
                  mark, precision, source, stream.spec if stream else None, segmenters,
                  signing.carried() if on is not None else signing)
    _run(items, keys, setup, made, report, reporter, workers, device, info, recorded,
         (ws.root, on))
    if stream is not None:
        report.output, report.joined = finish_stream(ws, stream, out_dir, setup.mark,
                                                     reporter, setup.signing)
    return report


def _run(items: list[Item], keys: list[list[str]], setup: Setup, made: MergeRecord,
         report: MergeReport, reporter: Reporter, workers: int | None, device: str,
         info: ModelInfo, recorded: dict[str, dict[str, Any]],
         cluster: tuple[Path, Cluster | None] = (Path(), None)) -> None:
    """The items through the worker pool, each recorded (under its frame or segment
    names, with its own settings where `recorded` has them) once its files are written
    and synced. Processes × threads: `workers` when given, else the layout measured
    fastest for this model on this machine (the first items of a long merge are its
    trials; `tuning.py`), one process on a GPU."""
    total = sum(len(it.frames) for it in items)

    root, on = cluster

    def start(layout: Layout) -> Executor:
        if on is not None:
            return cluster_executor(on.address, root, layout.workers, setup.source,
                                    init=init, initargs=(setup, layout.threads),
                                    inputs=worker_inputs(setup), item_frames=item_frames)
        return create_executor(layout.workers, init=init, initargs=(setup, layout.threads),
                               preload=("facelab.merge.worker",))

    layout = on.layout if on is not None else layout_for(workers) if workers is not None \
        else None
    if layout is None and resolve_device(device).type != "cpu":
        layout = Layout(1, default_workers())  # one process feeds the GPU
    key = {"family": info.family, "resolution": info.resolution, "precision": setup.precision,
           "face_type": info.face_type.value, "mesh": "prd" in setup.options.mask_parts,
           "enhance": setup.options.super_resolution, "to_video": setup.video is not None}
    if setup.options.seg_parts:  # the segmenter's cost (other merges keep their layouts)
        key["seg"] = "*".join(setup.options.seg_parts)
    with reporter.task("Merging dst frames", total) as task:
        try:
            results = run_measured(items, work, start, "merge", key, layout=layout,
                                   reporter=reporter)
            for names, result in zip(keys, results, strict=True):
                for faces, written in result:
                    _sync(written)
                    report.merged_now += 1
                    report.faces += faces
                    task.advance()
                for name in names:
                    made.record(name, recorded.get(name))
                # a segment is seconds of work: recorded at once
                made.save(every=0 if setup.video is not None else SAVE_EVERY_S)
        except BaseException:
            with contextlib.suppress(OSError):  # the error that stopped the run says more
                made.save()
            raise
        made.save()


class _Context:
    """Per work item, its frames' positions in the clip and the frames within `window`
    positions of them that it does not hold (what seg-dst's masks are smoothed with)."""

    def __init__(self, names: list[str], faces_of: Callable[[str], list[FaceJob]],
                 folder: Path, window: int) -> None:
        self.names, self.faces_of, self.folder, self.window = names, faces_of, folder, window
        self.index = {n: i for i, n in enumerate(names)}

    def of(self, run: list[str]) -> tuple[list[int] | None, list[tuple[int, Path,
                                                                       list[FaceJob]]]]:
        if not self.window:
            return None, []
        positions = [self.index[n] for n in run]
        held = set(positions)
        near = sorted({q for p in positions for q in range(p - self.window, p + self.window + 1)
                       if 0 <= q < len(self.names)} - held)
        return positions, [(q, self.folder / self.names[q], self.faces_of(self.names[q]))
                           for q in near]


def _frame_options(frames: list[Path], opts: MergeOptions, ranges: list[Range],
                   info: ModelInfo) -> dict[str, MergeOptions]:
    """The options of each frame that frame ranges change from `opts`, by frame name."""
    own = {}
    for p in frames if ranges else []:
        o = options_for(_frame_number(p), opts, ranges)
        if o.mode == "auto":
            o = dataclasses.replace(o, mode=info.blend)
        if o != opts:
            own[p.name] = o
    return own


def _item_options(run: list[str], own: dict[str, MergeOptions], opts: MergeOptions
                  ) -> list[MergeOptions] | None:
    """Per frame of a work item, its options; None when all are the run's."""
    return [own.get(n, opts) for n in run] if any(n in own for n in run) else None


def _segment_settings(settings: dict[str, Any], run: list[str],
                      own: dict[str, MergeOptions]) -> dict[str, Any]:
    """A segment's record: the run's settings and, per span of its frames that a range
    gives other options, (first, last, options)."""
    spans: list[list[Any]] = []
    last = -2
    for i, name in enumerate(run):
        o = own.get(name)
        if o is None:
            continue
        stem, doc = Path(name).stem, o.to_json()
        if spans and last == i - 1 and spans[-1][2] == doc:
            spans[-1][1] = stem
        else:
            spans.append([stem, stem, doc])
        last = i
    return {**settings, "frame_options": spans}


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
