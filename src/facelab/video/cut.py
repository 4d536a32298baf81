"""`video cut`: a frame-exact part of a video, written beside it as `FILE_cut.<ext>`.

Copying packets would start the cut on the keyframe before `--from`; decoding and
re-encoding keeps exactly the frames whose time lies in [from, to). The container stays
the original's; one audio track goes along, in sync, copied where the container takes it.
The cut is written under a temporary name beside it; a run removes the one a killed cut
of the same file left (its pid is dead).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Generator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.frame import PictureType

from facelab.errors import FacelabError, PartialResult
from facelab.fsutil import atomic_path, clean_stale_parts, move_to_trash, timestamp
from facelab.progress import NULL, Reporter, Task
from facelab.video.audio import AudioMux, audio_stream
from facelab.video.frames import DecodeState, decode_video, ffmpeg_errors
from facelab.video.probe import VideoInfo, info_of, open_video, reason, stream_start
from facelab.video.timecode import format_timecode

DEFAULT_BITRATE_MBPS = 25.0
Frames = Generator[tuple[float, float, av.VideoFrame, int], None, None]
_EPS = 1e-6  # seconds: frame times computed from integer pts carry float noise

#: (muxer, video encoder) per extension; the muxer names match AudioMux's tables.
_TARGETS: dict[str, tuple[str, str]] = {
    ".mp4": ("mp4", "libx264"), ".m4v": ("mp4", "libx264"), ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"), ".avi": ("avi", "mpeg4"),
    ".webm": ("webm", "libvpx-vp9"), ".mpg": ("mpeg", "mpeg1video"),
    ".mpeg": ("mpeg", "mpeg1video"), ".ts": ("mpegts", "libx264"),
    ".m2ts": ("mpegts", "libx264"), ".mts": ("mpegts", "libx264"),
}
_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "medium"},
    "libvpx-vp9": {"row-mt": "1", "deadline": "good", "cpu-used": "4"},
}
#: The rates MPEG-1 video can signal; other rates need MPEG-2's rate extension.
_MPEG1_RATES = {Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001),
                Fraction(30), Fraction(50), Fraction(60000, 1001), Fraction(60)}


@dataclass
class CutReport:
    source: Path
    output: Path
    first_s: float  # source time (from the video stream's start) of the first kept frame
    frames: int
    fps: Fraction
    codec: str
    bitrate_mbps: float
    audio_track: int | None  # None: no audio kept
    audio: str | None  # e.g. "aac copied"
    padded: bool = False
    trashed_to: Path | None = None

    @property
    def duration_s(self) -> float:
        return float(self.frames / self.fps)


def cut_path(source: Path) -> Path:
    """Where the cut of `source` goes: `FILE_cut.<ext>` beside it."""
    return source.with_name(f"{source.stem}_cut{source.suffix}")


def cut_video(source: Path, start: float = 0.0, end: float | None = None,
              audio_track: int | None = None, bitrate_mbps: float = DEFAULT_BITRATE_MBPS,
              reporter: Reporter = NULL) -> CutReport:
    """Write the frames of `source` timed in [start, end) (seconds from the video stream's
    start; end None: to the end) to `cut_path(source)`. `audio_track` None keeps track 0
    when there is one; a track given must exist. A file that breaks before `end` keeps
    what was readable and raises PartialResult."""
    info, audio_track, declared_frames = _check(source, start, end, audio_track,
                                                bitrate_mbps)
    output = cut_path(source)
    clean_stale_parts(output.parent, of=output)  # what a killed cut of this file left
    pad = (info.width % 2, info.height % 2)
    report = CutReport(source, output, 0.0, 0, info.fps, "", bitrate_mbps, audio_track,
                       None, padded=pad != (0, 0))
    if report.padded:
        reporter.warn(f"The encoder needs an even frame size: {info.width}×{info.height} "
                      "is padded by one pixel (edge repeated).")
    last = info.duration_s if end is None else min(end, info.duration_s or end)
    total = max(1, math.ceil((last - start) * info.fps)) if last else None
    state = DecodeState()
    with atomic_path(output) as tmp:
        muxer = _TARGETS.get(output.suffix.lower(), (None, ""))[0]
        try:
            out = av.open(str(tmp), mode="w", format=muxer)
        except (av.error.FFmpegError, ValueError) as e:
            why = reason(e)
            raise FacelabError(f"FFmpeg cannot write {output.suffix} files ({why}).") from e
        frames = _frames_from(source, start, state, info.fps)
        try:
            with out:
                vs = _video_stream(out, report, info.width + pad[0], info.height + pad[1])
                with reporter.task(f"cut → {output.name}", total) as task, \
                        ffmpeg_errors() as errors:
                    done = _write(out, vs, frames, start, end, report, pad, task, errors)
        except av.error.FFmpegError as e:
            raise FacelabError(f"Could not write {output.name} ({reason(e)}).") from e
        finally:
            # closed outside the log capture: a frame-threaded decoder closed mid-stream
            # while FFmpeg logs into Python deadlocks
            frames.close()
        if output.exists():
            report.trashed_to = source.parent / ".trash" / timestamp()
            move_to_trash([output], report.trashed_to, output.parent)
    # A stream that declares its frames (mp4, mov) must reach its declared end; MPEG-PS and
    # other unindexed streams end early without an error: FFmpeg only logs a damaged last
    # packet, so damage in the last frames decoded means the file was cut.
    short = state.last_time + 2.5 / info.fps < declared_frames / info.fps
    if not done.reached_end and (state.error or short or (
            done.damaged_at is not None and done.damaged_at >= state.frames - 2)):
        raise PartialResult(
            f"{source.name} breaks at {format_timecode(state.last_time)}"
            f"{' (' + state.error + ')' if state.error else ''}, before "
            f"{'--to ' + format_timecode(end) if end is not None else 'its declared end'}: "
            f"{output.name} holds the {report.frames} readable frames up to there.")
    return report


def _check(source: Path, start: float, end: float | None, audio_track: int | None,
           bitrate_mbps: float) -> tuple[VideoInfo, int | None, int]:
    """Fail on bad input before anything is written; returns the header, the audio track
    and the frame count the stream declares (0: none)."""
    if end is not None and start >= end:
        raise FacelabError(f"--from {format_timecode(start)} is not before "
                           f"--to {format_timecode(end)}.")
    if not bitrate_mbps > 0:
        raise FacelabError("--bitrate must be above 0 (Mbit/s).")
    with open_video(source) as inp:
        if inp.format.name.endswith("_pipe") or inp.format.name == "image2":
            raise FacelabError(f"{source.name} is an image, not a video.")
        if not source.suffix:
            raise FacelabError(f"{source.name} has no file extension, so the container of "
                               "its cut is unknown: rename it with one (e.g. .mp4).")
        info = info_of(inp, source.name)
        declared = inp.streams.video[0].frames
        if audio_track is not None:
            audio_stream(inp, audio_track, source.name)
        elif info.audio:
            audio_track = 0
    if info.duration_s is not None and start >= info.duration_s:
        raise FacelabError(f"--from {format_timecode(start)} is beyond the end of "
                           f"{source.name} (it lasts {format_timecode(info.duration_s)}).")
    return info, audio_track, declared


def _video_stream(out: av.container.OutputContainer, report: CutReport, width: int,
                  height: int) -> av.video.stream.VideoStream:
    report.codec = _codec(out, report.output.suffix.lower(), report.fps)
    vs = out.add_stream(report.codec, rate=report.fps, options=_OPTIONS.get(report.codec, {}))
    vs.width, vs.height, vs.pix_fmt = width, height, _pix_fmt(report.codec)
    vs.time_base = 1 / report.fps
    vs.bit_rate = round(report.bitrate_mbps * 1_000_000)
    vs.codec_context.thread_count = 0
    return vs


def _codec(out: av.container.OutputContainer, ext: str, fps: Fraction) -> str:
    """The video encoder for `out`: the table's, else H.264 where the muxer takes it, else
    the muxer's own default."""
    codec = _TARGETS[ext][1] if ext in _TARGETS else (
        "libx264" if "libx264" in out.supported_codecs else out.default_video_codec)
    if codec == "mpeg1video" and fps not in _MPEG1_RATES:
        codec = "mpeg2video"  # its rate extension signals e.g. 15 or 12.5 fps
    try:
        av.Codec(codec, "w")
    except ValueError:
        raise FacelabError(f"FFmpeg has no video encoder for {ext} files.") from None
    return codec


