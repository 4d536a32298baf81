"""Carrying a video's audio into a new file: copied packet for packet where the container
takes the codec, else encoded once. Interleaved with the video as it is written.

Times are in seconds of the source file; `start` is the source time that becomes 0 in the
output (the first frame's time), so audio and video stay in sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error

from facelab.errors import FacelabError
from facelab.video.probe import open_video

#: Audio codecs each output muxer takes unchanged (checked by muxing them with PyAV).
COPYABLE: dict[str, frozenset[str]] = {
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}),
    "mov": frozenset({"aac", "mp3", "ac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_s16be"}),
    "avi": frozenset({"mp3", "mp2", "ac3", "pcm_s16le", "aac"}),
    "webm": frozenset({"opus", "vorbis"}),
    "matroska": frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "opus", "vorbis", "flac",
                           "pcm_s16le", "alac"}),
    "mpeg": frozenset({"mp2", "mp3", "ac3"}),
    "mpegts": frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "opus"}),
    "flv": frozenset({"aac", "mp3"}),
}
#: What to encode to when copying is not possible.
ENCODER: dict[str, str] = {
    "mp4": "aac", "mov": "aac", "avi": "libmp3lame", "webm": "libopus", "matroska": "aac",
    "mpeg": "mp2", "mpegts": "aac", "flv": "aac",
}


def audio_stream(container: av.container.InputContainer, track: int, name: str
                 ) -> av.audio.stream.AudioStream:
    """The `track`-th audio stream, or one clear error naming what exists."""
    streams = container.streams.audio
    if not 0 <= track < len(streams):
        have = f"tracks 0–{len(streams) - 1}" if streams else "no audio track"
        raise FacelabError(f"{name} has no audio track {track} (it has {have}).")
    return streams[track]


class AudioMux:
    """Adds one audio track of `source` to `out`; call `write_until(t)` as video is written
    and `finish()` at the end."""

    def __init__(self, out: av.container.OutputContainer, muxer: str, source: Path,
                 track: int, start: float, end: float | None) -> None:
        self._in = open_video(source)
        self.ist = audio_stream(self._in, track, source.name)
        self.start, self.end = start, end
        self._out = out
        codec = self.ist.codec_context.codec.canonical_name  # mp3, not the decoder's mp3float
        self.copied = codec in COPYABLE.get(muxer, frozenset())
        if self.copied:
            self.ost = out.add_stream_from_template(self.ist)
        else:
            enc = ENCODER.get(muxer, "aac")
            rate = self.ist.codec_context.sample_rate
            if enc == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
                rate = 48000
            self.ost = out.add_stream(enc, rate=rate)
            self.ost.layout = self.ist.codec_context.layout.name if \
                self.ist.codec_context.channels <= 2 else "stereo"
            self.ost.time_base = Fraction(1, rate)
            self._samples = 0
        self.codec = self.ost.codec_context.name
        self._packets = self._in.demux(self.ist)
        self._pending: av.Packet | None = None
        self._done = False
        self._decoded: Iterator[av.AudioFrame] | None = None

    def describe(self) -> str:
        src = self.ist.codec_context.codec.canonical_name
        return f"{src} copied" if self.copied else f"{src} encoded to {self.codec}"

    def _source_packets(self, until: float) -> Iterator[av.Packet]:
        """Source packets whose time (relative to start) lies before `until`."""
        tb = self.ist.time_base
        while not self._done:
            pkt = self._pending
            self._pending = None
            if pkt is None:
                try:
                    pkt = next(self._packets)
                except (StopIteration, av.error.FFmpegError):
                    self._done = True
                    return
            if pkt.pts is None or pkt.size == 0:
                continue
            t = float(pkt.pts * tb) - self.start
            if self.end is not None and t >= self.end - self.start:
                self._done = True
                return
            if t >= until:
                self._pending = pkt
                return
            if t < -1e-6:
                continue  # before the first frame
            yield pkt

    def write_until(self, t: float) -> None:
        if self.copied:
            self._copy(t)
        else:
            self._encode(t)

    def _copy(self, until: float) -> None:
        shift = round(self.start / self.ist.time_base)
        for pkt in self._source_packets(until):
            pkt.pts -= shift
            if pkt.dts is not None:
                pkt.dts -= shift
            pkt.stream = self.ost
            self._out.mux(pkt)

    def _encode(self, until: float) -> None:
        rate = self.ost.codec_context.sample_rate
        for pkt in self._source_packets(until):
            try:
                frames = self.ist.codec_context.decode(pkt)
            except av.error.FFmpegError:
                continue  # a damaged audio packet: skip it, keep the rest
            for frame in frames:
                if self._samples == 0 and frame.pts is not None:
                    # audio starting after the first frame keeps its offset
                    first = float(frame.pts * self.ist.time_base) - self.start
                    self._samples = max(0, round(first * rate))
                frame.pts = self._samples
                frame.time_base = Fraction(1, rate)
                self._samples += round(frame.samples * rate / frame.sample_rate)
                self._out.mux(self.ost.encode(frame))

    def finish(self, end: float | None = None) -> None:
        """Write the rest, up to `end` (source seconds) when given, and close the source."""
        if end is not None:
            self.end = end
        self.write_until(float("inf"))
        if not self.copied:
            self._out.mux(self.ost.encode(None))
        self._in.close()
