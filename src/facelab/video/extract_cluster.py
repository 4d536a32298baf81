"""`video extract --frames png|jpg --cluster`: one video's frames written as images by a
Ray cluster's workers (`facelab/cluster/`).

The workers index the video in parts (`index_cluster.py`: the driver only reads packets);
the driver picks the frames to keep by the same rule as a local run (`frames.Subsampler`
on the same timestamps). The kept frames go out in runs that start at key frames; each
worker gets the piece of the video that holds its run (`segment.py`), decodes it, encodes
the images and sends them back; the driver writes them in order, atomically, where a
local run would. A frame already on disk is not made again (a rerun completes an
interrupted one).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.progress import Reporter
from facelab.video.frames import FrameFormat, ImageWriter, Subsampler, frame_name
from facelab.video.index import FrameIndex
from facelab.video.index_cluster import build_index_on_cluster
from facelab.video.probe import open_video
from facelab.video.source import MIN_CHUNK, VideoSource

_W: dict[str, Any] = {}


@dataclass(frozen=True)
class Run:
    """Frames to write: their names in the source (`00042.png`: frame 41 of a video
    numbered from 1) and the files they become (numbered among the kept frames)."""

    names: list[str]
    targets: list[str]


def kept_ordinals(index: FrameIndex, fps: Any, start_s: float) -> list[int]:
    """The frames a local run keeps at `fps` (None: all), from the index's timestamps."""
    if fps is None:
        return list(range(len(index)))
    rate, t, out = Subsampler(fps), 0.0, []
    for i, pts in enumerate(index.pts):
        if pts is not None:
            t = float(pts * index.time_base) - start_s
        if rate.keep(t):
            out.append(i)
    return out


def write_on_cluster(address: str, root: Path, video: Path, out: Path, first: int,
                     fmt: FrameFormat, fps: Any, jpeg_quality: int,
                     reporter: Reporter, label: str) -> tuple[FrameIndex, int, int]:
    """Index `video`, then have the cluster write its kept frames into `out`, numbered
    from `first`; (the index, frames kept, frames written now)."""
    from facelab.cluster.stages import cluster_executor, cluster_layout

    layout = cluster_layout(address)  # joined before the long index
    assert layout is not None
    with open_video(video) as c:
        s = c.streams.video[0]
        start_s = float(s.start_time * s.time_base) if s.start_time else 0.0
        declared = s.frames or None
    with reporter.task(f"{label}: indexing", declared) as task:
        done = [0]

        def seen(n: int) -> None:
            task.advance(n - done[0])
            done[0] = n

        index = build_index_on_cluster(address, root, video, on_frame=seen)
    if len(index) == 0:
        raise FacelabError(f"{video.name} holds no decodable video frame.")
    keep = kept_ordinals(index, fps, start_s)
    # the number a kept frame gets is its place among the kept ones (as a local run's)
    source = VideoSource(video, index, first)
    numbers = {o: first + k for k, o in enumerate(keep)}
    todo = [o for o in keep if not (out / frame_name(numbers[o], fmt)).exists()]
    runs: list[Run] = []
    k = 0  # todo and the segments both ascend: one pass
    for r in index.segments(0, len(index), MIN_CHUNK) if todo else []:
        j = bisect.bisect_left(todo, r.stop, k)
        run, k = todo[k:j], j
        if run:
            runs.append(Run([frame_name(first + o, "png") for o in run],
                            [frame_name(numbers[o], fmt) for o in run]))
    ex = cluster_executor(address, root, layout.workers, source, init=_init,
                          initargs=(source, out, fmt, jpeg_quality),
                          item_frames=lambda run: run.names)
    written = 0
    try:
        with reporter.task(f"{label} → {out.name}/", len(todo)) as task:
            for n in ex.map(_write_run, runs):
                written += n
                task.advance(n)
    finally:
        ex.close()
    return index, len(keep), written


def _init(source: VideoSource, out: Path, fmt: FrameFormat, jpeg_quality: int) -> None:
    _W.update(source=source, out=out, fmt=fmt, quality=jpeg_quality)


def _write_run(run: Run) -> int:
    """Decode a run from its piece and write its images (into the worker's staging copy
    of the workspace: the driver writes them for real)."""
    out: Path = _W["out"]
    out.mkdir(parents=True, exist_ok=True)
    target = dict(zip(run.names, run.targets, strict=True))
    with ImageWriter(_W["fmt"], jpeg_quality=_W["quality"], workers=1) as writer:
        for name, image in _W["source"].frames(run.names):
            writer.submit(out / target[name], image)
    return len(run.names)
