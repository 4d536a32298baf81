"""The demo: the whole swap on the bundled GRID clips (CC BY 4.0), in a few minutes.

Speaker A (two clips) is src, speaker B is dst. It runs `swap` with the meshswap family
(src's own faces moved onto dst's: no training, a couple of minutes on 2 CPU cores in all),
then writes a side-by-side image (dst | result) a person can open to judge the result.
Every stage is resumable, so a second run only does what is missing.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.fsutil import atomic_path
from facelab.merge.options import MergeOptions
from facelab.progress import NULL, Reporter
from facelab.provenance.credentials import sign_result_bytes
from facelab.provenance.credentials.result import workspace_signing
from facelab.provenance.mark import Mark
from facelab.provenance.png import png_bytes_with_mark
from facelab.provenance.watermark import mark_frame
from facelab.swap import SwapOptions, SwapReport, recorded_output, run_swap
from facelab.video.frames import DecodeState, decode_video, read_image, to_array
from facelab.video.probe import open_video
from facelab.video.source import open_frames
from facelab.workspace import Workspace, list_images

#: Bundled clip -> its name in the workspace.
CLIPS = {
    "speaker_a_1.mpg": "data_src.mpg",
    "speaker_a_2.mpg": "data_src_2.mpg",
    "speaker_b.mpg": "data_dst.mpg",
}
RESULT = "result.mp4"
SIDE_BY_SIDE = "side_by_side.png"
MODEL = "demo"
# meshswap: src's own faces moved onto dst's, no training (docs/MESHSWAP.md). On GRID A → B
# it is recognised as A in every frame, sharpness 0.90, expression correlation 0.96, where
# the demo's former 64-px SAE after 6 minutes blurred the face and did not blink
# (docs/BENCHMARKS.md, "meshswap").
PRESET = "meshswap"
OVERRIDES: dict[str, int] = {}
BATCH: int | None = None
LR: float | None = None
MINUTES = 6.0  # training budget, for a model that trains (meshswap with --refiner)


@dataclass
class DemoReport:
    swap: SwapReport
    side_by_side: Path
    copied: list[str] = field(default_factory=list)


def examples_dir() -> Path:
    """The bundled clips: $FACELAB_EXAMPLES, the source checkout's examples/, or ./examples."""
    candidates = [Path(os.environ["FACELAB_EXAMPLES"])] if "FACELAB_EXAMPLES" in os.environ \
        else []
    candidates += [Path(__file__).resolve().parents[2] / "examples", Path.cwd() / "examples"]
    for c in candidates:
        if all((c / name).is_file() for name in CLIPS):
            return c
    raise FacelabError("The demo clips are missing: run the demo from a facelab checkout "
                       "(examples/) or set FACELAB_EXAMPLES to their folder.")


def side_by_side(ws: Workspace, path: Path, rows: int = 3) -> Path:
    """dst | result for a few frames spread over the clip, one PNG, marked synthetic and
    carrying a C2PA manifest (signed last, over the mark and the watermark)."""
    dst = open_frames(ws, "dst")
    if not len(dst):
        raise FacelabError(f"{ws.frames_dir('dst')} holds no frames.")
    picks = [int(i) for i in np.linspace(0, len(dst) - 1, rows + 2)[1:-1]]
    results = _result_frames(ws, picks)
    lines = [np.hstack([dst.read(dst.names[i]), results[i][..., :3]]) for i in picks]
    dst.close()
    mark = Mark.synthetic(f"{MODEL} (demo side-by-side)")
    ok, data = cv2.imencode(".png", mark_frame(np.vstack(lines), mark))
    if not ok:
        raise FacelabError(f"Cannot encode {path}.")
    signed = sign_result_bytes(png_bytes_with_mark(data.tobytes(), mark), path.name,
                               workspace_signing(ws.root, mark))
    with atomic_path(path) as tmp:
        tmp.write_bytes(signed)
    return path


def _result_frames(ws: Workspace, picks: list[int]) -> dict[int, np.ndarray]:
    """The merged frames at positions `picks`: from merged/ when frames were written, else
    decoded from the result video the merge wrote."""
    merged = list_images(ws.merged_dir)
    if merged:
        return {i: read_image(merged[i]) for i in picks}
    result = recorded_output(ws)
    if result is None or not result.is_file():
        raise FacelabError(f"{ws.root} holds no merged frames nor a result video.")
    wanted, found = set(picks), {}
    with open_video(result) as container:
        for i, frame in enumerate(decode_video(container, DecodeState())):
            if i in wanted:
                found[i] = to_array(frame)
            if len(found) == len(wanted):
                break
    if len(found) != len(wanted):
        raise FacelabError(f"{result.name} holds fewer frames than dst.")
    return found


@contextmanager
def _one_thread_if_busy() -> Iterator[None]:
    """One PyTorch thread while the CPU is oversubscribed (load average ≥ cores).

    With other jobs on the machine, PyTorch's threads wait on each other at every operator
    (a descheduled thread stalls the rest): on a 2-core box at load 12–16 training ran 10×
    slower with 2 threads than with 1 (13.5 vs 1.0–1.4 s per iteration). On an idle machine
    the default (one per core) is kept.
    """
    import torch

    before = torch.get_num_threads()
    busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    if busy:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_demo(ws: Workspace, fresh: bool = False, reporter: Reporter = NULL,
             minutes: float = MINUTES, stop: threading.Event | None = None) -> DemoReport:
    opts = SwapOptions(src=ws.root / "data_src.mpg", more_src=(ws.root / "data_src_2.mpg",),
                       dst=ws.root / "data_dst.mpg",
                       output=ws.root / RESULT, model_name=MODEL, preset=PRESET,
                       overrides=dict(OVERRIDES), batch_size=BATCH, lr=LR, minutes=minutes,
                       merge=MergeOptions())  # checked before the workspace is touched
    source = examples_dir()
    if fresh and ws.root.is_dir():
        ws.clear()
    ws.init()
    copied = []
    for clip, name in CLIPS.items():
        if not (ws.root / name).exists():
            shutil.copyfile(source / clip, ws.root / name)
            copied.append(name)
    with _one_thread_if_busy():
        rep = run_swap(ws, opts, reporter, stop)
    return DemoReport(rep, side_by_side(ws, ws.root / SIDE_BY_SIDE), copied)
