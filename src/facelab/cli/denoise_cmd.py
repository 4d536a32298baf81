"""`facelab video denoise dst`: edge-preserving denoise of the dst frames, undoable."""

import typer

from facelab.cli.common import command, state
from facelab.cli.ui import out
from facelab.errors import FacelabError
from facelab.video.denoise import (
    DEFAULT_FACTOR,
    MAX_FACTOR,
    MIN_FACTOR,
    ORIGINALS,
    DenoiseReport,
    denoise_frames,
    undo_denoise,
)


def register(app: typer.Typer) -> None:
    command(app, "denoise")(denoise)


def denoise(
    side: str = typer.Argument(..., help="dst (only the video being changed is denoised)."),
    factor: int | None = typer.Option(None, "--factor", help=f"Strength {MIN_FACTOR}-"
                                      f"{MAX_FACTOR}, like DeepFaceLab's (default "
                                      f"{DEFAULT_FACTOR}); higher removes stronger noise."),
    undo: bool = typer.Option(False, "--undo", help="Put the original frames back (the "
                              "denoised ones move to WORKSPACE/.trash/)."),
    force: bool = typer.Option(False, "--force", help="Denoise again even if already done "
                               "at this factor."),
) -> None:
    """Reduce noise in the dst frames (data_dst/00001.png, ...) before extracting faces,
    keeping edges sharp. The originals move to data_dst/denoise_originals/; a rerun with
    another factor starts from them, and --undo restores them."""
    st = state()
    if undo:
        if factor is not None or force:
            raise FacelabError("--undo takes neither --factor nor --force.")
        rep = undo_denoise(st.ws, side, st.reporter)
        where = f"; the denoised frames moved to {rep.trashed_to}" if rep.restored else ""
        out.print(f"Restored {rep.restored} original dst frames{where}.", soft_wrap=True,
                  markup=False)
        return
    rep = denoise_frames(st.ws, side, DEFAULT_FACTOR if factor is None else factor, force,
                         st.reporter)
    out.print(summary(rep), soft_wrap=True, markup=False)


def summary(rep: DenoiseReport) -> str:
    """One line: what was done, at which factor, where the originals are."""
    if rep.skipped:
        return (f"dst: {rep.frames_total} frames already denoised at factor {rep.factor}; "
                "--force redoes it.")
    resumed = f", {rep.frames_resumed} finished by the interrupted run" \
        if rep.frames_resumed else ""
    return (f"dst: denoised {rep.frames_denoised} of {rep.frames_total} frames at factor "
            f"{rep.factor}{resumed}; originals in data_dst/{ORIGINALS}/ (--undo restores "
            "them).")
