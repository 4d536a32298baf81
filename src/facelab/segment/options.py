"""Options of `facelab mask train` (per-person fine-tuning), declared once: the CLI flags
are generated from these fields (cli/options.py) and a library caller gets the same checks.
No PyTorch here, so `facelab mask --help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass

from facelab.options import option
from facelab.options import validate as check_options


@dataclass(frozen=True)
class MaskTrainOptions:
    """How a side's segmenter is fine-tuned on its labelled faces; checked on construction."""

    minutes: float = option(
        2.0, above=0, help="Fine-tune for this many minutes of CPU time (the same work on a "
        "busy machine; a GPU is not used).")
    steps: int | None = option(
        None, range=(1, 1_000_000), help="Stop after this many steps instead, if sooner.")
    batch_size: int = option(8, range=(1, 64), help="Faces per step.")
    lr: float = option(5e-4, above=0, help="Adam's learning rate (cosine-decayed over the "
                       "budget).")
    restart: bool = option(
        False, help="Start again from the generic network instead of continuing the side's "
        "own fine-tuned one.")
    worst: int = option(
        10, range=(0, 1000), help="Afterwards list this many of the unlabelled faces the "
        "network is least sure of: the ones to label next (0: none).")
    validation: float = option(
        0.2, range=(0.0, 0.5), cli=False,
        help="Share of the labelled faces held out to measure the result (with 5 or more).")
    seed: int = option(0, cli=False, help="Seed of the augmentation and the held-out faces.")

    def __post_init__(self) -> None:
        check_options(self)
