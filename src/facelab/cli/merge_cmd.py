"""`facelab merge`: the predicted faces blended into every dst frame."""

from __future__ import annotations

import typer

from facelab.cli.common import command, state
from facelab.cli.ui import out
from facelab.lazy import lazy_module
from facelab.merge.options import COLORS, MASK_MODES, MODES, MergeOptions

merger = lazy_module("facelab.merge.merger")  # PyTorch loads when a merge runs
D = MergeOptions()

HELP = {
    "mode": "How the face is blended: overlay (paste through the mask), hist-match and "
            "hist-match-bw (match dst's histograms first), seamless (Poisson blending, the "
            "default), seamless-hist-match, raw (the face and its mask only, RGBA, for "
            "compositing in an editor).",
    "mask": "Which mask cuts the face out: learned (the model's), dst (hull of dst's "
            "landmarks), prd (hull of a face mesh fitted to the predicted face: no packaged "
            "face segmenter exists, so hands or hair in front of the face are not cut out), "
            "or a product of them.",
    "masked_hist_match": "Histogram matching uses only the pixels inside the mask.",
    "hist_threshold": "Histogram match threshold 0..255: lower suppresses artefacts from "
                      "extreme tones.",
    "erode": "Shrink (positive) or grow (negative) the mask, relative to the face size.",
    "blur": "Feather the mask edge, relative to the face size.",
    "face_scale": "Draw the face this many percent larger (or smaller if negative).",
    "color": "Colour transfer of the predicted face toward the dst face, inside the mask: "
             "rct (Reinhard, the default), lct, mkl, idt, sot or none.",
    "degrade": "Bicubic degradation of the predicted face 0..100 (to match a soft dst).",
    "color_degrade": "Reduce the colours of the merged face 0..100.",
    "super_resolution": "Restore the face's detail with an enhancer before blending "
                        "(see docs/ENHANCE.md for the choices and their cost); none is off.",
    "smooth": "Temporal smoothing of the face's placement 0..10 (0: off), so the face does "
              "not jitter where the detector did.",
    "export_alpha": "Also write data_dst/merged_mask/ and RGBA frames (alpha = the face), "
                    "for `video assemble --format mov-alpha|webm-alpha`.",
}


def register(app: typer.Typer) -> None:
    command(app, "merge")(merge_cmd)


def merge_cmd(
    model_name: str = typer.Option(..., "--model-name", help="The trained model in "
                                   "WORKSPACE/model/."),
    mode: str = typer.Option(D.mode, "--mode", help=HELP["mode"] + f" ({'|'.join(MODES)})"),
    mask: str = typer.Option(D.mask, "--mask", help=HELP["mask"] + f" ({'|'.join(MASK_MODES)})"),
    masked_hist_match: bool = typer.Option(D.masked_hist_match,
                                           "--masked-hist-match/--no-masked-hist-match",
                                           help=HELP["masked_hist_match"]),
    hist_threshold: int = typer.Option(D.hist_threshold, "--hist-threshold",
                                       help=HELP["hist_threshold"]),
    erode: int = typer.Option(D.erode, "--erode", help=HELP["erode"] + " −200..200."),
    blur: int = typer.Option(D.blur, "--blur", help=HELP["blur"] + " −200..200."),
    face_scale: int = typer.Option(D.face_scale, "--face-scale", help=HELP["face_scale"]),
    color: str = typer.Option(D.color, "--color", help=HELP["color"] + f" ({'|'.join(COLORS)})"),
    degrade: int = typer.Option(D.degrade, "--degrade", help=HELP["degrade"]),
    color_degrade: int = typer.Option(D.color_degrade, "--color-degrade",
                                      help=HELP["color_degrade"]),
    super_resolution: str = typer.Option(D.super_resolution, "--super-resolution",
                                         help=HELP["super_resolution"]),
    smooth: int = typer.Option(D.smooth, "--smooth", help=HELP["smooth"]),
    export_alpha: bool = typer.Option(False, "--export-alpha", help=HELP["export_alpha"]),
    debug: bool = typer.Option(False, "--debug", help="Also write data_dst/merged_debug/: "
                               "dst | prediction | mask | result for each face."),
    frames: str | None = typer.Option(None, "--frames", help="Only these frame numbers, "
                                      "e.g. 10-20, to try settings quickly."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="The prediction's: auto (bf16 "
                                  "where this CPU measured it faster, cached; bf16/fp16 on a "
                                  "GPU), fp32 (exact), bf16 or fp16."),
) -> None:
    """Blend the model's src faces into every dst frame: data_dst/merged/<frame>.png. Frames
    without a face are copied, so the count matches. Every merged frame is marked as
    synthetic (metadata and an invisible watermark); then run `facelab video assemble`."""
    st = state()
    opts = MergeOptions(
        mode=mode, mask=mask, masked_hist_match=masked_hist_match,
        hist_threshold=hist_threshold, erode=erode, blur=blur, face_scale=face_scale,
        color=color, degrade=degrade, color_degrade=color_degrade,
        super_resolution=super_resolution, smooth=smooth, export_alpha=export_alpha,
    ).validate()
    rep = merger.merge(st.ws, model_name, opts, st.reporter, device=device, precision=precision,
                       frames_spec=frames, debug=debug)
    skipped = f", {rep.skipped} already done" if rep.skipped else ""
    out.print(f"Merged {rep.merged_now} frame(s) ({rep.faces} face(s), "
              f"{rep.frames_without_face} frame(s) without a face{skipped}) with model "
              f"{rep.model_id} into {rep.out_dir}.")
