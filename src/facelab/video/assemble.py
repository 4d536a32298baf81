"""Last stage: merged frames to `result.<ext>` with dst's frame rate, frame count and audio.

The output is written under a temporary name and renamed when complete; a run removes the
temporary file a killed run left (its pid is dead) and holds the workspace's `assemble`
lock. Frames are read in parallel (OpenCV releases the GIL) ahead of the encoder, a
bounded number at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import cv2
import numpy as np
from PIL import Image

from facelab import locks
from facelab.errors import FacelabError
from facelab.fsutil import atomic_path, clean_stale_parts, move_to_trash, read_json
from facelab.progress import NULL, Reporter
from facelab.provenance import Mark, read_mark, video_metadata
from facelab.provenance.credentials import mime_of, read_file, sign_result_file
from facelab.provenance.credentials.result import workspace_signing
from facelab.provenance.image import MARKABLE
from facelab.provenance.video import container_marks
from facelab.video.audio import AudioMux
from facelab.video.formats import FORMATS, OutputFormat
from facelab.video.frames import default_workers, read_image, to_video_frame
from facelab.video.probe import VideoInfo
from facelab.workspace import Workspace, list_images


@dataclass
class AssembleOptions:
    format: str = "mp4"
    crf: int | None = None
    bitrate_mbps: float | None = None
    frames_dir: Path | None = None  # default: data_dst/merged
    mask_dir: Path | None = None  # default: data_dst/merged_mask (alpha formats)
    output: Path | None = None  # default: WORKSPACE/result.<ext>
    audio: bool = True
    force: bool = False


@dataclass
class AssembleReport:
    output: Path
    frames: int
    fps: Fraction
    width: int
    height: int
    audio: str | None  # e.g. "mp2 encoded to aac"; None: no audio
    skipped: bool = False
    padded: bool = False
    alpha_source: str | None = None
    mark: Mark | None = None  # the frames' provenance mark, now in the video's metadata
    #: the C2PA manifest: "embedded", or why not (webm: c2pa has no Matroska support)
    manifest: str | None = None


def frame_sizes(frames: list[Path]) -> tuple[int, int]:
    """The common (width, height) of `frames`, read from headers only; mixed sizes fail."""
    first: tuple[int, int] | None = None
    for p in frames:
        try:
            with Image.open(p) as im:
                size = im.size
        except OSError as e:
            raise FacelabError(f"{p.name} is not an image that can be read ({e}).") from e
        if first is None:
            first = size
        elif size != first:
            raise FacelabError(
                f"Frames differ in size: {frames[0].name} is {first[0]}×{first[1]}, "
                f"{p.name} is {size[0]}×{size[1]}; all frames must have one size."
            )
    assert first is not None
    return first


def encoder_settings(fmt: OutputFormat, crf: int | None, bitrate: float | None
                      ) -> tuple[dict[str, str], int | None]:
    options = dict(fmt.options)
    if crf is not None and bitrate is not None:
        raise FacelabError("Give --crf or --bitrate, not both.")
    if fmt.lossless and (crf is not None or bitrate is not None):
        raise FacelabError(f"{fmt.name} is lossless: it takes neither --crf nor --bitrate.")
    if crf is not None and fmt.default_crf is None:
        raise FacelabError(f"{fmt.name} ({fmt.codec}) takes --bitrate, not --crf.")
    if bitrate is not None:
        if bitrate <= 0:
            raise FacelabError("--bitrate must be above 0 (Mbit/s).")
        return options, int(bitrate * 1_000_000)
    if fmt.default_crf is not None:
        value = fmt.default_crf if crf is None else crf
        top = 63 if fmt.codec == "libvpx-vp9" else 51
        if not 0 <= value <= top:
            raise FacelabError(f"--crf must be within 0–{top} for {fmt.name}.")
        options["crf"] = str(value)
        return options, 0 if fmt.codec == "libvpx-vp9" else None
    if fmt.default_bitrate_mbps is not None:
        return options, int(fmt.default_bitrate_mbps * 1_000_000)
    return options, None


def _read_frames(frames: list[Path], masks: list[Path] | None, fmt: OutputFormat,
                 pad: tuple[int, int]) -> Iterator[av.VideoFrame]:
    """Decoded frames in order, a few ahead of the encoder, already converted to the
    encoder's pixel format (in the reader threads)."""
    flags = cv2.IMREAD_UNCHANGED if fmt.alpha else cv2.IMREAD_COLOR

    def load(i: int) -> av.VideoFrame:
        img = read_image(frames[i], flags)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if fmt.alpha:
            if img.shape[2] == 3:
                alpha = (read_image(masks[i], cv2.IMREAD_GRAYSCALE) if masks
                         else np.full(img.shape[:2], 255, np.uint8))
                img = np.dstack([img, alpha])
        elif img.shape[2] == 4:
            img = img[:, :, :3]
        if pad != (0, 0):
            img = cv2.copyMakeBorder(img, 0, pad[1], 0, pad[0], cv2.BORDER_REPLICATE)
        return to_video_frame(np.ascontiguousarray(img), fmt.input_format, fmt.pix_fmt)

    workers = default_workers()
    with ThreadPoolExecutor(workers, thread_name_prefix="imread") as pool:
        ahead = 2 * workers
        futures = [pool.submit(load, i) for i in range(min(ahead, len(frames)))]
        for i in range(len(frames)):
            img = futures[i].result()
            futures[i] = None  # type: ignore[call-overload]
            if i + ahead < len(frames):
                futures.append(pool.submit(load, i + ahead))
            yield img


