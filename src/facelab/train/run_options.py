"""`TrainOptions`: one training run's settings, apart from the model's own (`ModelOptions`).

Here, without PyTorch, so `facelab train --help` is generated from these fields quickly; the
trainer re-exports it. Checked on construction, so a library caller gets the CLI's checks.
`Ranks` (this process's place in a data-parallel run) and `TrainReport` are here too, so the
`--nproc` launcher (cli/train_launch.py) needs no PyTorch either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.meshswap.options import FAMILY as MESHSWAP
from facelab.meshswap.options import MeshSwapOptions
from facelab.options import PRECISIONS, check_values, option, specs
from facelab.options import validate as check_options
from facelab.train.models import ModelOptions

DEVICE_HELP = ("auto picks the best GPU PyTorch sees (cuda for NVIDIA and AMD, xpu, mps; the "
               "one with most free memory), else the CPU; or cpu, or cuda:N. With several "
               "GPUs one is used unless --nproc (or torchrun) starts one rank per GPU.")
NPROC_HELP = ("Train data-parallel in N processes (ranks) on this machine, one GPU each (auto: "
              "GPUs 0 to N-1) or all on the CPU. The batch size is per rank: the update is the "
              "one of a global batch of N × batch size, as one process would train it. For "
              "several machines start `facelab train` under torchrun instead.")


@dataclass
class TrainOptions:
    """One training run. `preset` None: the saved model's, or quick96 for a new one.

    `preset`, `overrides`, `batch_size` and `target_iteration` are model options (declared
    in `ModelOptions`, or in `MeshSwapOptions` for preset meshswap); None leaves a saved
    model's value as it is.
    """

    model_name: str = option(help="Name of the model in WORKSPACE/model/; an existing one is "
                             "resumed.")
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # the family's option fields
    batch_size: int | None = None  # None: the model's (its preset's default, or last run's)
    target_iteration: int | None = None  # 0 = unlimited; None: the model's (new: unlimited)
    autosave_minutes: float = option(15.0, above=0, help="Save every N minutes.")
    backup_every: int = option(
        10000, range=(0, None), help="Also copy the save to model/NAME_backups/<iteration>/ "
        "every N iterations (0: never).")
    keep_backups: int = option(3, range=(0, None), help="Keep the newest N periodic backups.")
    preview_every: int = option(
        100, range=(0, None), help="Write model/NAME_preview.png every N iterations (0: never).")
    log_every: int = option(25, range=(1, None), cli=False,
                            help="Log the mean losses every N iterations.")
    seed: int = option(0, help="Seed of a new model's weights and of the sample augmentation.")
    device: str = option("auto", help=DEVICE_HELP)
    precision: str = option(
        "auto", choices=PRECISIONS, help="auto measures which is faster on this device "
        "(bf16/fp16 only on GPUs that run them well).")
    compile: bool = option(
        False, help="torch.compile the model: a slow first iteration, then often faster on "
        "GPUs (see docs/BENCHMARKS.md).")
    pretrain_faces: Path | None = option(
        None, help="Pretrain on this folder of many people's aligned faces instead of "
        "data_src/data_dst, so a model starts from general faces.")
    preview_src: str | None = option(
        None, help="File name in data_src/aligned shown in the preview history column "
        "(default: picked evenly).")
    preview_dst: str | None = option(
        None, help="File name in data_dst/aligned shown in the preview history column "
        "(default: picked evenly).")
    workers: int = option(2, range=(0, None), cli=False,
                          help="Processes preparing samples (0: in the training process).")
    lr: float | None = option(
        None, above=0, help="Adam's learning rate, changeable on any run (default: the "
        "model's, which a run lowers when its loss collapses, else 5e-5 for SAE models and "
        "1e-3 for meshswap's refiner). Too high diverges: the run rolls back and halves it.")

    nproc: int = option(1, range=(1, None), help=NPROC_HELP)

    def __post_init__(self) -> None:
        self.validate()

    def model_changes(self) -> dict[str, Any]:
        """The model options this run sets, for either family: the overrides, and the batch
        size and target iteration when given."""
        given = {"batch_size": self.batch_size, "target_iteration": self.target_iteration}
        return {**self.overrides, **{k: v for k, v in given.items() if v is not None}}

    def validate(self) -> TrainOptions:
        """Raise FacelabError naming the first bad option (model options included); return
        self. With no preset the family is the save's: the trainer checks the rest."""
        check_options(self)
        unknown = set(self.overrides) - set(_names(ModelOptions)) - set(_names(MeshSwapOptions))
        if unknown:
            raise FacelabError(f"Unknown model option(s): {', '.join(sorted(unknown))}.")
        preset = self.preset and self.preset.lower()
        given = {"batch_size": self.batch_size, "target_iteration": self.target_iteration}
        values = {**self.overrides, **{k: v for k, v in given.items() if v is not None}}
        if preset == MESHSWAP:
            check_family_options(MESHSWAP, self.overrides)
            check_values(MeshSwapOptions, values)
        elif preset is not None:
            check_family_options("sae", self.overrides)
            check_values(ModelOptions, {**values, "preset": preset})
        else:
            check_values(ModelOptions, values)  # checks the names it declares
            check_values(MeshSwapOptions, {k: v for k, v in values.items()
                                           if k not in _names(ModelOptions)})
        return self


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def check_family_options(family: str, overrides: dict[str, Any]) -> None:
    """One error line for a model option the family does not have (e.g. --ae-dims given
    for a meshswap model), naming its flag."""
    own, other = ((MeshSwapOptions, ModelOptions) if family == MESHSWAP
                  else (ModelOptions, MeshSwapOptions))
    foreign = [n for n in overrides if n not in _names(own)]
    if not foreign:
        return
    flag = {s.name: s.flag for s in (*specs(own), *specs(other))}
    names = ", ".join(flag.get(n, n) for n in sorted(foreign))
    one = len(foreign) == 1
    if family == MESHSWAP:
        what = "is not a meshswap option" if one else "are not meshswap options"
    else:
        what = f"{'is not an option' if one else 'are not options'} of SAE-family models"
    raise FacelabError(f"{names} {what}; leave {'it' if one else 'them'} out or train "
                       "another model.")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run; one rank alone without torchrun's
    variables (or with WORLD_SIZE 1)."""

    rank: int = 0
    world: int = 1
    local: int = 0  # LOCAL_RANK: which GPU of its machine

    @property
    def lead(self) -> bool:
        """Rank 0: the one that writes (saves, previews, logs, the lock)."""
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Ranks:
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
            local = int(env.get("LOCAL_RANK", rank))
        except (KeyError, ValueError):
            raise FacelabError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers, as "
                               "torchrun sets them.") from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise FacelabError(f"RANK {rank} does not fit WORLD_SIZE {world}.")
        return cls(rank, world, local)

    @classmethod
    def of_run(cls, nproc: int) -> Ranks:
        """This process's rank in a run of `--nproc` ranks: one line when they do not fit."""
        ranks = cls.from_env()
        if ranks.world == 1 and nproc > 1:
            raise FacelabError(f"--nproc {nproc} starts its ranks from the command line "
                               "(`facelab train --nproc`); a library caller starts them "
                               "itself, as torchrun does.")
        if ranks.world > 1 and nproc not in (1, ranks.world):
            raise FacelabError(f"--nproc {nproc} does not fit the {ranks.world} ranks this "
                               "run was started with: leave --nproc out under torchrun.")
        return ranks


@dataclass
class TrainReport:
    """What a run did; `losses` holds (src, dst) of every iteration of this run (a family
    with one loss, like meshswap's refiner, puts it in both)."""

    model_name: str
    options: Any  # the family's options: ModelOptions (sae), MeshSwapOptions (meshswap)
    start_iteration: int
    iteration: int
    resumed: bool
    stopped: bool  # by `stop`, not by reaching the target
    device: str
    ms_per_iter: float
    losses: list[tuple[float, float]] = field(default_factory=list)
    preview: Path | None = None
    precision: str = "fp32"
    family: str = "sae"
    ranks: int = 1  # processes that trained it data-parallel
