"""The root `facelab` command: common options, sub-command groups, entry point.

Help is Click's plain layout through `helpformat.HelpFormatter` (`rich_markup_mode=None`,
set here once for every command): it reads at 80 columns and when piped; see helpformat.
"""

from pathlib import Path

import typer

from facelab import __version__
from facelab.cli import (
    credentials_cmd,
    demo_cmd,
    eval_cmd,
    faces_cmd,
    faceset_cmd,
    helpformat,
    mask_cmd,
    merge_cmd,
    studio_cmd,
    swap_cmd,
    train_cmd,
    verify_cmd,
    video_cmd,
    workspace_cmd,
)
from facelab.cli.common import (
    CONSENT,
    State,
    quiet_option,
    root_state,
    verbose_option,
    workspace_option,
)

app = typer.Typer(
    name="facelab",
    help=(
        "Replace the face of the person in a dst video with the face of a src person, "
        "DeepFaceLab's way: extract frames and aligned faces from the src and dst videos, "
        "curate the facesets, train a model on the pair, merge the predicted faces into "
        "every dst frame, assemble the merged frames into a video with dst's audio.\n\n"
        f"{CONSENT}"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # Click's layout (helpformat), for every command and group
    context_settings={"help_option_names": ["-h", "--help"]},
)
helpformat.install()
app.add_typer(workspace_cmd.app, name="workspace")
app.add_typer(video_cmd.app, name="video")
app.add_typer(credentials_cmd.app, name="credentials")
faces_cmd.register(app)
faceset_cmd.register(app)
demo_cmd.register(app)
train_cmd.register(app)
merge_cmd.register(app)
swap_cmd.register(app)
verify_cmd.register(app)
eval_cmd.register(app)
studio_cmd.register(app)
mask_cmd.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facelab {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    workspace: Path | None = workspace_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    st: State = root_state(ctx)
    st.workspace, st.quiet, st.verbose = workspace, quiet, verbose


def main() -> None:
    app()