def _pix_fmt(codec: str) -> str:
    formats = [f.name for f in av.Codec(codec, "w").video_formats or []]
    return "yuv420p" if "yuv420p" in formats or not formats else formats[0]


def _write(out: av.container.OutputContainer, vs: av.video.stream.VideoStream,
           frames: Frames, start: float, end: float | None, report: CutReport,
           pad: tuple[int, int], task: Task, errors: list[tuple[int, str, str]]) -> _Done:
    """Encode the kept frames into `out` numbered from 0, audio interleaved; fills in
    `report`."""
    fps = report.fps
    mux: AudioMux | None = None
    origin = 0.0
    done = _Done()
    for origin, t, frame, decoded in frames:
        if done.damaged_at is None and errors:
            done.damaged_at = decoded
        if t < start - _EPS:
            continue
        if end is not None and t >= end - _EPS:
            done.reached_end = True
            break
        if report.frames == 0:
            report.first_s = t
            if report.audio_track is not None:
                mux = AudioMux(out, out.format.name, report.source, report.audio_track,
                               start=origin + t, end=None)
                report.audio = mux.describe()
        vf = _prepared(frame, pad)
        vf.pts, vf.time_base = report.frames, 1 / fps
        out.mux(vs.encode(vf))
        report.frames += 1
        if mux:
            mux.write_until(report.frames / float(fps))
        task.advance()
    if report.frames == 0:
        raise FacelabError(f"--from {format_timecode(start)} is beyond the end of "
                           f"{report.source.name} (no frame is readable from there on).")
    out.mux(vs.encode(None))
    if mux:
        # the audio ends with the last frame, also where --to lies beyond the video's end
        mux.finish(end=mux.start + report.duration_s)
    return done


