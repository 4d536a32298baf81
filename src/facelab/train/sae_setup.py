"""Everything an SAE run does before its first step (`trainer.py` runs it): the model's
options (a new model's preset, or the save's with the changeable ones applied), the
facesets, the device and precision, the network built and resumed in the order that makes
a resume exact (the seed, the network, then the save's weights, optimizer and RNG
states), and leaving pretraining."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facelab.device import choose_precision, resolve_device
from facelab.errors import FacelabError
from facelab.progress import Reporter
from facelab.train import checkpoint
from facelab.train.data import Faceset
from facelab.train.loop import check_intervals, pick_lr
from facelab.train.models import DEFAULT_PRESET, ModelOptions, build_model, preset
from facelab.train.run_options import Ranks, TrainOptions, check_family_options
from facelab.train.saved import SavedModel, fixed_of, read_saved
from facelab.train.step import LR, TrainStep
from facelab.workspace import Workspace

FAMILY = "sae"  # recorded in every save: merge loads a model by its family


def model_options(
    folder: Path, opts: TrainOptions
) -> tuple[ModelOptions, SavedModel | None]:
    """Options of a new model, or of the saved one with changeable overrides applied."""
    check_family_options(FAMILY, opts.overrides)
    changes = opts.model_changes()
    saved = read_saved(folder, opts.model_name)
    if saved is None:
        return preset(opts.preset or DEFAULT_PRESET, **changes), None
    mo = saved.options()
    if opts.preset is not None and opts.preset.lower() != mo.preset:
        want = preset(opts.preset)
        raise FacelabError(
            f"Model {opts.model_name!r} in {folder} is a {mo.preset} model ({mo.arch}, "
            f"resolution {mo.resolution}), not {want.preset} ({want.arch}, resolution "
            f"{want.resolution}); pick another name or leave out --preset."
        )
    return mo.override(**changes), saved


def reinit_inter(model: nn.Module) -> None:
    """Fresh inter layers (leaving pretrain): they hold what is specific to one pair."""
    for name, module in model.named_modules():
        if name.startswith("inter") and hasattr(module, "reset_parameters"):
            module.reset_parameters()  # type: ignore[operator]


def facesets(ws: Workspace, mo: ModelOptions, opts: TrainOptions) -> tuple[Faceset, Faceset]:
    if opts.pretrain_faces is not None:
        folder = Path(opts.pretrain_faces)
        if not folder.is_dir():
            raise FacelabError(f"The pretrain faces folder {folder} does not exist.")
        faces = Faceset(folder, mo.resolution, mo.face_type)
        return faces, faces
    return (Faceset(ws.aligned_dir("src"), mo.resolution, mo.face_type),
            Faceset(ws.aligned_dir("dst"), mo.resolution, mo.face_type))


@dataclass
class SaeSetup:
    """A model ready to step: built, resumed (or left pretraining), on its device."""

    folder: Path
    name: str
    mo: ModelOptions
    pretrain: bool  # training on one folder of many people's faces
    resumed: bool
    device: torch.device
    precision: str
    precision_reason: str
    model: nn.Module
    step: TrainStep
    state: dict[str, Any]  # the save's (iteration, history), or a new model's
    src_faces: Faceset
    dst_faces: Faceset
    forward: nn.Module  # the model, or its torch.compile'd form
    lr: float
    fresh: bool  # not (yet) the model on disk: new, or just left pretraining
    ranks: Ranks


def setup_sae(ws: Workspace, opts: TrainOptions, reporter: Reporter, ranks: Ranks) -> SaeSetup:
    """Everything before the first step, in the order that makes a resume exact (the seed,
    the network, then the save's weights, optimizer and RNG states)."""
    folder = ws.model_dir
    name = opts.model_name
    checkpoint.check_name(name)
    check_intervals(opts)
    mo, saved = model_options(folder, opts)
    pretrain = opts.pretrain_faces is not None
    if pretrain:  # DeepFaceLab's forced settings while pretraining
        mo = mo.override(face_style_power=0.0, bg_style_power=0.0, sort_by_yaw=False,
                         random_flip=True)
    if ranks.world == 1:
        device = resolve_device(opts.device)
        precision, why = choose_precision(opts.precision, device)
    else:  # GPU LOCAL_RANK; a measured precision is rank 0's on all
        from facelab.train import ddp

        device, precision, why = ddp.device_and_precision(opts.device, opts.precision, ranks)
    reporter.status("Reading the faces …")
    src_faces, dst_faces = facesets(ws, mo, opts)
    for faces in dict.fromkeys((src_faces, dst_faces)):  # pretraining: one set, said once
        if faces.occlusions:
            reporter.info(f"{faces.name}: {len(faces.occlusions)} of {len(faces)} faces carry "
                          "a mask (facelab mask apply): their occluded pixels are left out of "
                          "the loss.")

    reporter.status(f"{'Loading' if saved else 'Building'} model {name!r} …")
    torch.manual_seed(opts.seed)
    model = build_model(mo).to(device)
    forward = torch.compile(model) if opts.compile else model
    step = TrainStep(model, mo, device, precision, forward=forward)  # type: ignore[arg-type]
    state: dict[str, Any] = {"iteration": 0, "history": []}
    if saved is not None:
        state = checkpoint.load(
            folder, name, model, step.optimizer, expected_arch=mo.arch,
            fixed_options=fixed_of(mo), warn=reporter.warn,
        )
    lr = pick_lr(opts.lr, state, LR)
    step.set_lr(lr)
    fresh = saved is None
    if state.get("pretrain") and not pretrain:
        done = int(state.get("iteration", 0))
        if ranks.lead:
            checkpoint.save(folder, name, model, step.optimizer, state, arch=mo.arch,
                            fixed_options=fixed_of(mo), keep_backups=max(1, opts.keep_backups),
                            backup=True)
        reinit_inter(model)
        step = TrainStep(model, mo, device, precision, lr=lr, forward=forward)  # type: ignore[arg-type]
        state, fresh = {"iteration": 0, "history": []}, True
        reporter.info(f"Leaving pretraining after {done} iterations (kept as a backup): "
                      "training the pair from iteration 0 with fresh inter layers.")
    it = int(state.get("iteration", 0))
    was = int(state.get("ranks", 1))
    if saved is not None and was != ranks.world and it:
        reporter.info(f"Model {name!r} trained on {was} rank(s) until now, on {ranks.world} "
                      "from here: its global batch changes with the rank count.")
    if mo.target_iteration and it >= mo.target_iteration:
        raise FacelabError(
            f"Model {name!r} is already at iteration {it}, the target "
            f"{mo.target_iteration}: raise --target-iteration or set 0 for unlimited."
        )
    return SaeSetup(folder, name, mo, pretrain, saved is not None, device, precision, why,
                model, step, state, src_faces, dst_faces, forward, lr, fresh, ranks)
