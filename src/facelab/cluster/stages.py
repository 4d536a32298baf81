"""What a stage needs to run its items on a cluster: the option's help, the layout (one
single-threaded worker per CPU of the cluster) and the executor, given the stage's frame
source. Frames travel with the items that read them: image files as themselves, frames
kept in a video as the piece of it that holds them (cut at key frames, `video/segment.py`),
so no worker needs the whole film and the driver decodes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from facelab.cluster.relocate import relocate
from facelab.tuning import Layout
from facelab.video.segment import Cutter
from facelab.video.source import FolderFrames, FrameSource, VideoSource

CLUSTER_HELP = ("Run this stage's work on a Ray cluster: 'auto' starts one on this "
                "machine (127.0.0.1), else the head's address (HOST:PORT). Outputs are those "
                "of a local run. Needs ray; facelab installed on every node; no shared disk.")
PIECES = ".pieces"  # under the workspace, on the workers only: the items' video pieces

ItemFile = Path | tuple[Path, bytes]  # a file as it is on the driver, or a name and bytes


def cluster_layout(address: str | None) -> Layout | None:
    """None without a cluster (the local layout rules apply)."""
    if not address:
        return None
    from facelab.cluster.ray_executor import cluster_cpus

    return Layout(cluster_cpus(address), 1)


class PieceFiles:
    """Per item: the piece of the video that holds the frames it reads (on the driver,
    the video is demuxed run by run; nothing is decoded)."""

    def __init__(self, source: VideoSource, folder: Path,
                 names: Callable[[Any], Sequence[str]]) -> None:
        self.source, self.folder, self.names = source, folder, names
        self.cutter = Cutter(source.video, source.index)

    def __call__(self, item: Any) -> list[ItemFile]:
        ordinals = [self.source.ordinal(n) for n in self.names(item)]
        if not ordinals:
            return []
        name, data = self.cutter.cut(ordinals)
        return [(self.folder / name, data)]

    def close(self) -> None:
        self.cutter.close()


def cluster_executor(address: str, root: Path, workers: int, source: FrameSource, *,
                     init: Callable[..., None], initargs: tuple[Any, ...],
                     inputs: Sequence[Path] = (),
                     item_frames: Callable[[Any], Sequence[str]] = list) -> Any:
    """A RayExecutor for a stage whose items read `source`'s frames (`item_frames(item)`:
    their names; by default the item is the list of them) and write under `root` (the
    workspace); `inputs`: more files every worker reads (a model). `source` is found in
    `initargs` and given to the workers as one that reads the items' pieces."""
    from facelab.cluster.ray_executor import RayExecutor

    shared: list[Path] = []
    item_inputs: Callable[[Any], Sequence[ItemFile]] | None = None
    if isinstance(source, FolderFrames):
        def item_inputs(item: Any) -> list[ItemFile]:
            return [source.path(n) for n in item_frames(item)]
    elif (files := PieceFiles(source, root / PIECES, item_frames)).cutter.usable():
        on_workers = dataclasses.replace(source, pieces=files.folder, _reader=None)
        initargs = relocate(initargs, (), swap=(source, on_workers))
        item_inputs = files
    else:  # frames without timestamps of their own: the whole video, once per worker
        files.close()
        shared = [source.video]
    return RayExecutor(address, root, workers=workers, init=init, initargs=initargs,
                       inputs=[*shared, *inputs], item_inputs=item_inputs)


class Cluster(NamedTuple):
    """A stage's cluster: its address and the layout joined there."""

    address: str
    layout: Layout