@dataclass
class _Done:
    reached_end: bool = False  # stopped at --to, not at the end of the readable data
    damaged_at: int | None = None  # frames decoded when FFmpeg first logged an error


def _frames_from(source: Path, start: float, state: DecodeState, fps: Fraction) -> Frames:
    """(stream start, frame time from it, frame, frames decoded so far), decoding from the
    keyframe before `start`. Where the seek fails, overshoots or lands on a frame that is
    not a keyframe (unindexed MPEG-PS), decoding starts at the file's beginning instead."""
    with open_video(source) as inp:
        vs = inp.streams.video[0]
        origin = stream_start(vs)
        frames = decode_video(inp, state)
        head: list[av.VideoFrame] = []
        if start > 0:
            with contextlib.suppress(av.error.FFmpegError):
                inp.seek(round((origin + start) / vs.time_base), stream=vs, backward=True)
                head = [f for f in [next(frames, None)] if f is not None and f.key_frame
                        and f.pts is not None
                        and float(f.pts * vs.time_base) - origin <= start + _EPS]
            if not head:
                state.frames, state.last_time, state.error = 0, 0.0, None
                yield from _frames_from(source, 0.0, state, fps)
                return
        t = -1 / float(fps)
        for f in itertools.chain(head, frames):
            t = float(f.pts * vs.time_base) - origin if f.pts is not None else t + 1 / float(fps)
            yield origin, t, f, state.frames


def _prepared(frame: av.VideoFrame, pad: tuple[int, int]) -> av.VideoFrame:
    """The frame as the encoder takes it: padded to an even size, source frame type reset
    (the encoder picks its own keyframes)."""
    if pad != (0, 0):
        img = np.pad(frame.to_ndarray(format="rgb24"), ((0, pad[1]), (0, pad[0]), (0, 0)),
                     mode="edge")
        return av.VideoFrame.from_ndarray(img, format="rgb24")
    frame.pict_type = PictureType.NONE
    return frame
