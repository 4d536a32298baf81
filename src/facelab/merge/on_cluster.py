"""What a merge's workers read on a cluster with no shared disk (`facelab/cluster/`): the
model's saved files and the person's own segmenters once per worker; each item's frames
and the context frames its seg-dst masks are smoothed with."""

from __future__ import annotations

from pathlib import Path

from facelab.merge.worker import Item, Setup
from facelab.train.checkpoint import prediction_files


def worker_inputs(setup: Setup) -> list[Path]:
    """The model's manifest and the files a prediction reads (its weights and state:
    not the optimizer's, twice the weights' size; a damaged save's newest intact backup,
    as a local load falls back to it), and the state its family is read from; the
    segmenters' weights and cards (a shipped one is inside the package on every node,
    but sending it costs little)."""
    folder, name = setup.model_dir, setup.model_name
    files = [*prediction_files(folder, name), folder / f"{name}_state.json"]
    for path in setup.segmenters.values():
        files += [path.with_suffix(".safetensors"), path.with_suffix(".json")]
    return [f for f in dict.fromkeys(files) if f.is_file()]


def item_frames(item: Item) -> list[str]:
    """The dst frames an item reads: its own and the context frames its seg-dst masks are
    smoothed with (sent with it as files, or as the piece of the video that holds them)."""
    return [*(p.name for p, _ in item.frames), *(p.name for _, p, _ in item.context)]
