"""`facelab eval`: measured quality of a swap (identity, pose, expression, jitter,
sharpness, untouched background, face PSNR/SSIM against dst, occluders kept in front),
a short table, eval.json and an HTML report."""

from __future__ import annotations

from pathlib import Path

import typer

from facelab.cli.common import command, state
from facelab.cli.ui import out
from facelab.lazy import lazy_module

run = lazy_module("facelab.eval.run")  # OpenCV, dlib and the extractor load when eval runs
report = lazy_module("facelab.eval.report")


def register(app: typer.Typer) -> None:
    command(app, "eval")(eval_cmd)


def eval_cmd(
    result: Path | None = typer.Option(None, "--result", show_default=False, help=(
        "The swapped video, or a folder of merged frames (default: the workspace's "
        "newest result: result.*, or the output `swap -o` recorded).")),
    src: Path | None = typer.Option(None, "--src", show_default=False, help=(
        "src's faces: a folder of aligned faces or images, or a video (default: "
        "data_src/aligned).")),
    dst: Path | None = typer.Option(None, "--dst", show_default=False, help=(
        "The original dst video or folder of frames (default: the workspace's data_dst.*).")),
    gallery: Path | None = typer.Option(None, "--gallery", show_default=False, help=(
        "More people for top-1 retrieval: each video or folder of faces in it is one.")),
    out_json: Path | None = typer.Option(None, "--out", show_default=False, help=(
        "Where eval.json goes (default: the workspace, or beside --result).")),
    report_html: Path | None = typer.Option(None, "--report", show_default=False, help=(
        "Where the HTML report goes (default: eval.html beside eval.json's default).")),
    identity_every: int = typer.Option(1, "--identity-every", min=1, help=(
        "Measure identity on every n-th frame only (≈ 0.2 s per face on a CPU).")),
    identity_faces: int = typer.Option(32, "--identity-faces", min=1, help=(
        "Faces (spread over the set) that make src's and dst's identity.")),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, show_default=False,
                                          help="Only the first n frames."),
    occluders: Path | None = typer.Option(None, "--occluders", show_default=False, help=(
        "Occluder polygons of some dst frames, as JSON: tests/fixtures/segment/"
        "pexels_hand.json's format, or {\"frames\": [{\"frame\": I, \"occluders\": "
        "[POLYGON]}]} with polygons as lists of [x, y] frame pixels and I counted from 0. "
        "Measures the share of their pixels the result keeps as dst's own (1 = a hand "
        "stays in front of the new face).")),
) -> None:
    """Score a swap: is the face src's (and not a blur that merely looks closer to src),
    does it keep dst's pose and expression, does it shake or flicker, is it as sharp as the
    original, is the background untouched. Exit 2 when an input is missing or unreadable."""
    st = state()
    inputs = run.EvalInputs(result=result, src=src, dst=dst, out=out_json, report=report_html)
    opts = run.EvalOptions(identity_every=identity_every, max_frames=max_frames,
                           gallery=gallery, src_faces=identity_faces, dst_faces=identity_faces,
                           occluders=occluders)
    ev, used = run.run_eval(st.ws, inputs, opts, st.reporter)
    print_summary(ev.summary)
    out.print(f"  eval.json: {used.out}")
    out.print(f"  report: {used.report}")


def print_summary(s: dict) -> None:
    for key, label, goal in report.ROWS:
        v = s.get(key)
        if v is None and key in report.WORKSPACE_ROWS:
            continue
        text = "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
        verdict = report.verdict(key, v)
        goal_text = f"  (goal {goal[0]} {goal[1]:g}: {verdict})" if goal and verdict else ""
        out.print(f"{label:<44} {text:>9}{goal_text}", highlight=False)
