"""What a stage needs to run its items on a cluster: the option's help, the layout (one
single-threaded worker per CPU of the cluster) and the executor, given the stage's frame
source (its dst video goes to every worker once; frame files go with the items that
read them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from facelab.tuning import Layout
from facelab.video.source import FolderFrames, FrameSource, VideoSource

CLUSTER_HELP = ("Run this stage's work on a Ray cluster: 'auto' starts one on this "
                "machine (127.0.0.1), else the head's address (HOST:PORT). Outputs are those "
                "of a local run. Needs ray; facelab installed on every node; no shared disk.")


def cluster_layout(address: str | None) -> Layout | None:
    """None without a cluster (the local layout rules apply)."""
    if not address:
        return None
    from facelab.cluster.ray_executor import cluster_cpus

    return Layout(cluster_cpus(address), 1)


def names_in(source: FrameSource) -> Callable[[Sequence[str]], list[Path]] | None:
    """For a folder of frames: the files an item of frame names reads."""
    if isinstance(source, FolderFrames):
        return lambda names: [source.path(n) for n in names]
    return None


def cluster_executor(address: str, root: Path, workers: int, source: FrameSource, *,
                     init: Callable[..., None], initargs: tuple[Any, ...],
                     inputs: Sequence[Path] = (),
                     item_inputs: Callable[[Any], Sequence[Path]] | None = None) -> Any:
    """A RayExecutor for a stage whose items read `source`'s frames and write under
    `root` (the workspace); `inputs`: more files every worker reads (a model)."""
    from facelab.cluster.ray_executor import RayExecutor

    shared = [source.video] if isinstance(source, VideoSource) else []
    return RayExecutor(address, root, workers=workers, init=init, initargs=initargs,
                       inputs=[*shared, *inputs],
                       item_inputs=item_inputs or names_in(source))


class Cluster(NamedTuple):
    """A stage's cluster: its address and the layout joined there."""

    address: str
    layout: Layout
