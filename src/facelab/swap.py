"""`facelab swap`: the whole job in one command, extract → train → merge → assemble.

The workspace is laid out exactly as the stage commands expect (data_src.*, data_dst.*,
their frames and aligned faces, model/, data_dst/merged/), so any stage can be rerun by
hand with other options. Every stage is resumable, so running the same command again goes
on where it stopped: finished stages are skipped, training continues toward its budget
(iterations, or minutes recorded in swap.json), merging redoes frames only when the model
or the options changed.

A src video cut short keeps its readable frames and the swap goes on (a warning says where
it broke); a src without any face stops at face extraction with one sentence saying so,
on every run. `swap.json` also records the output written (`recorded_output`), so `eval`
finds a result written elsewhere with `-o`.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError, PartialResult
from facelab.faces.extract import FaceExtractReport, extract_faces
from facelab.fsutil import read_json, write_json
from facelab.merge.options import MergeOptions
from facelab.options import PRECISIONS, option
from facelab.options import validate as check_options
from facelab.progress import NULL, Reporter
from facelab.video.assemble import AssembleOptions, AssembleReport, assemble
from facelab.video.extract import ExtractOptions, extract_frames
from facelab.video.source import kept_as_video
from facelab.workspace import Workspace, list_images

STATE = "swap.json"
FORMAT_BY_SUFFIX = {".mp4": "mp4", ".avi": "avi", ".mov": "mov-alpha", ".webm": "webm-alpha"}
DEFAULT_MINUTES = 30.0


def _presets() -> tuple[str, ...]:
    from facelab.meshswap.options import FAMILY as MESHSWAP
    from facelab.train.models import PRESETS

    return (*PRESETS, MESHSWAP)


@dataclass
class SwapOptions:
    """The whole job; checked on construction (the merge options included)."""

    src: Path  # a video, or a folder of images
    dst: Path  # a video
    output: Path = option(short="-o", help="The result video (.mp4, .avi, .mov or .webm); it "
                          "keeps dst's frame rate and audio.")
    more_src: tuple[Path, ...] = ()  # more videos of the src person (data_src_2.*, …)
    model_name: str = "swap"
    preset: str = option("meshswap", choices=_presets,
                         help="The model (see `train --help`): meshswap shows src's own faces "
                         "moved onto dst's (ready at once, the best measured on a CPU: "
                         "docs/MESHSWAP.md); the others are DeepFaceLab's autoencoders, "
                         "which train for hours.")
    overrides: dict[str, Any] = field(default_factory=dict)  # model options of a new model
    batch_size: int | None = option(None, range=(1, None),
                                    help="Faces per side per iteration (default: the model's).")
    iterations: int | None = option(None, range=(1, None), help="Train until this iteration.")
    minutes: float | None = option(
        None, above=0, help=f"Train this many minutes in all (default {DEFAULT_MINUTES:g}; an "
        "autoencoder's good result takes hours; meshswap without --refiner needs none).")
    merge: MergeOptions = option(default_factory=MergeOptions, help="How faces are merged.")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N.")
    precision: str = option("auto", choices=PRECISIONS,
                            help="Of training and merging; auto measures which is faster.")
    lr: float | None = None  # Adam's learning rate (None: the trainer's 5e-5)
    src_fps: float | None = option(None, above=0,
                                   help="Take src frames at this rate (default: all).")
    preview_every: int = 100

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> SwapOptions:
        """Raise FacelabError naming the first bad option; return self."""
        check_options(self)
        self.merge.validate()
        if self.output.suffix.lower() not in FORMAT_BY_SUFFIX:
            raise FacelabError(f"The output must end in {', '.join(FORMAT_BY_SUFFIX)}, "
                               f"not {self.output.name!r}.")
        if self.iterations is not None and self.minutes is not None:
            raise FacelabError("Give --iterations or --minutes, not both.")
        return self


@dataclass
class SwapReport:
    workspace: Path
    output: Path
    faces: list[FaceExtractReport] = field(default_factory=list)
    iteration: int = 0
    trained_minutes: float = 0.0
    merged_frames: int = 0
    assembled: AssembleReport | None = None  # None: merged straight into the video
    preview: Path | None = None
    merged_to: Path | None = None  # merged/ or the result video
    joined: bool = True  # streamed: the result was written now (False: up to date)


def _place_input(ws: Workspace, side: str, source: Path) -> list[Path] | None:
    """Copy a video in as data_<side>.<ext> (or, for src, a folder of images into
    data_src/); None for an image folder. A different file already there is an error."""
    if not source.exists():
        raise FacelabError(f"{source} does not exist.")
    if source.is_dir():
        if side != "src":
            raise FacelabError(f"dst must be a video, not the folder {source}.")
        images = list_images(source)
        if not images:
            raise FacelabError(f"{source} holds no images.")
        frames = ws.frames_dir("src")
        frames.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images, 1):
            target = frames / f"{i:05d}{image.suffix.lower()}"
            if not target.exists():
                shutil.copyfile(image, target)
        return None
    existing = sorted(p for p in ws.root.glob(f"data_{side}.*") if p.is_file())
    target = ws.root / f"data_{side}{source.suffix.lower()}"
    if existing:
        if existing[0].stat().st_size != source.stat().st_size:
            raise FacelabError(f"{ws.root} already holds another {existing[0].name}: use a "
                               "new workspace (-w) for another pair of videos.")
        return [existing[0]]
    shutil.copyfile(source, target)
    return [target]


def _train(ws: Workspace, opts: SwapOptions, reporter: Reporter,
           stop: threading.Event | None) -> tuple[int, float, Path | None]:
    """Train toward the budget; returns (iteration, minutes trained in all, preview)."""
    from facelab.train import checkpoint
    from facelab.train.saved import peek
    from facelab.train.trainer import TrainOptions, train

    state_path = ws.root / STATE
    try:
        state = read_json(state_path)
    except (OSError, ValueError):
        state = {}
    spent = float(state.get("train_seconds", 0.0))
    budget = None if opts.iterations is not None else (opts.minutes or DEFAULT_MINUTES) * 60
    exists = checkpoint.exists(ws.model_dir, opts.model_name)
    doc = peek(ws.model_dir, opts.model_name) if exists else None
    it = int(doc["state"]["iteration"]) if doc else 0
    if (opts.iterations is not None and it >= opts.iterations) or (
            budget is not None and spent >= budget):
        reporter.info(f"Training done earlier (iteration {it}); skipping.")
        return it, spent / 60, None
    timer_stop = stop or threading.Event()
    expired = threading.Event()

    def time_up() -> None:
        expired.set()
        timer_stop.set()

    timer = None
    if budget is not None:
        timer = threading.Timer(budget - spent, time_up)
        timer.daemon = True
        timer.start()
    t0 = time.monotonic()
    try:
        rep = train(ws, TrainOptions(
            model_name=opts.model_name, preset=None if exists else opts.preset,
            overrides={} if exists else dict(opts.overrides), batch_size=opts.batch_size,
            target_iteration=opts.iterations or 0, device=opts.device,
            precision=opts.precision, preview_every=opts.preview_every,
            **({"lr": opts.lr} if opts.lr is not None else {}),
        ), reporter, timer_stop)
    finally:
        if timer is not None:
            timer.cancel()
        spent += time.monotonic() - t0
        write_json(state_path, {**state, "train_seconds": round(spent, 1)})
    if timer_stop.is_set() and not expired.is_set():
        raise FacelabError(f"Stopped while training (saved at iteration {rep.iteration}); "
                           "run the same command again to go on.")
    return rep.iteration, spent / 60, rep.preview


def run_swap(ws: Workspace, opts: SwapOptions, reporter: Reporter = NULL,
             stop: threading.Event | None = None) -> SwapReport:
    """Run every stage; see the module docstring."""
    fmt = FORMAT_BY_SUFFIX[opts.validate().output.suffix.lower()]
    ws.init()
    report = SwapReport(ws.root, opts.output)
    src_inputs = _place_input(ws, "src", opts.src)
    if opts.more_src and src_inputs is None:
        raise FacelabError("More src videos go with a src video, not an image folder.")
    for i, more in enumerate(opts.more_src, 2):
        target = ws.root / f"data_src_{i}{more.suffix.lower()}"
        if not more.is_file():
            raise FacelabError(f"{more} does not exist.")
        if more.resolve() != target.resolve() and not target.exists():
            shutil.copyfile(more, target)
        src_inputs = [*(src_inputs or []), target]
    dst_inputs = _place_input(ws, "dst", opts.dst)
    if src_inputs is not None:
        fps = None
        if opts.src_fps:
            from fractions import Fraction

            fps = Fraction(opts.src_fps).limit_denominator(1001)
        try:
            extract_frames(ws, "src", src_inputs, ExtractOptions(fps=fps), reporter)
        except PartialResult as e:  # src's readable frames are training material enough
            reporter.warn(str(e))
    extract_frames(ws, "dst", dst_inputs, reporter=reporter)
    for side in ("src", "dst"):
        faces = extract_faces(ws, side, reporter=reporter)  # type: ignore[arg-type]
        report.faces.append(faces)
        if faces.unreadable and side == "dst":  # merge needs every dst frame
            raise PartialResult(faces.unreadable_summary())
        if faces.unreadable:
            reporter.warn(faces.unreadable_summary())
    report.iteration, report.trained_minutes, report.preview = _train(ws, opts, reporter, stop)
    from facelab.merge.merger import merge
    from facelab.merge.stream import STREAMABLE, VideoOutput

    # dst kept in its video: merged straight into the result (no PNG per frame) where the
    # format allows; alpha formats go through merged PNGs and assemble
    streamed = kept_as_video(ws, "dst") and fmt in STREAMABLE
    merged = merge(ws, opts.model_name, opts.merge, reporter, device=opts.device,
                   precision=opts.precision, to_video=streamed,
                   video=VideoOutput(format=fmt, output=opts.output))
    report.merged_frames = merged.frames
    report.merged_to = merged.output or merged.out_dir
    report.joined = merged.joined
    if not streamed:
        report.assembled = assemble(ws, AssembleOptions(format=fmt, output=opts.output),
                                    reporter)
    _record_output(ws, opts.output)
    return report


def _record_output(ws: Workspace, output: Path) -> None:
    """Note in swap.json where the result went: relative to the workspace when inside it
    (a workspace can move), else absolute."""
    path = ws.root / STATE
    try:
        state = read_json(path)
    except (OSError, ValueError):
        state = {}
    target = output.resolve()
    try:
        where = str(target.relative_to(ws.root.resolve()))
    except ValueError:
        where = str(target)
    if state.get("output") != where:
        write_json(path, {**state, "output": where})


def recorded_output(ws: Workspace) -> Path | None:
    """The result the last `swap` in this workspace wrote, if swap.json names one."""
    try:
        where = read_json(ws.root / STATE).get("output")
    except (OSError, ValueError, AttributeError):
        return None
    return ws.root / where if isinstance(where, str) and where else None
