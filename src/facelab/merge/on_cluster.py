"""What a merge's workers read on a cluster with no shared disk (`facelab/cluster/`): the
model's saved files and the person's own segmenters once per worker; each item's frames
and the context frames its seg-dst masks are smoothed with."""

from __future__ import annotations

from pathlib import Path

from facelab.merge.worker import Item, Setup
from facelab.train.checkpoint import PREDICTION_FILES


def worker_inputs(setup: Setup) -> list[Path]:
    """The model's manifest and the files a prediction reads (its weights and state:
    not the optimizer's, twice the weights' size); the segmenters' weights and cards (a
    shipped one is inside the package on every node, but sending it costs little)."""
    folder, name = setup.model_dir, setup.model_name
    manifest = folder / f"{name}_manifest.json"
    files = [manifest, *(folder / f"{name}_{f}" for f in PREDICTION_FILES)]
    for path in setup.segmenters.values():
        files += [path.with_suffix(".safetensors"), path.with_suffix(".json")]
    return [f for f in files if f.is_file()]


def item_frames(item: Item) -> list[str]:
    """The dst frames an item reads: its own and the context frames its seg-dst masks are
    smoothed with (sent with it as files, or as the piece of the video that holds them)."""
    return [*(p.name for p, _ in item.frames), *(p.name for _, p, _ in item.context)]
