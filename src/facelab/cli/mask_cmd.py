"""`facelab mask train|apply|remove|worst`: a side's own segmenter, fine-tuned on the faces
whose polygons were drawn in the studio (XSeg's workflow), and the masks it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from facelab.cli.common import command, group, state
from facelab.cli.options import build, flags, with_flags
from facelab.cli.ui import out
from facelab.lazy import lazy_module
from facelab.segment.options import MaskTrainOptions

person = lazy_module("facelab.segment.person")  # PyTorch loads when a command runs

app = group(
    "Face masks that leave out hands, hair and glasses: fine-tune the segmenter on the faces "
    "whose mask polygons you drew in the studio (train), write every face's mask (apply), "
    "clear them (remove), list the faces to label next (worst).")


def _side() -> Any:
    return typer.Argument(..., help="src or dst.", show_default=False)


def _worst_lines(worst: list[tuple[Path, float]], side: str) -> None:
    if not worst:
        return
    out.print(f"Least sure of (label these next; sheet: segmenter/{side}_worst.jpg):",
              highlight=False)
    for p, conf in worst:
        out.print(f"  {p.parent.name}/{p.name}  confidence {conf:.3f}", highlight=False)


@command(app, "train")
@with_flags(flags(MaskTrainOptions))
def train(side: str = _side(), **given: Any) -> None:
    """Fine-tune the side's segmenter on its faces that carry mask polygons (aligned/ and
    aligned_confirmed/; skipped faces never), starting from its own network when one
    exists, else from the generic one. Saved to WORKSPACE/segmenter/<side>.*; then run
    `facelab mask apply`."""
    st = state()
    res = person.train(st.ws, side, build(MaskTrainOptions, given), st.reporter)
    where = "held-out" if res.held_out else "training"
    out.print(f"Fine-tuned the {side} segmenter from the {res.base} network on "
              f"{len(res.faces)} faces: {res.steps} steps, {res.cpu_seconds:.0f} CPU s; IoU "
              f"with the polygons on the {len(res.held_out) or len(res.faces)} {where} faces "
              f"{res.before:.3f} → {res.after:.3f}.", highlight=False)
    _worst_lines(res.worst, side)


@command(app, "apply")
def apply(side: str = _side(),
          redo: bool = typer.Option(False, "--redo", help="Write every mask again, also "
                                    "those this network already wrote.")) -> None:
    """Write every face's mask (aligned, confirmed and skipped faces) from the side's
    segmenter (its own, else the generic one) into the face's metadata, where training
    (masked loss) and the studio read it. Resumes where an interrupted run stopped."""
    st = state()
    res = person.apply(st.ws, side, st.reporter, redo)
    kept = f", {res.up_to_date} already up to date" if res.up_to_date else ""
    out.print(f"Wrote the masks of {res.written} data_{side} faces with the {res.source} "
              f"segmenter{kept}.", highlight=False)


@command(app, "remove")
def remove(side: str = _side()) -> None:
    """Clear every face's mask (the polygons you drew stay)."""
    st = state()
    n = person.remove(st.ws, side, st.reporter)
    out.print(f"Cleared the masks of {n} data_{side} faces.", highlight=False)


@command(app, "worst")
def worst(side: str = _side(),
          count: int = typer.Option(10, "-n", "--count", min=1, max=1000,
                                    help="How many faces to list.")) -> None:
    """List the unlabelled faces of aligned/ whose masks the side's segmenter is least sure
    of (label these next), and write them with their masks to
    WORKSPACE/segmenter/<side>_worst.jpg."""
    st = state()
    found = person.worst_faces(st.ws, side, count, st.reporter)
    if not found:
        out.print(f"Every face of data_{side}/aligned is labelled.", highlight=False)
    _worst_lines(found, side)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="mask")
