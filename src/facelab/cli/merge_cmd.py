"""`facelab merge`: the predicted faces blended into every dst frame."""

from __future__ import annotations

from typing import Any

import typer

from facelab.cli.common import command, state
from facelab.cli.options import build, flags, with_flags
from facelab.cli.ui import out
from facelab.lazy import lazy_module
from facelab.merge.options import MergeOptions

merger = lazy_module("facelab.merge.merger")  # PyTorch loads when a merge runs


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
    **given: Any,
) -> None:
    """Blend the model's src faces into every dst frame: data_dst/merged/<frame>.png. Frames
    without a face are copied, so the count matches. Every merged frame is marked as
    synthetic (metadata and an invisible watermark); then run `facelab video assemble`."""
    st = state()
    opts = build(MergeOptions, given)
    rep = merger.merge(st.ws, model_name, opts, st.reporter, device=device,
                       precision=precision, frames_spec=frames, debug=debug, force=force)
    skipped = f", {rep.skipped} already done" if rep.skipped else ""
    out.print(f"Merged {rep.merged_now} frame(s) ({rep.faces} face(s), "
              f"{rep.frames_without_face} frame(s) without a face{skipped}) with model "
              f"{rep.model_id} into {rep.out_dir}.")
