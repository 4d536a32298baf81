"""`facelab video extract|cut|denoise|assemble`: the first and the last stage."""

from fractions import Fraction
from pathlib import Path

import typer

from facelab.cli import cut_cmd, denoise_cmd
from facelab.cli.common import command, group, state
from facelab.cli.ui import out
from facelab.cluster.stages import CLUSTER_HELP
from facelab.errors import FacelabError
from facelab.video.assemble import AssembleOptions, assemble
from facelab.video.extract import ExtractOptions, extract_frames
from facelab.workspace import Side

app = group(
    help="Video in, frames out (extract, cut, denoise); merged frames in, video out (assemble)."
)


def _rate(text: str | None) -> Fraction | None:
    if text is None:
        return None
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        msg = f"--fps {text!r} is not a number (e.g. 5, 12.5 or 24000/1001)."
        raise FacelabError(msg) from None
    if rate <= 0:
        raise FacelabError("--fps must be above 0.")
    return rate


@command(app, "extract")
def extract(
    side: Side = typer.Argument(..., help="src (the face to use) or dst (the video to change)."),
    fps: str | None = typer.Option(None, "--fps", help="src only: frames per second to "
                                   "keep (default: every frame). dst always keeps every frame."),
    fmt: str | None = typer.Option(None, "--frames", help="video: keep the frames in the "
                                   "video, read by number when needed (default for dst: no "
                                   "image files); png (lossless, default for src) or jpg: "
                                   "write numbered images, to edit by hand. A rerun keeps "
                                   "the first run's choice."),
    old_fmt: str | None = typer.Option(None, "--format", hidden=True),
    inputs: list[Path] | None = typer.Option(None, "--input", "-i", help="Video to read "
                                             "instead of WORKSPACE/data_<side>.*; src: repeat "
                                             "to add several clips of the same person."),
    force: bool = typer.Option(False, "--force", help="Extract again; old frames move to "
                               "WORKSPACE/.trash/."),
    cluster: str | None = typer.Option(None, "--cluster", help=CLUSTER_HELP + " With "
                                       "--frames png|jpg: the workers decode the video's "
                                       "pieces and write the images."),
) -> None:
    """Make the frames of data_src.* / data_dst.* ready for the next stages: dst stays in its
    video (every frame's place recorded in data_dst/frames_index.json) unless --frames png
    or jpg asks for numbered images (00001.png, ...) in data_dst/; src frames are written as
    images in data_src/. Reruns skip what is done."""
    fmt = fmt or old_fmt
    if fmt not in (None, "video", "png", "jpg"):
        raise FacelabError(f"--frames {fmt!r}: choose video, png or jpg.")
    st = state()
    opts = ExtractOptions(fps=_rate(fps), fmt=fmt, force=force,  # type: ignore[arg-type]
                          cluster=cluster)
    rep = extract_frames(st.ws, side, inputs or None, opts, st.reporter)
    if rep.trashed_to:
        out.print(f"Old frames moved to {rep.trashed_to}.")
    skipped = f" (skipped, already done: {', '.join(rep.inputs_skipped)})" \
        if rep.inputs_skipped else ""
    if rep.kept_in_video:
        out.print(f"{side}: {rep.frames_total} frames, kept in {rep.kept_in_video.name} "
                  f"(indexed in {rep.out_dir}){skipped}.")
    else:
        out.print(f"{side}: {rep.frames_total} frames in {rep.out_dir}"
                  f" ({rep.frames_written} written now){skipped}.")


@command(app, "assemble")
def assemble_cmd(
    fmt: str = typer.Option("mp4", "--format", "-f", help="mp4 (H.264), avi (MPEG-4), "
                            "mp4-lossless (H.264 RGB, bit-exact), mov-alpha (PNG in MOV, "
                            "alpha), webm-alpha (VP9 with alpha)."),
    crf: int | None = typer.Option(None, "--crf", help="Quality for mp4/webm-alpha: lower "
                                   "is better and bigger (defaults 18 / 20)."),
    bitrate: float | None = typer.Option(None, "--bitrate", help="Video bitrate in Mbit/s "
                                         "instead of --crf (avi default 16)."),
    frames: Path | None = typer.Option(None, "--frames", help="Folder of frames to assemble "
                                       "(default: WORKSPACE/data_dst/merged)."),
    masks: Path | None = typer.Option(None, "--masks", help="Alpha masks for the alpha "
                                      "formats (default: WORKSPACE/data_dst/merged_mask)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output file "
                                       "(default: WORKSPACE/result.<ext>)."),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="Carry dst's audio over "
                               "(copied where the container allows, else encoded once)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the result is newer "
                               "than every frame (the old result moves to the trash)."),
) -> None:
    """Turn the merged frames (data_dst/merged/) into WORKSPACE/result.<ext> with the dst
    video's frame rate, frame count and audio."""
    st = state()
    opts = AssembleOptions(format=fmt, crf=crf, bitrate_mbps=bitrate, frames_dir=frames,
                           mask_dir=masks, output=output, audio=audio, force=force)
    rep = assemble(st.ws, opts, st.reporter)
    if rep.skipped:
        out.print(f"{rep.output} is up to date (newer than every frame, same settings); "
                  "--force rebuilds it.")
        return
    sound = rep.audio or "no audio"
    alpha = f", alpha from {rep.alpha_source}" if rep.alpha_source else ""
    out.print(f"Wrote {rep.output}: {rep.frames} frames, {rep.width}×{rep.height}, "
              f"{rep.fps} fps, audio: {sound}{alpha}.")


cut_cmd.register(app)
denoise_cmd.register(app)
