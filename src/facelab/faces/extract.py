"""Stage 2: frames to aligned faces (`data_<side>/aligned/<frame>_<i>.jpg`).

`faces.json` beside the frames records the settings and how many faces each frame gave,
so a rerun skips done frames and `--redo-deleted-debug` knows which frames the user
rejected by deleting their debug image. dst frames without a face are listed in
`data_dst/aligned_missing.txt`.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2

from facelab.errors import FacelabError
from facelab.executor import create_executor, default_workers
from facelab.faces.debug import draw_debug
from facelab.faces.extractor import Extractor, ExtractorOptions
from facelab.faces.faceimage import write_face
from facelab.faces.mediapipe_runtime import quiet_env
from facelab.fsutil import atomic_path, move_to_trash, read_json, write_json
from facelab.options import option
from facelab.options import validate as check_options
from facelab.progress import NULL, Reporter
from facelab.video.frames import read_image
from facelab.workspace import Side, Workspace, list_images

STATE = "faces.json"
MISSING = "aligned_missing.txt"
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
           root / STATE, root / MISSING]
    old = [p for p in old if p.exists()]
    if not old:
        return None
    trash = ws.new_trash_dir()
    move_to_trash(old, trash, ws.root)
    return trash


def extract_faces(ws: Workspace, side: Side, opts: FaceExtractOptions | None = None,
                  reporter: Reporter = NULL) -> FaceExtractReport:
    """Extract every face of every frame of `side` not yet done."""
    opts = opts or FaceExtractOptions()
    ws.require()
    frames = list_images(ws.frames_dir(side))
    if not frames:
        raise FacelabError(f"data_{side}/ holds no frames: run `facelab video extract {side}`.")
    report = FaceExtractReport(side, frames=len(frames))
    if opts.force:
        report.trashed_to = _trash_previous(ws, side)
    state = _load_state(ws, side, opts)
    todo = [f for f in frames if f.name not in state.frames]
    debug = opts.debug if opts.debug is not None else side == "dst"
    _process(ws, side, todo, opts.extractor, state, opts, debug, report, reporter,
             f"faces {side}")
    if side == "dst":
        report.missing_list = _write_missing(ws, state)
    report.without_face = sorted(n for n, c in state.frames.items() if c == 0)
    return report


def _workers(opts: FaceExtractOptions, frames: int) -> int:
    if opts.workers is not None:
        return max(1, min(opts.workers, frames))
    if frames < MIN_POOL_FRAMES or opts.extractor.device == "cuda":
        return 1
    return default_workers(MAX_WORKERS)


def _extract_frame(extractor: Extractor, frame_path: Path, aligned: Path,
                   debug_dir: Path | None, quality: int) -> tuple[int, list[Path]]:
    """Read, detect, align and write one frame's faces (and debug image); the face count
    and the files written."""
    frame = read_image(frame_path)
    faces = extractor.run(frame)
    size = (frame.shape[1], frame.shape[0])
    written: list[Path] = []
    for face in faces:
        meta = face.meta(frame_path.name, size)
        meta.original_name = face_name(frame_path, face.index)
        write_face(aligned / meta.original_name, face.image, meta, quality)
        written.append(aligned / meta.original_name)
    if debug_dir is not None:
        with atomic_path(debug_dir / f"{frame_path.stem}.jpg") as tmp:
            cv2.imwrite(str(tmp), draw_debug(frame, faces), [cv2.IMWRITE_JPEG_QUALITY, 90])
        written.append(debug_dir / f"{frame_path.stem}.jpg")
    return len(faces), written


_WORKER: dict[str, Any] = {}


def _init_worker(options: ExtractorOptions, aligned: Path, debug_dir: Path | None,
                 quality: int, pooled: bool) -> None:
    """Load the models once per worker (a bad detector name or a missing package fails
    here and is raised by the first frame). In a pool process each runtime gets one
    thread: the processes are the parallelism."""
    if pooled:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        cv2.setNumThreads(1)
    _WORKER.clear()
    extractor = Extractor(options)
    _WORKER.update(extractor=extractor, aligned=aligned, debug_dir=debug_dir, quality=quality)
    _ = extractor.detector, extractor.landmarker


def _worker_frame(frame_path: Path) -> tuple[int, list[Path]]:
    return _extract_frame(_WORKER["extractor"], frame_path, _WORKER["aligned"],
                          _WORKER["debug_dir"], _WORKER["quality"])


def _discard(result: tuple[int, list[Path]]) -> None:
    """A frame after a failed one was done ahead: delete what it wrote, so the disk
    matches the one-process path's."""
    for path in result[1]:
        path.unlink(missing_ok=True)


def _process(ws: Workspace, side: Side, frames: list[Path], options: ExtractorOptions,
             state: _State, opts: FaceExtractOptions, debug: bool, report: FaceExtractReport,
             reporter: Reporter, label: str) -> None:
    """Frames through the executor, a few in flight per worker (memory stays flat),
    recorded in frame order; on an error the frames before it are recorded."""
    aligned, debug_dir = ws.aligned_dir(side), ws.aligned_debug_dir(side)
    aligned.mkdir(parents=True, exist_ok=True)
    if debug:
        debug_dir.mkdir(parents=True, exist_ok=True)
    workers = _workers(opts, len(frames))
    if workers > 1:
        quiet_env()  # before the fork server imports mediapipe
    initargs = (options, aligned, debug_dir if debug else None, opts.jpeg_quality, workers > 1)
    try:
        with (reporter.task(label, len(frames)) as task,
              create_executor(workers, init=_init_worker, initargs=initargs, preload=PRELOAD,
                              pin=True) as ex):
            results = ex.map(_worker_frame, frames, discard=_discard)
            for frame_path, (faces, _written) in zip(frames, results, strict=True):
                state.mark(frame_path.name, faces)
                report.processed_now += 1
                report.faces_written += faces
                task.advance()
    finally:
        _WORKER.clear()  # the one-process path's models
        state.save()


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
    state = _load_state(ws, "dst", opts)
    debug_dir = ws.aligned_debug_dir("dst")
    if not debug_dir.is_dir() or not state.frames:
        raise FacelabError("No extracted dst frames with debug images: run "
                           "`facelab extract dst` (debug is on for dst) first.")
    frames_dir = ws.frames_dir("dst")
    redo = [frames_dir / n for n in sorted(state.frames)
            if not (debug_dir / f"{Path(n).stem}.jpg").exists() and (frames_dir / n).exists()]
    report = FaceExtractReport("dst", frames=len(state.frames))
    if not redo:
        return report
    aligned = ws.aligned_dir("dst")
    old = [p for f in redo for p in aligned.glob(f"{f.stem}_*.jpg")]
    move_to_trash(old, ws.aligned_trash_dir("dst"), aligned)
    sensitive = ExtractorOptions(**{**asdict(opts.extractor), "sensitive": True})
    _process(ws, "dst", redo, sensitive, state, opts, True, report, reporter, "redo dst")
    report.missing_list = _write_missing(ws, state)
    report.without_face = sorted(n for n, c in state.frames.items() if c == 0)
    return report
