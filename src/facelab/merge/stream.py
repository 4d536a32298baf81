"""The plan of a streaming merge (`merge --to-video`): its segments, encoder and result.

Segments are cut from the whole clip, not from what is left to do, so a rerun plans the
same segments and finds the finished ones (`merge.json` in `data_dst/merged_video/`). A
segment starts at one of dst's key frames where the video has them (a worker decodes only
its own frames) and holds at least `segment_length` frames: a few seconds, fewer on a short
clip so that every worker has segments to take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

from facelab.errors import FacelabError
from facelab.fsutil import clean_stale_parts, move_to_trash, read_json
from facelab.merge.options import MergeOptions
from facelab.merge.video_out import (
    SEGMENT_EXT,
    STREAMABLE,
    VideoSpec,
    join_segments,
    segment_name,
    segment_path,
)
from facelab.progress import Reporter
from facelab.provenance import Mark
from facelab.provenance.credentials import Signing, mime_of, read_file
from facelab.provenance.video import container_marks
from facelab.video.assemble import encoder_settings
from facelab.video.formats import FORMATS
from facelab.video.probe import VideoInfo
from facelab.video.source import FrameSource, VideoSource
from facelab.workspace import Workspace

SEGMENT_SECONDS = 4.0  # a segment's length on a long clip
#: x264's preset for a streaming merge: the encoder runs beside the model on every frame,
#: and veryfast took 2.4× less CPU than assemble's medium at 360p and 1080p here, with
#: files within 6 % at the same CRF (docs/BENCHMARKS.md, "Streaming")
STREAM_PRESET = "veryfast"
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
           "slower", "veryslow")
MIN_SEGMENT = 16  # frames; a short clip is cut in about 8 segments of at least this


@dataclass
class VideoOutput:
    """The result video of a streaming merge: format (assemble's), quality and file."""

    format: str = "mp4"
    crf: int | None = None
    bitrate_mbps: float | None = None
    output: Path | None = None  # default: WORKSPACE/result.<ext>
    audio: bool = True
    preset: str = STREAM_PRESET  # x264's (mp4 formats)


@dataclass
class Stream:
    spec: VideoSpec
    segments: list[tuple[str, list[str]]]  # (segment name, its frame names), clip order
    output: Path
    info: VideoInfo
    audio: Path | None
    tag: str


def check_streamable(opts: MergeOptions, frames_spec: str | None, video: VideoOutput) -> None:
    """What a merge straight into a video cannot do, as one sentence each."""
    if frames_spec is not None:
        raise FacelabError("--to-video merges the whole clip: drop --frames, or write "
                           "frames with --to-frames.")
    if opts.export_alpha or opts.mode == "raw":
        raise FacelabError("The result video carries no alpha: use --to-frames for "
                           "--export-alpha and --mode raw (merged PNGs with alpha).")
    if video.preset not in PRESETS:
        raise FacelabError(f"--preset {video.preset!r}: choose one of {', '.join(PRESETS)}.")
    if video.format not in STREAMABLE:
        raise FacelabError(f"--video-format {video.format!r}: a streaming merge writes "
                           f"{', '.join(STREAMABLE)}; for alpha formats use --to-frames "
                           "and `facelab video assemble`.")


def segment_length(frames: int, rate: float) -> int:
    return max(MIN_SEGMENT, min(math.ceil(frames / 8), round(SEGMENT_SECONDS * rate)))


def plan_stream(ws: Workspace, source: FrameSource, frames: list[Path],
                video: VideoOutput) -> Stream:
    if not ws.video_json.is_file():
        raise FacelabError(f"No {ws.video_json.relative_to(ws.root)}: run `facelab video "
                           "extract dst` first (the result takes dst's rate and audio).")
    info = VideoInfo.from_json(read_json(ws.video_json))
    fmt = FORMATS[video.format]
    options, bit_rate = encoder_settings(fmt, video.crf, video.bitrate_mbps)
    if "preset" in options:
        options["preset"] = video.preset
    spec = VideoSpec(fmt.name, info.fps, info.width, info.height, options, bit_rate)
    names = [p.name for p in frames]
    runs = source.chunks(names, segment_length(len(names), float(info.fps)))
    segments = [(segment_name(run[0], run[-1]), run) for run in runs]
    output = video.output or ws.root / f"result.{fmt.ext}"
    audio = None
    if video.audio and info.has_audio:
        audio = source.video if isinstance(source, VideoSource) else ws.root / info.name
        if not audio.is_file():
            raise FacelabError(f"The dst video {info.name} is gone from the workspace, and "
                               "with it the audio: put it back or pass --no-audio.")
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    tag = (f"facelab merge --to-video format={fmt.name} {opts} bitrate={bit_rate} "
           f"audio={audio is not None}")
    return Stream(spec, segments, output, info, audio, tag)


def _up_to_date(output: Path, segments: list[Path], tag: str, mark: Mark) -> bool:
    """The result was joined from these very segments with these settings: a rerun with
    nothing to merge leaves it (and the trash) alone."""
    if not output.is_file() or output.stat().st_mtime_ns < max(
            p.stat().st_mtime_ns for p in segments):
        return False
    try:
        with av.open(str(output)) as done:
            tags = {k.lower(): v for k, v in done.metadata.items()}
            found = container_marks(done)
    except av.error.FFmpegError:
        return False
    if tags.get("comment") != tag or not found or found[0][1].model_id != mark.model_id:
        return False
    return mime_of(output) is None or read_file(output).state == "valid"  # its manifest too


def frame_done_debug(debug_dir: Path, name: str) -> bool:
    return (debug_dir / f"{Path(name).stem}.jpg").exists()


def finish_stream(ws: Workspace, stream: Stream, folder: Path, mark: Mark,
                  reporter: Reporter, signing: Signing | None = None) -> tuple[Path, bool]:
    """Join the plan's segments into the result (the previous result to the trash) and
    remove segments of earlier plans (facelab's own intermediate files). Returns the
    result and whether it was written now (False: it was already up to date)."""
    paths = [segment_path(folder, name) for name, _ in stream.segments]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FacelabError(f"Segment {missing[0]} of the result is missing: merge again.")
    clean_stale_parts(stream.output.parent, of=stream.output)  # a killed join's
    if _up_to_date(stream.output, paths, stream.tag, mark):
        return stream.output, False
    previous = [stream.output] if stream.output.exists() else []
    trash = ws.new_trash_dir() if previous else None
    join_segments(paths, stream.output, stream.spec, stream.info, stream.audio, mark,
                  stream.tag, reporter, before_rename=lambda: trash and move_to_trash(
                      previous, trash, stream.output.parent), signing=signing)
    planned = {p.name for p in paths}
    for old in folder.glob(f"seg_*{SEGMENT_EXT}"):
        if old.name not in planned:
            old.unlink(missing_ok=True)
    return stream.output, True
