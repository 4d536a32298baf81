"""`facelab swap SRC DST -o OUT`: extract, train, merge and assemble in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from facelab.cli.common import command, state, stop_on_signals
from facelab.cli.options import build, flags, with_flags
from facelab.cli.ui import out
from facelab.swap import SwapOptions
from facelab.workspace import Workspace


def register(app: typer.Typer) -> None:
    command(app, "swap")(swap_cmd)


@with_flags(flags(SwapOptions))
def swap_cmd(
    src: Path = typer.Argument(..., help="The src person: a video, or a folder of images."),
    dst: Path = typer.Argument(..., help="The dst video whose face is replaced."),
    **given: Any,
) -> None:
    """Swap SRC's face into DST in one go, in WORKSPACE (default ./workspace): extract
    frames and faces, train, merge, assemble. Run it again to go on where it stopped;
    every stage can also be rerun by hand. The result is marked as synthetic."""
    from facelab.swap import run_swap

    st = state()
    opts = build(SwapOptions, given, src=src, dst=dst)
    with stop_on_signals() as stop:
        rep = run_swap(st.ws, opts, st.reporter, stop)
    print_swap(rep, st.ws)


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
    if rep.assembled is None:
        out.print(f"  merged {rep.merged_frames} frames straight into the video "
                  f"(segments in {ws.frames_dir('dst') / 'merged_video'})")
        if not rep.joined:
            out.print("  video: up to date")
    else:
        out.print(f"  merged frames: {ws.merged_dir} ({rep.merged_frames})")
    a = rep.assembled
    if a is not None and a.skipped:
        out.print("  video: up to date")
    elif a is not None:
        out.print(f"  video: {a.frames} frames at {a.fps} fps, audio: {a.audio or 'none'}")
