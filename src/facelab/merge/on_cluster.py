"""What a merge's workers read on a cluster with no shared disk (`facelab/cluster/`): the
model's saved files and the person's own segmenters once per worker; with dst as frame
files, each item's frames and the context frames its seg-dst masks are smoothed with."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from facelab.merge.worker import Item, Setup
from facelab.video.source import VideoSource


def worker_inputs(setup: Setup) -> list[Path]:
    """The model's manifest and the files it lists; the segmenters' weights and cards
    (a shipped one is inside the package on every node, but sending it costs little)."""
    folder, name = setup.model_dir, setup.model_name
    manifest = folder / f"{name}_manifest.json"
    files = [manifest]
    with contextlib.suppress(OSError, ValueError, AttributeError):  # the worker's load
        files += [folder / f for f in json.loads(manifest.read_bytes()).get("files", {})]
    for path in setup.segmenters.values():
        files += [path.with_suffix(".safetensors"), path.with_suffix(".json")]
    state = folder / f"{name}_state.json"
    return [f for f in dict.fromkeys([*files, state]) if f.is_file()]


def item_inputs(setup: Setup) -> Callable[[Item], list[Path]] | None:
    """For frames read as files: the item's frames and context frames."""
    if isinstance(setup.source, VideoSource):
        return None
    return lambda item: [*(p for p, _ in item.frames), *(p for _, p, _ in item.context)]
