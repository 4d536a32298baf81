"""`facelab swap SRC DST -o OUT`: extract, train, merge and assemble in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from facelab.cli.common import command, state, stop_on_signals
from facelab.cli.merge_cmd import HELP as MERGE_HELP
from facelab.cli.ui import out
from facelab.errors import FacelabError
from facelab.merge.options import MergeOptions
from facelab.train.models import PRESETS
from facelab.workspace import Workspace

D = MergeOptions()


def register(app: typer.Typer) -> None:
    command(app, "swap")(swap_cmd)


def swap_cmd(
    src: Path = typer.Argument(..., help="The src person: a video, or a folder of images."),
    dst: Path = typer.Argument(..., help="The dst video whose face is replaced."),
    output: Path = typer.Option(..., "-o", "--output", help="The result video (.mp4, .avi, "
                                ".mov or .webm); it keeps dst's frame rate and audio."),
    preset: str = typer.Option("quick96", "--preset", help=f"Model: {'|'.join(PRESETS)}."),
    iterations: int | None = typer.Option(None, "--iterations", help="Train until this "
                                          "iteration.", show_default=False),
    minutes: float | None = typer.Option(None, "--minutes", help="Train this many minutes in "
                                         "all (default 30; a good result takes hours).",
                                         show_default=False),
    batch_size: int | None = typer.Option(None, "--batch-size", show_default=False,
                                          help="Faces per side per iteration."),
    src_fps: float | None = typer.Option(None, "--src-fps", show_default=False,
                                         help="Take src frames at this rate (default all)."),
    mode: str = typer.Option(D.mode, "--mode", help=MERGE_HELP["mode"]),
    mask: str = typer.Option(D.mask, "--mask", help=MERGE_HELP["mask"]),
    color: str = typer.Option(D.color, "--color", help=MERGE_HELP["color"]),
    erode: int = typer.Option(D.erode, "--erode", help=MERGE_HELP["erode"]),
    blur: int = typer.Option(D.blur, "--blur", help=MERGE_HELP["blur"]),
    face_scale: int = typer.Option(D.face_scale, "--face-scale", help=MERGE_HELP["face_scale"]),
    smooth: int = typer.Option(D.smooth, "--smooth", help=MERGE_HELP["smooth"]),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Swap SRC's face into DST in one go, in WORKSPACE (default ./workspace): extract
    frames and faces, train, merge, assemble. Run it again to go on where it stopped;
    every stage can also be rerun by hand. The result is marked as synthetic."""
    if iterations is not None and iterations < 1:
        raise FacelabError("--iterations must be 1 or more.")
    if minutes is not None and minutes <= 0:
        raise FacelabError("--minutes must be more than 0.")
    from facelab.swap import SwapOptions, run_swap

    st = state()
    ws = st.ws
    merge = MergeOptions(mode=mode, mask=mask, color=color, erode=erode, blur=blur,
                         face_scale=face_scale, smooth=smooth).validate()
    opts = SwapOptions(src=src, dst=dst, output=output, preset=preset, iterations=iterations,
                       minutes=minutes, batch_size=batch_size, merge=merge, device=device,
                       src_fps=src_fps)
    with stop_on_signals() as stop:
        rep = run_swap(ws, opts, st.reporter, stop)
    print_swap(rep, ws)


def print_swap(rep: object, ws: Workspace) -> None:
    """Where everything is, after a swap or the demo."""
    from facelab.swap import SwapReport

    assert isinstance(rep, SwapReport)
    out.print(f"[bold]Result: {rep.output}[/] (marked synthetic)")
    faces = ", ".join(f"{f.side} {f.faces_written} new" for f in rep.faces)
    out.print(f"  workspace {rep.workspace}: faces in data_src/aligned and data_dst/aligned "
              f"({faces})")
    out.print(f"  model {ws.model_dir}: iteration {rep.iteration}, "
              f"{rep.trained_minutes:.1f} min of training in all")
    if rep.preview is not None:
        out.print(f"  training preview: {rep.preview}")
    out.print(f"  merged frames: {ws.merged_dir} ({rep.merged_frames})")
    a = rep.assembled
    if a is not None and a.skipped:
        out.print("  video: up to date")
    elif a is not None:
        out.print(f"  video: {a.frames} frames at {a.fps} fps, audio: {a.audio or 'none'}")
