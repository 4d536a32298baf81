"""A saved model's JSON side (family, options, iteration, model id), read without tensors.

Beside checkpoint.py, which writes and verifies saves: training needs a save's options to
build the right network before `checkpoint.load` fills it, and merging needs them (and the
model id) before any worker loads weights. Both read them here, in one way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.train import checkpoint
from facelab.train.models import FIXED_OPTIONS, ModelOptions

#: The family of saves that record none: every save before families existed was SAE.
DEFAULT_FAMILY = "sae"


@dataclass(frozen=True)
class SavedModel:
    """What a save's state.json and manifest say, tensors untouched."""

    folder: Path
    name: str
    doc: dict[str, Any]  # the whole JSON document: arch, fixed_options, state, ...
    model_id: str  # NAME@ITERATION:sha256-start of the weights, for provenance

    @property
    def state(self) -> dict[str, Any]:
        return self.doc["state"]

    @property
    def family(self) -> str:
        return str(self.state.get("family", DEFAULT_FAMILY))

    @property
    def iteration(self) -> int:
        return int(self.state.get("iteration", 0))

    def options(self) -> ModelOptions:
        """The SAE family's options, validated; FacelabError when they do not parse."""
        try:
            return ModelOptions(**self.state["options"]).validate()
        except (KeyError, TypeError) as exc:
            raise FacelabError(
                f"Model {self.name!r} in {self.folder} has unreadable options ({exc})."
            ) from None


def fixed_of(opts: ModelOptions) -> dict[str, Any]:
    """The options that shape the network, as stored beside the weights."""
    return {k: v for k, v in asdict(opts).items() if k in FIXED_OPTIONS}


def peek(folder: Path, name: str) -> dict[str, Any] | None:
    """The saved JSON document (arch, fixed options, state) without loading tensors, from the
    save or its newest backup; None if there is none."""
    candidates = [folder / f"{name}_state.json"]
    root = folder / f"{name}_backups"
    if root.is_dir():
        dirs = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
        candidates += [p / f"{name}_state.json" for p in sorted(dirs, key=lambda p: -int(p.name))]
    for path in candidates:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("state"), dict):
            return doc
    return None


def read_saved(folder: Path, name: str) -> SavedModel | None:
    """The save of `name` in `folder` (or its newest backup); None when there is neither a
    committed save nor a backup folder (a stray state.json alone is no model)."""
    checkpoint.check_name(name)
    if not checkpoint.exists(folder, name) and not (folder / f"{name}_backups").is_dir():
        return None
    doc = peek(folder, name)
    if doc is None:
        return None
    digest = "unknown"
    try:
        manifest = json.loads((folder / f"{name}_manifest.json").read_bytes())
        digest = manifest["files"][f"{name}_weights.safetensors"]["sha256"][:12]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    it = int(doc["state"].get("iteration", 0))
    return SavedModel(folder, name, doc, f"{name}@{it}:{digest}")


def require_saved(folder: Path, name: str) -> SavedModel:
    """`read_saved`, or a FacelabError that lists the models that are there."""
    saved = read_saved(folder, name)
    if saved is None:
        known = checkpoint.list_models(folder)
        choices = f"; models here: {', '.join(known)}" if known else ""
        raise FacelabError(f"There is no trained model named {name!r} in {folder}{choices}.")
    return saved
