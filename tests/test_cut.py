"""`facelab video cut`: frame-exact cuts of real clips, the chosen audio track, the original
left alone, an old cut moved to the trash, and one-line errors for bad input."""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from facelab.video.probe import exact_rate
from tests.conftest import assert_one_line_error, run_facelab, run_in_process

pytestmark = pytest.mark.slow  # real footage or training (make test-fast skips it)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Track:
    codec: str
    rate: int
    channels: int
    start_s: float
    duration_s: float


@dataclass
class Clip:
    container: str
    fps: Fraction
    frames: int
    start_s: float
    audio: list[Track]


def stats(path: Path) -> Clip:
    """What a written file holds, read back by decoding it."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        fps, container = exact_rate(v.average_rate or v.guessed_rate), c.format.name
        times = [float(f.pts * v.time_base) for f in c.decode(v)]
        n_audio = len(c.streams.audio)
    tracks = []
    for i in range(n_audio):
        with av.open(str(path)) as c:
            a = c.streams.audio[i]
            frames = list(c.decode(a))
            start = float(frames[0].time)
            span = float(frames[-1].time) + frames[-1].samples / a.rate - start
            if c.format.name.startswith("mov") and a.duration:
                # what players show: the edit list trims the encoder's padding
                span = float(a.duration * a.time_base)
            tracks.append(Track(a.codec_context.codec.canonical_name, a.rate,
                                a.codec_context.channels, start, span))
    return Clip(container, fps, len(times), min(times), tracks)


def ffmpeg_frames(path: Path) -> int:
    """Frame count as FFmpeg's own command line decodes it (an independent checker)."""
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path),
                           "-map", "0:v:0", "-f", "null", "-"], capture_output=True, text=True)
    return int(re.findall(r"frame=\s*(\d+)", proc.stderr)[-1])


def gray_frames(path: Path, upto: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="gray").astype(np.float32))
            if len(out) > upto:
                break
    return out


def expected_frames(n: int, fps: Fraction, start: Fraction, end: Fraction | None) -> range:
    """Indices of the frames timed in [start, end) in a constant-rate clip of n frames."""
    first = math.ceil(start * fps)
    last = n if end is None else min(n, math.ceil(end * fps))
    return range(first, last)


def tc(seconds: Fraction) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def copy_in(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / src.name
    shutil.copyfile(src, dest)
    return dest


CASES = [  # (fixture, from, to): seconds as fractions; None: option left out
    ("grid_b", Fraction(1), Fraction(5, 2)),
    ("grid_b", None, None),
    ("grid_b", Fraction(2), Fraction(3600)),  # --to beyond the end: cut to the end
    ("pexels", Fraction(1), Fraction(5, 2)),
    ("pexels", Fraction(12345, 1000), Fraction(14)),  # decoding starts from a seek
]


@pytest.mark.parametrize(("clip", "start", "end"), CASES)
def test_cut_is_frame_exact(clip: str, start: Fraction | None, end: Fraction | None,
                            tmp_path: Path, request: pytest.FixtureRequest) -> None:
    src = copy_in(request.getfixturevalue(clip), tmp_path)
    before = sha256(src)
    with av.open(str(src)) as c:
        v = c.streams.video[0]
        src_fps, src_n, src_format = exact_rate(v.average_rate), v.frames, c.format.name
        src_n = src_n or sum(1 for _ in c.decode(v))
    args = [*(["--from", tc(start)] if start is not None else []),
            *(["--to", tc(end)] if end is not None else [])]
    res = run_in_process("video", "cut", src, *args, "-q")
    assert res.rc == 0, res.err
    out = tmp_path / f"{src.stem}_cut{src.suffix}"
    lines = res.out.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "audio track 0" in lines[0], res.out

    want = expected_frames(src_n, src_fps, start or Fraction(0), end)
    got = stats(out)
    assert sha256(src) == before
    assert got.container == src_format
    assert got.fps == src_fps  # exact fraction, e.g. 24000/1001
    assert got.frames == len(want) == ffmpeg_frames(out)
    one = 1 / float(src_fps)
    asked = float((min(end, src_n / src_fps) if end else src_n / src_fps) - (start or 0))
    duration = got.frames / float(got.fps)
    assert abs(duration - asked) <= one + 1e-9, (duration, asked)
    (track,) = got.audio
    (src_audio,) = stats(src).audio  # the clip's own audio may end before its video
    audio_asked = (min(float(start or 0) + asked, src_audio.start_s + src_audio.duration_s)
                   - max(float(start or 0), src_audio.start_s))
    assert abs(track.duration_s - audio_asked) <= one, (track.duration_s, audio_asked)
    assert abs(track.duration_s - duration) <= one, (track.duration_s, duration)
    assert 0 <= track.start_s - got.start_s < one  # in sync: at most one frame late

    # content: the first frame is the source frame at --from, not one near it
    a = want.start
    source = gray_frames(src, a + round(src_fps))
    first = gray_frames(out, 0)[0]
    diffs = {j: float(np.abs(first - source[j]).mean())
             for j in range(max(0, a - 2), min(len(source), a + 3))}
    assert min(diffs, key=diffs.__getitem__) == a, diffs
    far = a + round(src_fps) if a + round(src_fps) < len(source) else a - round(src_fps)
    assert diffs[a] < 0.5 * float(np.abs(first - source[far]).mean())


def two_track_clip(grid: Path, dest: Path) -> Path:
    """GRID video with two audio tracks: 0 is its speech (mp2, 44.1 kHz stereo), 1 a 440 Hz
    tone (PCM, 22.05 kHz mono), in a .mov."""
    with av.open(str(grid)) as inp, av.open(str(dest), "w") as out:
        iv, ia = inp.streams.video[0], inp.streams.audio[0]
        ov = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "12"})
        ov.width, ov.height, ov.pix_fmt = iv.width, iv.height, "yuv420p"
        oa0 = out.add_stream_from_template(ia)
        oa1 = out.add_stream("pcm_s16le", rate=22050, layout="mono")
        for pkt in inp.demux(iv, ia):
            if pkt.stream is ia and pkt.pts is not None:
                pkt.stream = oa0
                out.mux(pkt)
            elif pkt.stream is iv:
                for f in pkt.decode():
                    f.pict_type = av.video.frame.PictureType.NONE
                    out.mux(ov.encode(f))
        out.mux(ov.encode(None))
        for n in range(0, 3 * 22050, 512):
            t = (n + np.arange(512)) / 22050
            tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[None]
            f = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            f.sample_rate, f.pts, f.time_base = 22050, n, Fraction(1, 22050)
            out.mux(oa1.encode(f))
        out.mux(oa1.encode(None))
    return dest


