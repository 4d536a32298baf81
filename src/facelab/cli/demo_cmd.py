"""`facelab demo`: the whole workflow, as far as it is built, on the bundled GRID clips."""

from pathlib import Path

import typer

from facelab.cli.common import command, state
from facelab.cli.ui import out
from facelab.demo import run_demo
from facelab.workspace import Workspace

DEMO_WORKSPACE = Path("demo_workspace")


def register(app: typer.Typer) -> None:
    command(app, "demo")(demo)


def demo(fresh: bool = typer.Option(False, "--fresh", help="Start from an empty workspace "
                                    "(the old contents move to its .trash/).")) -> None:
    """Run every stage built so far on the bundled GRID clips (speaker A as src, speaker B
    as dst; CC BY 4.0, see examples/README.md), in ./demo_workspace unless -w is given."""
    st = state()
    ws = Workspace(st.workspace) if st.workspace else Workspace(DEMO_WORKSPACE)
    rep = run_demo(ws, fresh=fresh, reporter=st.reporter)
    out.print(f"[bold]Demo workspace: {rep.workspace}[/]")
    if rep.copied:
        out.print(f"  copied the example clips in as {', '.join(rep.copied)}")
    for ex in rep.extracted:
        out.print(f"  {ex.side} frames: {ex.frames_total} in {ex.out_dir}")
    for f in rep.faces:
        debug = (f"; debug frames in {ws.aligned_debug_dir(f.side)}"
                 if f.side == "dst" else "")
        out.print(f"  {f.side} faces: {f.faces_written} written now, in "
                  f"{ws.aligned_dir(f.side)}{debug}")
    a = rep.assembled
    if a is not None:
        if a.skipped:
            out.print(f"  video round trip (up to date): {a.output}")
        else:
            out.print(f"  video round trip: {a.output} — {a.frames} frames, {a.fps} fps, "
                      f"audio: {a.audio or 'none'}")
    out.print("Training and merging land in later releases; "
              "`facelab workspace info -w " f"{rep.workspace}` shows everything.")
