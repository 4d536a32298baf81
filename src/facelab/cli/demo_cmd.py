"""`facelab demo`: the whole swap on the bundled GRID clips, within 10 minutes on a CPU."""

from pathlib import Path

import typer

from facelab.cli.common import command, state, stop_on_signals
from facelab.cli.swap_cmd import print_swap
from facelab.cli.ui import out
from facelab.workspace import Workspace

DEMO_WORKSPACE = Path("demo_workspace")


def register(app: typer.Typer) -> None:
    command(app, "demo")(demo)


def demo(
    fresh: bool = typer.Option(False, "--fresh", help="Start from an empty workspace "
                               "(the old contents move to its .trash/)."),
    minutes: float | None = typer.Option(None, "--minutes", show_default=False,
                                         help="Training budget, for a model that trains "
                                         "(default 6 minutes; the demo's meshswap model "
                                         "needs none)."),
) -> None:
    """Swap GRID speaker A's face onto speaker B (the bundled clips, CC BY 4.0, see
    examples/README.md), in ./demo_workspace unless -w is given: extract, build the meshswap
    model (src's own faces, no training), merge, assemble result.mp4, and write
    side_by_side.png (dst | result)."""
    from facelab.demo import MINUTES, run_demo

    st = state()
    ws = Workspace(st.workspace) if st.workspace else Workspace(DEMO_WORKSPACE)
    with stop_on_signals() as stop:
        rep = run_demo(ws, fresh=fresh, reporter=st.reporter,
                       minutes=MINUTES if minutes is None else minutes, stop=stop)
    print_swap(rep.swap, ws)
    out.print(f"  side by side (dst | result): {rep.side_by_side}")
    out.print(f"Try other merge settings with `facelab merge -w {ws.root} --model-name demo` "
              "(see `facelab merge --help`), then `facelab video assemble` again.")