def assemble(ws: Workspace, opts: AssembleOptions | None = None, reporter: Reporter = NULL
             ) -> AssembleReport:
    opts = opts or AssembleOptions()
    ws.require()
    if opts.format not in FORMATS:
        raise FacelabError(f"Unknown format {opts.format!r}: choose {', '.join(FORMATS)}.")
    fmt = FORMATS[opts.format]
    options, bit_rate = encoder_settings(fmt, opts.crf, opts.bitrate_mbps)
    with locks.stage(ws.root, "assemble", "the result video of this workspace", reporter):
        return _assemble(ws, opts, fmt, options, bit_rate, reporter)


def _assemble(ws: Workspace, opts: AssembleOptions, fmt: OutputFormat,
              options: dict[str, str], bit_rate: int | None, reporter: Reporter
              ) -> AssembleReport:
    output = opts.output or ws.root / f"result.{fmt.ext}"
    clean_stale_parts(output.parent, of=output)  # a killed run's half-written result
    if not ws.video_json.is_file():
        raise FacelabError(
            f"No {ws.video_json.relative_to(ws.root)}: run `facelab video extract dst` first "
            "(assemble takes the frame rate and audio from it)."
        )
    info = VideoInfo.from_json(read_json(ws.video_json))
    frames_dir = opts.frames_dir or ws.merged_dir
    frames = list_images(frames_dir)
    if not frames:
        raise FacelabError(f"{frames_dir} holds no frames: run `facelab merge` first.")
    width, height = frame_sizes(frames)
    report = AssembleReport(output, len(frames), info.fps, width, height, None)
    # merged frames say they are synthetic; the video says so too (never optional)
    report.mark = read_mark(frames[0]) if frames[0].suffix.lower() in MARKABLE else None

    tag = _settings_tag(fmt, options, bit_rate, frames_dir, opts.audio)
    if not opts.force and _up_to_date(output, frames, tag, report.mark):
        report.skipped = True
        return report
    if info.frame_count and len(frames) != info.frame_count:
        reporter.warn(f"{frames_dir.name}/ holds {len(frames)} frames, the dst video "
                      f"{info.frame_count}: the result will be "
                      f"{'shorter' if len(frames) < info.frame_count else 'longer'}.")

    masks = None
    if fmt.alpha:
        report.alpha_source, masks = _alpha_source(frames, opts.mask_dir or ws.merged_mask_dir)
        if report.alpha_source == "none":
            reporter.warn("The frames carry no alpha and there is no merged_mask/: "
                          "the alpha channel will be fully opaque.")

    audio_src = ws.root / info.name
    use_audio = opts.audio and info.has_audio
    if use_audio and not audio_src.is_file():
        raise FacelabError(f"The dst video {info.name} is gone from the workspace, and with it "
                           "the audio: put it back or pass --no-audio.")
    pad = (width % 2, height % 2) if fmt.even_size else (0, 0)
    report.padded = pad != (0, 0)
    if report.padded:
        reporter.warn(f"{fmt.codec} needs an even frame size: {width}×{height} is padded by "
                      "one pixel (edge repeated).")

    trash = [output] if output.exists() else []
    # the user's key is made here if there is none (said once): before any output exists
    signing = workspace_signing(ws.root, report.mark) if report.mark else None
    with atomic_path(output) as tmp:
        with av.open(str(tmp), mode="w", format=fmt.muxer, options=fmt.mux_options) as out:
            out.metadata["comment"] = tag
            if report.mark:
                for key, value in video_metadata(report.mark, fmt.muxer).items():
                    out.metadata[key] = value
            vs = out.add_stream(fmt.codec, rate=info.fps, options=options)
            vs.width, vs.height = width + pad[0], height + pad[1]
            vs.pix_fmt = fmt.pix_fmt
            vs.time_base = Fraction(1) / info.fps
            vs.codec_context.thread_count = 0
            vs.codec_context.thread_type = "AUTO"  # PyAV defaults to x264's slice threads
            if bit_rate is not None:
                vs.bit_rate = bit_rate
            mux = None
            if use_audio:
                end = info.start_s + len(frames) / float(info.fps)
                mux = AudioMux(out, fmt.muxer, audio_src, 0, info.start_s, end)
                report.audio = mux.describe()
            with reporter.task(f"assemble → {output.name}", len(frames)) as task:
                for i, vf in enumerate(_read_frames(frames, masks, fmt, pad)):
                    vf.pts = i
                    out.mux(vs.encode(vf))
                    if mux:
                        mux.write_until((i + 1) / float(info.fps))
                    task.advance()
            out.mux(vs.encode(None))
            if mux:
                mux.finish()
        if signing is not None:  # last: its hash covers the finished file, tags included
            report.manifest = ("embedded" if sign_result_file(tmp, tmp, signing, output.name)
                               else f"none: c2pa cannot embed in .{fmt.ext}")
        if trash:
            move_to_trash(trash, ws.new_trash_dir(), output.parent)
    return report


