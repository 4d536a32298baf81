"""`facelab merge`: the predicted faces blended into every dst frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from facelab.cli.common import command, state
from facelab.cli.options import build, flags, with_flags
from facelab.cli.ui import out
from facelab.cluster.stages import CLUSTER_HELP
from facelab.lazy import lazy_module
from facelab.merge.options import MergeOptions

merger = lazy_module("facelab.merge.merger")  # PyTorch loads when a merge runs
stream = lazy_module("facelab.merge.stream")


def register(app: typer.Typer) -> None:
    command(app, "merge")(merge_cmd)


@with_flags(flags(MergeOptions))
def merge_cmd(
    model_name: str = typer.Option(..., "--model-name", help="The trained model in "
                                   "WORKSPACE/model/."),
    debug: bool = typer.Option(False, "--debug", help="Also write data_dst/merged_debug/: "
                               "dst | prediction | mask | result for each face."),
    frames: str | None = typer.Option(None, "--frames", help="Only these frame numbers, "
                                      "e.g. 10-20, to try settings quickly."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="The prediction's: auto (bf16 "
                                  "where this CPU measured it faster, cached; bf16/fp16 on a "
                                  "GPU), fp32 (exact), bf16 or fp16."),
    force: bool = typer.Option(False, "--force", help="Merge every frame again (those of "
                               "--frames when given), also those already made with this model "
                               "and these options."),
    to_video: bool | None = typer.Option(
        None, "--to-video/--to-frames", help="--to-video: encode the result video (with "
        "dst's audio) as frames are merged, no PNG per frame, resumable by segments; the "
        "default when dst was kept in its video. --to-frames: write data_dst/merged/*.png "
        "(and alpha) for compositing, then `facelab video assemble`."),
    video_format: str = typer.Option("mp4", "--video-format", help="--to-video: mp4 "
                                     "(H.264), mp4-lossless (frames bit for bit) or avi; "
                                     "alpha formats need --to-frames."),
    crf: int | None = typer.Option(None, "--crf", help="--to-video: quality (0–51, lower "
                                   "is better; default 18)."),
    preset: str = typer.Option("veryfast", "--preset", help="--to-video: x264's speed "
                               "against size, ultrafast to veryslow (veryfast: 2.4× less CPU "
                               "than medium, files within a few %)."),
    output: Path | None = typer.Option(None, "--output", help="--to-video: the result file "
                                       "(default WORKSPACE/result.mp4)."),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="--to-video: keep dst's "
                               "audio."),
    ignore_ranges: bool = typer.Option(False, "--ignore-ranges", help="Merge every frame "
                                       "with these options, also those of the frame ranges "
                                       "given their own in the studio (data_dst/merge.json)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes merging "
                                       "(the cores shared among them); default: the split "
                                       "measured fastest on this machine for this model, "
                                       "cached."),
    cluster: str | None = typer.Option(None, "--cluster", help=CLUSTER_HELP,
                                       show_default=False),
    **given: Any,
) -> None:
    """Blend the model's src faces into every dst frame, straight into the result video
    (--to-video, the default when dst was kept in its video) or as
    data_dst/merged/<frame>.png (--to-frames; then run `facelab video assemble`). Frames
    without a face are kept as they are, so the count matches. Every merged frame is marked
    as synthetic (metadata and an invisible watermark). Frame ranges given their own
    options in `facelab studio`'s merge page (kept in data_dst/merge.json) are merged with
    them; a rerun remakes only what changed."""
    st = state()
    opts = build(MergeOptions, given)
    video = stream.VideoOutput(format=video_format, crf=crf, output=output, audio=audio,
                               preset=preset)
    rep = merger.merge(st.ws, model_name, opts, st.reporter, device=device,
                       precision=precision, frames_spec=frames, debug=debug, force=force,
                       to_video=to_video, video=video, workers=workers,
                       ignore_ranges=ignore_ranges, cluster=cluster)
    skipped = f", {rep.skipped} already done" if rep.skipped else ""
    into = rep.output if rep.output is not None else rep.out_dir
    out.print(f"Merged {rep.merged_now} frame(s) ({rep.faces} face(s), "
              f"{rep.frames_without_face} frame(s) without a face{skipped}) with model "
              f"{rep.model_id} into {into}.")
    if rep.ranged:
        out.print(f"{rep.ranged} frame(s) took their options from the frame ranges in "
                  "data_dst/merge.json (set in the studio; --ignore-ranges to leave them).")
    if rep.output is not None and not rep.joined:
        out.print(f"{rep.output} is up to date (joined from these segments, same settings).")
