"""Stage 2: frames to aligned faces (`data_<side>/aligned/<frame>_<i>.jpg`).

`faces.json` beside the frames records the settings and how many faces each frame gave,
so a rerun skips done frames and `--redo-deleted-debug` knows which frames the user
rejected by deleting their debug image. dst frames without a face are listed in
`data_dst/aligned_missing.txt`. A frame that cannot be read (cut short, not an image) is
skipped, not recorded (a rerun tries it again), and listed in
`data_<side>/aligned_unreadable.txt`: one bad frame no longer stops the run, and nothing of
OpenCV's or libpng's reaches the terminal (`faces/framefile.py`). A side whose every frame
was searched without a face raises `NoFaceFound`, one sentence naming the video.

Extraction holds the lock `faces-<side>` (`locks.py`), so two runs on one side refuse each
other, and first removes the temporary files a killed run left.

With 2+ cores and 8+ frames the frames go to a pool of worker processes, each with its own
Extractor (the ONNX Runtime and MediaPipe sessions are neither picklable nor fork-safe; the
workers come from a fork server that imported the libraries once, ≈ 30 % faster than
spawning on GRID's 75 frames). A worker reads its frame and writes the faces and debug
image itself, returning only the frame's face count, so the parent sends paths and records
results in frame order; the files are byte-identical to the one-process path's. As with any
multiprocessing pool, a script calling `extract_faces` needs the
`if __name__ == "__main__":` guard (the CLI has it); `workers=1` avoids the pool.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab import locks
from facelab.cluster.stages import CLUSTER_HELP, cluster_executor, cluster_layout
from facelab.errors import FacelabError
from facelab.executor import Executor, create_executor, default_workers
from facelab.faces.debug import draw_debug
from facelab.faces.detect import _base as detect_base
from facelab.faces.extractor import Extractor, ExtractorOptions
from facelab.faces.faceimage import write_face
from facelab.faces.framefile import UnreadableFrame, quiet_opencv, read_frame
from facelab.faces.mediapipe_runtime import quiet_env
from facelab.faces.noface import FACES_STATE, NoFaceFound, no_face_message
from facelab.fsutil import atomic_path, clean_stale_parts, move_to_trash, read_json, write_json
from facelab.options import option
from facelab.options import validate as check_options
from facelab.progress import NULL, Reporter
from facelab.tuning import Layout, layout_for, run_measured
from facelab.video.source import FolderFrames, FrameSource, VideoSource, open_frames
from facelab.workspace import Side, Workspace

STATE = FACES_STATE
MISSING = "aligned_missing.txt"
UNREADABLE = "aligned_unreadable.txt"
SAVE_EVERY_S = 2.0
MIN_POOL_FRAMES = 8  # below this, starting workers (≈ 1-2 s of model loading) is not worth it
MAX_WORKERS = 2
# imported once by the fork server, so each worker forks with them loaded (no model is
# loaded and no thread started by an import, so forking them is safe)
PRELOAD = ["facelab.faces.extract", "facelab.faces.detect", "facelab.faces.landmarks",
           "onnxruntime", "mediapipe.python.solutions.face_mesh"]


@dataclass
class FaceExtractOptions:
    """One extraction run; checked on construction (the extractor's options included)."""

    extractor: ExtractorOptions = option(default_factory=ExtractorOptions,
                                         help="What to find and how to align it.")
    jpeg_quality: int = option(95, range=(1, 100), help="JPEG quality of the faces.")
    debug: bool | None = option(  # None: DeepFaceLab's defaults
        None, help="Write each frame with its boxes, 68 points and crop outline to "
        "aligned_debug/ (default: on for dst, off for src).")
    force: bool = option(False, help="Extract every frame again; old faces move to "
                         "WORKSPACE/.trash/.")
    workers: int | None = option(  # None: min(2, cores), 1 for small jobs or CUDA
        None, range=(1, None), cli=False, help="Processes extracting faces.")
    cluster: str | None = option(None, help=CLUSTER_HELP)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> FaceExtractOptions:
        """Raise FacelabError naming the first bad option; return self."""
        check_options(self)
        self.extractor.validate()
        return self


@dataclass
class FaceExtractReport:
    side: Side
    frames: int = 0
    processed_now: int = 0
    faces_written: int = 0
    without_face: list[str] = field(default_factory=list)
    trashed_to: Path | None = None
    missing_list: Path | None = None
    unreadable: list[str] = field(default_factory=list)  # frames skipped: not decodable
    unreadable_list: Path | None = None  # data_<side>/aligned_unreadable.txt, when any

    def unreadable_summary(self) -> str:
        """One sentence: how many frames could not be read, the first few, where all are
        listed, and what to do."""
        bad = self.unreadable
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        return (f"{len(bad)} of the {self.frames} {self.side} frames could not be read "
                f"({shown}; listed in {self.unreadable_list}); the faces of the others were "
                f"kept. Replace those files or extract the frames again (`facelab video "
                f"extract {self.side} --force`), then run this again.")


def _settings(opts: FaceExtractOptions) -> dict[str, Any]:
    e = opts.extractor
    return {"detector": e.detector, "landmarks": e.landmarks, "face_type": str(e.face_type),
            "size": e.size, "jpeg_quality": opts.jpeg_quality}


def face_name(frame: Path, index: int) -> str:
    return f"{frame.stem}_{index}.jpg"


class _State:
    """faces.json: settings and frame → number of faces; saved every few seconds."""

    def __init__(self, path: Path, settings: dict[str, Any], frames: dict[str, int]) -> None:
        self.path, self.settings, self.frames = path, settings, frames
        self._saved = time.monotonic()
        self._dirty = False

    def mark(self, frame: str, faces: int) -> None:
        self.frames[frame] = faces
        self._dirty = True
        if time.monotonic() - self._saved > SAVE_EVERY_S:
            self.save()

    def forget(self, frame: str) -> None:
        """A frame no longer readable (redo): a later run tries it again."""
        if self.frames.pop(frame, None) is not None:
            self._dirty = True

    def save(self) -> None:
        if self._dirty:  # a run that did nothing records nothing (not even its settings)
            write_json(self.path, {"settings": self.settings, "frames": self.frames})
            self._saved, self._dirty = time.monotonic(), False


def _load_state(ws: Workspace, side: Side, opts: FaceExtractOptions) -> _State:
    path = ws.frames_dir(side) / STATE
    settings = _settings(opts)
    if not path.exists():
        return _State(path, settings, {})
    try:
        data = read_json(path)
        frames = {str(k): int(v) for k, v in data["frames"].items()}
        old = dict(data["settings"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FacelabError(f"{path} is damaged ({e}); --force extracts again.") from e
    if old != settings:
        was = ", ".join(f"{k} {v}" for k, v in old.items())
        raise FacelabError(f"data_{side}/aligned/ was extracted with {was}; --force extracts "
                           "again with the new settings (old faces go to the trash).")
    return _State(path, settings, frames)


def _trash_previous(ws: Workspace, side: Side) -> Path | None:
    root = ws.frames_dir(side)
    old = [*ws.aligned_dir(side).glob("*.jpg"), *ws.aligned_debug_dir(side).glob("*.jpg"),
           root / STATE, root / MISSING, root / UNREADABLE]
    old = [p for p in old if p.exists()]
    if not old:
        return None
    trash = ws.new_trash_dir()
    move_to_trash(old, trash, ws.root)
    return trash


def _lock(ws: Workspace, side: Side, reporter: Reporter) -> AbstractContextManager[None]:
    return locks.stage(ws.root, f"faces-{side}", f"the {side} faces of this workspace",
                       reporter)


def _clean_leftovers(ws: Workspace, side: Side) -> None:
    """Remove the temporary files (faces, debug frames, faces.json, the lists) that a
    killed run left; the caller holds the side's lock."""
    for folder in (ws.frames_dir(side), ws.aligned_dir(side), ws.aligned_debug_dir(side)):
        clean_stale_parts(folder)


def extract_faces(ws: Workspace, side: Side, opts: FaceExtractOptions | None = None,
                  reporter: Reporter = NULL) -> FaceExtractReport:
    """Extract every face of every frame of `side` not yet done. Unreadable frames are
    skipped and listed (`report.unreadable`); NoFaceFound when no frame holds a face."""
    opts = opts or FaceExtractOptions()
    ws.require()
    with _lock(ws, side, reporter):
        _clean_leftovers(ws, side)
        return _extract_faces(ws, side, opts, reporter)


def _extract_faces(ws: Workspace, side: Side, opts: FaceExtractOptions,
                   reporter: Reporter) -> FaceExtractReport:
    source = open_frames(ws, side)
    if not len(source):
        raise FacelabError(f"data_{side}/ holds no frames: run `facelab video extract {side}`.")
    report = FaceExtractReport(side, frames=len(source))
    layout = cluster_layout(opts.cluster)  # joined before anything is touched
    if opts.force:
        report.trashed_to = _trash_previous(ws, side)
    state = _load_state(ws, side, opts)
    todo = [n for n in source.names if n not in state.frames]
    debug = opts.debug if opts.debug is not None else side == "dst"
    _process(ws, side, source, todo, opts.extractor, state, opts, debug, report, reporter,
             f"faces {side}", layout)
    _finish(ws, side, state, report)
    return report


def _finish(ws: Workspace, side: Side, state: _State, report: FaceExtractReport) -> None:
    """The lists beside the frames; NoFaceFound when every frame searched was faceless."""
    if side == "dst":
        report.missing_list = _write_missing(ws, state)
    report.without_face = sorted(n for n, c in state.frames.items() if c == 0)
    report.unreadable_list = _write_unreadable(ws, side, report.unreadable)
    if state.frames and not any(state.frames.values()):
        raise NoFaceFound(no_face_message(ws.frames_dir(side), len(state.frames)))


def _frame_size(source: FrameSource, frames: list[str]) -> list[int] | None:
    if isinstance(source, VideoSource):
        return [source.index.height, source.index.width]
    try:
        return list(source.read(frames[0]).shape[:2]) if frames else None
    except FacelabError:  # a damaged first frame: reported when its turn comes
        return None


def _given_layout(opts: FaceExtractOptions, frames: int) -> Layout | None:
    """The layout the user or the job fixes; None: measured (`tuning.py`)."""
    if opts.workers is not None:
        return layout_for(max(1, min(opts.workers, frames)))
    if frames < MIN_POOL_FRAMES or opts.extractor.device == "cuda":
        return Layout(1, default_workers())
    return None


Result = tuple[int, list[Path], str | None]  # faces found, files written, why unreadable


def _read(path: Path) -> np.ndarray:
    return read_frame(path, silence_fd2=bool(_WORKER.get("pooled")))


def _extract_frame(extractor: Extractor, name: str, frame: np.ndarray, aligned: Path,
                   debug_dir: Path | None, quality: int) -> Result:
    """Detect, align and write one frame's faces (and debug image); the face count and the
    files written."""
    faces = extractor.run(frame)
    size = (frame.shape[1], frame.shape[0])
    written: list[Path] = []
    for face in faces:
        meta = face.meta(name, size)
        meta.original_name = face_name(Path(name), face.index)
        write_face(aligned / meta.original_name, face.image, meta, quality)
        written.append(aligned / meta.original_name)
    if debug_dir is not None:
        with atomic_path(debug_dir / f"{Path(name).stem}.jpg") as tmp:
            cv2.imwrite(str(tmp), draw_debug(frame, faces), [cv2.IMWRITE_JPEG_QUALITY, 90])
        written.append(debug_dir / f"{Path(name).stem}.jpg")
    return len(faces), written, None


_WORKER: dict[str, Any] = {}


def _init_worker(options: ExtractorOptions, source: FrameSource, aligned: Path,
                 debug_dir: Path | None, quality: int, pooled: bool, threads: int = 1) -> None:
    """Load the models once per worker (a bad detector name or a missing package fails
    here and is raised by the first frame), each runtime with the layout's `threads`."""
    if pooled:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    cv2.setNumThreads(threads)
    detect_base.THREADS[0] = threads
    quiet_opencv()
    _WORKER.clear()
    extractor = Extractor(options)
    if isinstance(source, FolderFrames):  # image files may be damaged: checked, quietly
        source = source.with_reader(_read)
    _WORKER.update(extractor=extractor, source=source, aligned=aligned, debug_dir=debug_dir,
                   quality=quality, pooled=pooled)
    _ = extractor.detector, extractor.landmarker


def _worker_chunk(names: list[str]) -> list[Result]:
    """A few consecutive frames (from one key frame of a kept video: the worker decodes
    only its own); a frame that cannot be read is reported, not raised."""
    w = _WORKER
    source: FrameSource = w["source"]
    results: list[Result] = []
    frames = source.frames(names)
    for name in names:
        try:
            got, frame = next(frames)
        except UnreadableFrame as e:  # an image file: the next one is read anew
            results.append((0, [], e.reason))
            frames = source.frames(names[len(results):])
            continue
        assert got == name
        results.append(_extract_frame(w["extractor"], name, frame, w["aligned"],
                                      w["debug_dir"], w["quality"]))
    return results


def _discard(results: list[Result]) -> None:
    """Frames after a failed one were done ahead: delete what they wrote, so the disk
    matches the one-process path's."""
    for result in results:
        for path in result[1]:
            path.unlink(missing_ok=True)


def _process(ws: Workspace, side: Side, source: FrameSource, frames: list[str],
             options: ExtractorOptions, state: _State, opts: FaceExtractOptions, debug: bool,
             report: FaceExtractReport, reporter: Reporter, label: str,
             joined: Layout | None = None) -> None:
    """Frames through the executor, a few in flight per worker (memory stays flat),
    recorded in frame order; on an error the frames before it are recorded.
    `joined`: the layout joined on the cluster `opts.cluster` (None: a local run)."""
    aligned, debug_dir = ws.aligned_dir(side), ws.aligned_debug_dir(side)
    aligned.mkdir(parents=True, exist_ok=True)
    if debug:
        debug_dir.mkdir(parents=True, exist_ok=True)
    def start(layout: Layout) -> Executor:
        if layout.workers > 1:
            quiet_env()  # before the fork server imports mediapipe
        initargs = (options, source, aligned, debug_dir if debug else None,
                    opts.jpeg_quality, layout.workers > 1, layout.threads)
        if opts.cluster:
            return cluster_executor(opts.cluster, ws.root, layout.workers, source,
                                    init=_init_worker, initargs=initargs)
        return create_executor(layout.workers, init=_init_worker, initargs=initargs,
                               preload=PRELOAD, pin=True)

    chunks = source.chunks(frames)
    key = {"detector": options.detector, "landmarks": options.landmarks,
           "size": _frame_size(source, frames)}  # the detector's cost grows with it
    try:
        with reporter.task(label, len(frames)) as task:
            results = run_measured(chunks, _worker_chunk, start, "extract", key,
                                   layout=joined or _given_layout(opts, len(frames)),
                                   discard=_discard,
                                   reporter=reporter, max_workers=MAX_WORKERS,
                                   default=Layout(min(MAX_WORKERS, default_workers()), 1))
            for chunk, chunk_results in zip(chunks, results, strict=True):
                for name, (faces, _written, unreadable) in zip(chunk, chunk_results,
                                                               strict=True):
                    if unreadable is not None:  # not recorded: a rerun tries it again
                        report.unreadable.append(name)
                        state.forget(name)
                    else:
                        state.mark(name, faces)
                        report.processed_now += 1
                    report.faces_written += faces
                    task.advance()
    finally:
        _WORKER.clear()  # the one-process path's models
        source.close()
        state.save()


def _write_unreadable(ws: Workspace, side: Side, names: list[str]) -> Path | None:
    """List this run's unreadable frames beside the frames; a list an earlier run wrote is
    removed when none is left (facelab's own file, rewritten by every run)."""
    path = ws.frames_dir(side) / UNREADABLE
    if not names:
        path.unlink(missing_ok=True)
        return None
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{n}\n" for n in sorted(names)), encoding="utf-8")
    return path


def _write_missing(ws: Workspace, state: _State) -> Path:
    path = ws.frames_dir("dst") / MISSING
    names = sorted(n for n, c in state.frames.items() if c == 0)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return path


def redo_deleted_debug(ws: Workspace, opts: FaceExtractOptions | None = None,
                       reporter: Reporter = NULL) -> FaceExtractReport:
    """Re-extract the dst frames whose debug image the user deleted, with the detector's
    more sensitive pass (lower threshold, upscaled frame); their old faces move to
    aligned_trash/."""
    opts = opts or FaceExtractOptions()
    ws.require()
    with _lock(ws, "dst", reporter):
        _clean_leftovers(ws, "dst")
        return _redo_deleted_debug(ws, opts, reporter)


def _redo_deleted_debug(ws: Workspace, opts: FaceExtractOptions,
                        reporter: Reporter) -> FaceExtractReport:
    state = _load_state(ws, "dst", opts)
    debug_dir = ws.aligned_debug_dir("dst")
    if not debug_dir.is_dir() or not state.frames:
        raise FacelabError("No extracted dst frames with debug images: run "
                           "`facelab extract dst` (debug is on for dst) first.")
    source = open_frames(ws, "dst")
    present = set(source.names)
    redo = [n for n in sorted(state.frames)
            if not (debug_dir / f"{Path(n).stem}.jpg").exists() and n in present]
    report = FaceExtractReport("dst", frames=len(state.frames))
    if not redo:
        return report
    layout = cluster_layout(opts.cluster)
    aligned = ws.aligned_dir("dst")
    old = [p for n in redo for p in aligned.glob(f"{Path(n).stem}_*.jpg")]
    move_to_trash(old, ws.aligned_trash_dir("dst"), aligned)
    sensitive = ExtractorOptions(**{**asdict(opts.extractor), "sensitive": True})
    _process(ws, "dst", source, redo, sensitive, state, opts, True, report, reporter,
             "redo dst", layout)
    _finish(ws, "dst", state, report)
    return report