def _settings_tag(fmt: OutputFormat, options: dict[str, str], bit_rate: int | None,
                  frames_dir: Path, audio: bool) -> str:
    """What made a result, stored in its metadata so a rerun can tell if it is current."""
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return (f"facelab assemble format={fmt.name} {opts} bitrate={bit_rate} "
            f"frames={frames_dir.name} audio={audio}")


def _up_to_date(output: Path, frames: list[Path], tag: str, mark: Mark | None) -> bool:
    """The result exists, is newer than every frame, was made with the same settings and
    carries the frames' mark (and, where the format takes one, a valid C2PA manifest)."""
    if not output.is_file():
        return False
    if output.stat().st_mtime <= max(p.stat().st_mtime for p in frames):
        return False
    try:
        with av.open(str(output)) as done:
            found = container_marks(done)
            has = found[0][1] if found else None
            tags = {k.lower(): v for k, v in done.metadata.items()}  # Matroska: COMMENT
            if tags.get("comment") != tag or has != mark:
                return False
    except av.error.FFmpegError:
        return False
    return mark is None or mime_of(output) is None or read_file(output).state == "valid"


def _alpha_source(frames: list[Path], mask_dir: Path) -> tuple[str, list[Path] | None]:
    """Where alpha comes from: the frames' own alpha, merged_mask/, or nothing (opaque)."""
    with Image.open(frames[0]) as im:
        if im.mode in ("RGBA", "LA", "PA"):
            return "frames", None
    masks = [mask_dir / p.name for p in frames]
    if mask_dir.is_dir() and all(m.is_file() for m in masks):
        return "merged_mask", masks
    if mask_dir.is_dir() and any(m.is_file() for m in masks):
        missing = next(m.name for m in masks if not m.is_file())
        raise FacelabError(f"{mask_dir.name}/ lacks {missing}: every frame needs its mask.")
    return "none", None


