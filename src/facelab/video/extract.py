"""Stage 1: videos to numbered frames in `data_src/` or `data_dst/`.

dst stays in its video by default (`--frames video`): one decode pass records every frame's
timestamp and the key frames (`frames_index.json`), and later stages read frames from the
video by number (`video/source.py`): no image per frame, a few hundred KB instead of
gigabytes. `--frames png|jpg` writes numbered images (DeepFaceLab's way, for editing by
hand); src is written as images by default (its frames are subsampled and few).

A manifest (`frames.json`) records which input made which frames and whether it finished,
so a rerun skips finished inputs and completes an interrupted one. For dst it also writes
`video.json`: what `assemble` needs to rebuild a video with the same rate, size and audio.
One run per side at a time (lock `video-<side>`, shared with denoise); a run removes the
temporary files a killed one left in the frame folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from facelab import locks
from facelab.errors import FacelabError, PartialResult
from facelab.fsutil import clean_stale_parts, move_to_trash, read_json, write_json
from facelab.progress import NULL, Reporter
from facelab.video.frames import (
    DecodeState,
    FrameFormat,
    ImageWriter,
    decode_video,
    ffmpeg_errors,
    frame_name,
    subsample,
    to_array,
)
from facelab.video.index import FrameIndex, build_index
from facelab.video.index_cluster import build_index_on_cluster
from facelab.video.probe import VideoInfo, info_of, open_video
from facelab.video.source import INDEX, MANIFEST, VIDEO_FORMAT
from facelab.video.timecode import format_timecode
from facelab.workspace import Side, Workspace, list_images

#: `ImageWriter`'s temporary frame names (`.00042.part.png`): no pid in them, but only a run
#: holding the side's lock writes them, so under the lock any found are a killed run's.
_FRAME_PART = re.compile(r"^\.\d+\.part\.(png|jpg)$")


@dataclass
class ExtractOptions:
    fps: Fraction | None = None  # src only: subsample to this rate; None = every frame
    fmt: FrameFormat | Literal["video"] | None = None  # None: video for dst, png for src
    jpeg_quality: int = 95
    force: bool = False
    cluster: str | None = None  # images written by a Ray cluster's workers (HOST:PORT, auto)

    def format_for(self, side: Side) -> str:
        return self.fmt or (VIDEO_FORMAT if side == "dst" else "png")


@dataclass
class ExtractReport:
    side: Side
    out_dir: Path
    frames_total: int = 0
    frames_written: int = 0
    inputs_skipped: list[str] = field(default_factory=list)
    trashed_to: Path | None = None
    kept_in_video: Path | None = None  # the frames stay in this video (no image files)


def _settings(opts: ExtractOptions) -> dict[str, Any]:
    fps = None if opts.fps is None else f"{opts.fps.numerator}/{opts.fps.denominator}"
    return {"format": opts.fmt, "fps": fps}


def _recorded_format(ws: Workspace, side: Side) -> str | None:
    """The frame format an earlier run chose: a rerun without --frames keeps it."""
    path = ws.frames_dir(side) / MANIFEST
    if not path.exists():
        return None
    fmt = read_json(path).get("settings", {}).get("format")
    return fmt if fmt in ("video", "png", "jpg") else None


def _kept_path(ws: Workspace, path: Path) -> str | None:
    """Where a kept video is, for the manifest: None when it is the workspace's own
    data_<side>.* (the record's name says it; the workspace can move), else its path."""
    try:
        return str(path.resolve().relative_to(ws.root.resolve()))
    except ValueError:
        return str(path.resolve())


def _describe(settings: dict[str, Any]) -> str:
    if settings.get("format") == VIDEO_FORMAT:
        return "frames kept in the video (no image files)"
    rate = "every frame" if settings.get("fps") is None else f"{settings['fps']} fps"
    return f"{settings.get('format')}, {rate}"


def extract_frames(ws: Workspace, side: Side, inputs: list[Path] | None = None,
                   opts: ExtractOptions | None = None, reporter: Reporter = NULL
                   ) -> ExtractReport:
    """Extract frames of `inputs` (default: the workspace's `data_<side>.*`)."""
    opts = opts or ExtractOptions()
    ws.require()
    ws.init()
    if side == "dst" and opts.fps is not None:
        reporter.warn("dst frames are always extracted at the full frame rate; --fps ignored.")
    fmt = opts.fmt or (None if opts.force else _recorded_format(ws, side)) \
        or opts.format_for(side)
    opts = ExtractOptions(None if side == "dst" else opts.fps, fmt,  # type: ignore[arg-type]
                          opts.jpeg_quality, opts.force, opts.cluster)
    inputs = inputs or [ws.find_video(side)]
    if side == "dst" and len(inputs) != 1:
        raise FacelabError("dst takes exactly one video (every frame of it is replaced).")
    if fmt == VIDEO_FORMAT and (len(inputs) != 1 or opts.fps is not None):
        raise FacelabError(f"{side} frames stay in the video only for one video at its full "
                           "rate: add --frames png to write them as images.")
    for path in inputs:  # fail on a bad input before anything is written
        open_video(path).close()
    if opts.cluster:
        from facelab.cluster.stages import cluster_layout

        cluster_layout(opts.cluster)  # joined (or a clear error) before anything is touched
    with locks.stage(ws.root, f"video-{side}", f"data_{side}/ (the {side} frames)", reporter):
        return _extract_frames(ws, side, inputs, opts, reporter)


def remove_leftovers(out: Path) -> list[Path]:
    """Delete what a killed run left half-written in the frame folder `out` (the caller
    holds the side's lock): its temporary frames and JSON files."""
    removed = clean_stale_parts(out)
    for p in out.glob(".*.part.*") if out.is_dir() else []:
        if _FRAME_PART.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _extract_frames(ws: Workspace, side: Side, inputs: list[Path], opts: ExtractOptions,
                    reporter: Reporter) -> ExtractReport:
    out = ws.frames_dir(side)
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    report = ExtractReport(side, out)
    manifest_path = out / MANIFEST
    manifest = read_json(manifest_path) if manifest_path.exists() else None
    existing = list_images(out)

    if opts.force and (manifest or existing):
        report.trashed_to = _trash_frames(ws, side, existing)
        manifest, existing = None, []
    if manifest is None and existing:
        raise FacelabError(
            f"{out.name}/ already holds {len(existing)} frames that facelab did not record; "
            "--force moves them to the trash and extracts again."
        )
    settings = _settings(opts)
    if opts.fmt == VIDEO_FORMAT:
        report.kept_in_video = inputs[0]
    if manifest is not None and manifest.get("settings") != settings:
        raise FacelabError(
            f"{out.name}/ holds frames extracted as {_describe(manifest.get('settings', {}))}; "
            f"--force replaces them with {_describe(settings)} (old frames go to the trash)."
        )
    manifest = manifest or {"settings": settings, "inputs": []}
    records: list[dict[str, Any]] = manifest["inputs"]

    next_number = 1
    for i, path in enumerate(inputs):
        identity = {"name": path.name, "size": path.stat().st_size}
        if i < len(records):
            rec = records[i]
            if {k: rec.get(k) for k in identity} != identity:
                raise FacelabError(
                    f"{out.name}/ holds frames of {rec.get('name')}, not {path.name}; "
                    "--force moves them to the trash and extracts again."
                )
            if rec.get("complete"):
                report.inputs_skipped.append(path.name)
                report.frames_total += rec["count"]
                next_number = rec["first"] + rec["count"]
                continue
        else:
            rec = {**identity, "first": next_number, "count": 0, "complete": False}
            if opts.fmt == VIDEO_FORMAT:
                rec["path"] = _kept_path(ws, path)
            records.append(rec)
        write_json(manifest_path, manifest)  # an interrupted run is recorded as incomplete
        if opts.fmt == VIDEO_FORMAT:
            written, broke = _index_one(ws, side, path, out, rec, reporter, opts.cluster)
        elif opts.cluster:
            written, broke = _extract_on_cluster(ws, side, path, out, rec, opts, reporter)
        else:
            written, broke = _extract_one(ws, side, path, out, rec, opts, reporter)
        report.frames_written += written
        report.frames_total += rec["count"]
        next_number = rec["first"] + rec["count"]
        rec["complete"] = True
        write_json(manifest_path, manifest)
        if broke:
            raise PartialResult(broke)
    return report


def _extract_one(ws: Workspace, side: Side, path: Path, out: Path, rec: dict[str, Any],
                 opts: ExtractOptions, reporter: Reporter) -> tuple[int, str | None]:
    """Decode one video into frames numbered from rec['first']; returns (written, broke)."""
    state = DecodeState()
    written = 0
    damaged_at: int | None = None  # frame count when FFmpeg first logged an error
    with open_video(path) as container, ffmpeg_errors() as errors:
        info = info_of(container, path.name)
        declared = container.streams.video[0].frames or None
        expected = declared or info.frame_count
        if opts.fps is not None and expected and info.fps > opts.fps:
            expected = int(expected * opts.fps / info.fps) + 1
        number = rec["first"]
        with reporter.task(f"{side}: {path.name} → {out.name}/", expected) as task, \
                ImageWriter(opts.fmt, jpeg_quality=opts.jpeg_quality) as writer:
            for frame in subsample(decode_video(container, state), opts.fps, state):
                target = out / frame_name(number, opts.fmt)
                if not target.exists():
                    writer.submit(target, to_array(frame))
                    written += 1
                number += 1
                task.advance()
                if damaged_at is None and errors:
                    damaged_at = state.frames
        rec["count"] = number - rec["first"]

    broke = None
    short = declared is not None and state.frames < declared - 1
    # MPEG-PS and other streams without a frame index end early without an error: FFmpeg
    # only logs a corrupt last packet. Damage in the last frames means the file was cut.
    cut_short = damaged_at is not None and damaged_at >= state.frames - 2
    if damaged_at is not None and not cut_short:
        reporter.warn(f"{path.name} has damaged data near frame {damaged_at}; the decoder "
                      "concealed it, check those frames.")
    if state.error or short or cut_short:
        where = format_timecode(state.last_time)
        of = f" of {declared}" if declared else ""
        plural = "s" if state.frames != 1 else ""
        broke = (f"{path.name} breaks at {where} (decoded {state.frames}{of} frame{plural}"
                 f"{': ' + state.error if state.error else ''}); kept the readable frames.")
        rec["truncated_at_s"] = round(state.last_time, 3)
    if state.frames == 0:
        raise FacelabError(f"{path.name} holds no decodable video frame.")
    if side == "dst":
        _write_video_json(ws, info, rec["count"], opts.fmt, broke is not None)
    return written, broke


def _extract_on_cluster(ws: Workspace, side: Side, path: Path, out: Path,
                        rec: dict[str, Any], opts: ExtractOptions, reporter: Reporter
                        ) -> tuple[int, str | None]:
    """`_extract_one`'s work done by a cluster (`extract_cluster.py`); the same frames,
    names and records."""
    from facelab.video.extract_cluster import write_on_cluster

    assert opts.cluster and opts.fmt in ("png", "jpg")
    index, kept, written = write_on_cluster(
        opts.cluster, ws.root, path, out, rec["first"], opts.fmt, opts.fps,  # type: ignore[arg-type]
        opts.jpeg_quality, reporter, f"{side}: {path.name}")
    rec["count"] = kept
    with open_video(path) as container:
        info = info_of(container, path.name)
        declared = container.streams.video[0].frames or None
    broke = _broke(path, index, rec, declared)
    if side == "dst":
        _write_video_json(ws, info, kept, opts.fmt, broke is not None)
    return written, broke


def _write_video_json(ws: Workspace, info: VideoInfo, count: int, fmt: str | None,
                      truncated: bool) -> None:
    info.frame_count = count
    info.duration_s = count / float(info.fps)
    data = info.to_json()
    data["frame_format"] = fmt
    data["truncated"] = truncated
    write_json(ws.video_json, data)


def _index_one(ws: Workspace, side: Side, path: Path, out: Path, rec: dict[str, Any],
               reporter: Reporter, cluster: str | None = None) -> tuple[int, str | None]:
    """Keep the frames in the video: one decode pass records each frame's timestamp and
    the key frames (`frames_index.json`), made by a cluster's workers in parts with
    `cluster` (`index_cluster.py`); (0 written, why it broke or None)."""
    with open_video(path) as container:
        info = info_of(container, path.name)
        declared = container.streams.video[0].frames or None
    with reporter.task(f"{side}: {path.name} → {INDEX}", declared or info.frame_count) as task:
        done = [0]

        def seen(n: int) -> None:  # frames indexed so far
            task.advance(n - done[0])
            done[0] = n

        index = build_index(path, on_frame=seen) if not cluster else \
            build_index_on_cluster(cluster, ws.root, path, on_frame=seen)
    if len(index) == 0:
        raise FacelabError(f"{path.name} holds no decodable video frame.")
    write_json(out / INDEX, index.to_json())
    rec["count"] = len(index)
    broke = _broke(path, index, rec, declared)
    if side == "dst":
        _write_video_json(ws, info, len(index), VIDEO_FORMAT, broke is not None)
    return 0, broke


def _broke(path: Path, index: FrameIndex, rec: dict[str, Any], declared: int | None
           ) -> str | None:
    """Why the video broke before its end, from its index (recorded in `rec`); None."""
    short = declared is not None and len(index) < declared - 1
    if not (index.truncated or short):
        return None
    of = f" of {declared}" if declared else ""
    rec["truncated_at_s"] = round(index.span_s, 3)
    return (f"{path.name} breaks at {format_timecode(index.span_s)} (decoded {len(index)}"
            f"{of} frames); kept the readable frames.")


def _trash_frames(ws: Workspace, side: Side, frames: list[Path]) -> Path:
    out = ws.frames_dir(side)
    extra = [out / MANIFEST, out / INDEX, out / "denoise.json", out / "denoise_originals"]
    if side == "dst":
        extra.append(ws.video_json)
    trash = ws.new_trash_dir()
    move_to_trash([*frames, *extra], trash, ws.root)
    return trash
