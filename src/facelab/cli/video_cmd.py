"""`facelab video extract|cut|denoise|assemble`: the first and the last stage."""

from fractions import Fraction
from pathlib import Path

import typer

from facelab.cli.common import command, state
from facelab.cli.ui import out
from facelab.errors import FacelabError
from facelab.video.extract import ExtractOptions, extract_frames
from facelab.workspace import Side

app = typer.Typer(
    help="Video in, frames out (extract, cut, denoise); merged frames in, video out (assemble).",
    no_args_is_help=True,
)


def _rate(text: str | None) -> Fraction | None:
    if text is None:
        return None
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise FacelabError(f"--fps {text!r} is not a number (e.g. 5, 12.5 or 24000/1001).") from None
    if rate <= 0:
        raise FacelabError("--fps must be above 0.")
    return rate


@command(app, "extract")
def extract(
    side: Side = typer.Argument(..., help="src (the face to use) or dst (the video to change)."),
    fps: str | None = typer.Option(None, "--fps", help="src only: frames per second to "
                                   "keep (default: every frame). dst always keeps every frame."),
    fmt: str = typer.Option("png", "--format", help="png (lossless, ~10x bigger) or jpg."),
    inputs: list[Path] | None = typer.Option(None, "--input", "-i", help="Video to read "
                                             "instead of WORKSPACE/data_<side>.*; src: repeat "
                                             "to add several clips of the same person."),
    force: bool = typer.Option(False, "--force", help="Extract again; old frames move to "
                               "WORKSPACE/.trash/."),
) -> None:
    """Write the frames of data_src.* / data_dst.* as numbered images (00001.png, ...) into
    data_src/ or data_dst/. Reruns skip what is done."""
    if fmt not in ("png", "jpg"):
        raise FacelabError(f"--format {fmt!r}: choose png or jpg.")
    st = state()
    opts = ExtractOptions(fps=_rate(fps), fmt=fmt, force=force)  # type: ignore[arg-type]
    rep = extract_frames(st.ws, side, inputs or None, opts, st.reporter)
    if rep.trashed_to:
        out.print(f"Old frames moved to {rep.trashed_to}.")
    skipped = f" (skipped, already done: {', '.join(rep.inputs_skipped)})" \
        if rep.inputs_skipped else ""
    out.print(f"{side}: {rep.frames_total} frames in {rep.out_dir}"
              f" ({rep.frames_written} written now){skipped}.")