def peak_hz(path: Path) -> float:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(a)]).astype(float)
    spectrum = np.abs(np.fft.rfft(pcm))
    return float(np.argmax(spectrum) * a.rate / len(pcm))


def test_chosen_audio_track_is_the_one_kept(grid_b: Path, tmp_path: Path) -> None:
    src = two_track_clip(grid_b, tmp_path / "two.mov")
    out = tmp_path / "two_cut.mov"
    res = run_in_process("video", "cut", src, "--from", "00:00:01.000", "--to", "00:00:02.500",
                      "--audio-track", "1", "-q")
    assert res.rc == 0, res.err
    assert "audio track 1 (pcm_s16le copied)" in res.out
    got = stats(out)
    assert [(t.codec, t.rate, t.channels) for t in got.audio] == [("pcm_s16le", 22050, 1)]
    assert abs(got.audio[0].duration_s - 1.5) <= 1 / 25
    assert abs(peak_hz(out) - 440) < 5

    res = run_in_process("video", "cut", src, "--from", "00:00:01.000", "--to", "00:00:02.500",
                      "--audio-track", "0", "-q")
    assert res.rc == 0, res.err
    assert "audio track 0 (mp2 encoded to aac)" in res.out  # mov takes no mp2
    assert ".trash" in res.out
    got = stats(out)
    assert [(t.codec, t.rate, t.channels) for t in got.audio] == [("aac", 44100, 2)]
    assert abs(got.audio[0].duration_s - 1.5) <= 1 / 25
    assert got.frames == 38


def test_old_cut_moves_to_trash(grid_b: Path, tmp_path: Path) -> None:
    src = copy_in(grid_b, tmp_path)
    out = tmp_path / "speaker_b_cut.mpg"
    assert run_in_process("video", "cut", src, "--to", "00:00:01.000", "-q").rc == 0
    first = sha256(out)
    res = run_in_process("video", "cut", src, "--from", "00:00:02.000", "-q")
    assert res.rc == 0, res.err
    (trashed,) = (tmp_path / ".trash").glob("*/speaker_b_cut.mpg")
    assert sha256(trashed) == first
    assert str(trashed.parent) in res.out
    assert stats(out).frames == 25 and sha256(out) != first


BAD = [  # (arguments after FILE, words the error line must hold)
    (["--from", "00:00:02.000", "--to", "00:00:01.000"], ["not before"]),
    (["--from", "00:00:02.000", "--to", "00:00:02.000"], ["not before"]),
    (["--from", "00:00:05.000"], ["beyond the end"]),
    (["--from", "00:00:02.970"], ["beyond the end"]),  # after the last frame (2.96 s)
    (["--audio-track", "2"], ["has no audio track 2", "tracks 0–0"]),
    (["--from", "1:2:3:4"], ["--from", "HH:MM:SS.mmm"]),
    (["--to", "soon"], ["--to", "HH:MM:SS.mmm"]),
    (["--bitrate", "0"], ["--bitrate"]),
]


@pytest.mark.parametrize(("args", "words"), BAD)
def test_bad_input_is_one_line(args: list[str], words: list[str], grid_b: Path,
                               tmp_path: Path) -> None:
    src = copy_in(grid_b, tmp_path)
    before = sha256(src)
    assert_one_line_error(run_in_process("video", "cut", src, *args), *words)
    assert sha256(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]  # no output, no temp


def test_missing_file_and_not_a_video(tmp_path: Path) -> None:
    assert_one_line_error(run_facelab("video", "cut", tmp_path / "gone.mp4"),
                          "does not exist")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    assert_one_line_error(run_in_process("video", "cut", text), "notes.mp4", "not a video")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


def test_truncated_file_keeps_readable_part(grid_b: Path, tmp_path: Path) -> None:
    src = tmp_path / "cut_off.mpg"
    src.write_bytes(grid_b.read_bytes()[:250_000])  # MPEG-PS: ends without an error
    res = run_facelab("video", "cut", src, "--from", "00:00:00.500", "--to", "00:00:02.500")
    assert res.rc == 3
    assert_one_line_error(res, "breaks at", "before --to 00:00:02.500")
    got = stats(tmp_path / "cut_off_cut.mpg")
    assert 0 < got.frames < 50 and f"{got.frames} readable frames" in res.err
