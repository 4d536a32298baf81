"""What a video holds: frame rate as an exact fraction, size, frame count, audio streams.

Every input is opened through `open_video`, which turns FFmpeg's failures into one clear
sentence for the user.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from facelab.errors import FacelabError

#: Broadcast rates that containers often store imprecisely (e.g. 2997/100).
_COMMON_RATES = [Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001),
                 Fraction(120000, 1001), *(Fraction(r) for r in (12, 15, 24, 25, 30, 48, 50, 60))]


def exact_rate(rate: Fraction | None) -> Fraction:
    """Snap a container's rate to the broadcast rate it means (23.976 -> 24000/1001)."""
    if not rate or rate <= 0:
        raise FacelabError("The video declares no frame rate.")
    for common in _COMMON_RATES:
        if abs(rate - common) / common < 5e-4:
            return common
    return rate.limit_denominator(10_000)


@dataclass
class AudioInfo:
    """One audio stream; `track` counts audio streams only (DeepFaceLab's 'audio track id')."""

    track: int
    stream_index: int
    codec: str
    sample_rate: int
    channels: int
    layout: str
    duration_s: float | None
    language: str | None = None


@dataclass
class VideoInfo:
    name: str
    container: str
    codec: str
    width: int
    height: int
    fps: Fraction
    frame_count: int | None  # declared or estimated; exact only after decoding
    duration_s: float | None
    start_s: float
    pix_fmt: str | None
    audio: list[AudioInfo] = field(default_factory=list)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VideoInfo:
        d = dict(d)
        num, _, den = str(d["fps"]).partition("/")
        d["fps"] = Fraction(int(num), int(den or 1))
        d["audio"] = [AudioInfo(**a) for a in d.get("audio", [])]
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


def open_video(path: Path) -> av.container.InputContainer:
    """Open `path` for reading; any failure becomes one FacelabError sentence."""
    if not path.exists():
        raise FacelabError(f"{path} does not exist.")
    if not path.is_file():
        raise FacelabError(f"{path} is not a file.")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise FacelabError(f"{path.name} is not a video FFmpeg can read ({reason(e)}).") from e
    if not container.streams.video:
        container.close()
        raise FacelabError(f"{path.name} holds no video stream.")
    return container


def reason(e: Exception) -> str:
    """The short cause in an FFmpeg error, for a one-line message."""
    text = getattr(e, "strerror", None) or str(e)
    return text.split(":")[0].strip() or type(e).__name__


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def stream_start(stream: av.stream.Stream) -> float:
    return _seconds(stream.start_time, stream.time_base) or 0.0


def probe(path: Path) -> VideoInfo:
    """Read the header of `path` (no decoding)."""
    with open_video(path) as container:
        return info_of(container, path.name)


def info_of(container: av.container.InputContainer, name: str) -> VideoInfo:
    vs = container.streams.video[0]
    fps = exact_rate(vs.average_rate or vs.guessed_rate or vs.base_rate)
    duration = _seconds(vs.duration, vs.time_base)
    if duration is None and container.duration:
        duration = container.duration / av.time_base
    frames = vs.frames or (math.floor(duration * fps + 0.5) if duration else None)
    audio = []
    for track, s in enumerate(container.streams.audio):
        cc = s.codec_context
        adur = _seconds(s.duration, s.time_base)
        if adur is None and container.duration:
            adur = container.duration / av.time_base
        audio.append(AudioInfo(
            track=track, stream_index=s.index, codec=cc.codec.canonical_name,
            sample_rate=cc.sample_rate, channels=cc.channels, layout=cc.layout.name,
            duration_s=adur, language=s.language,
        ))
    cc = vs.codec_context
    return VideoInfo(
        name=name, container=container.format.name, codec=cc.name, width=cc.width,
        height=cc.height, fps=fps, frame_count=frames, duration_s=duration,
        start_s=stream_start(vs), pix_fmt=cc.pix_fmt, audio=audio,
    )
