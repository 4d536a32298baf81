"""`facelab video cut FILE`: a frame-exact part of a video, written beside it."""

from pathlib import Path

import typer

from facelab.cli.common import command, state
from facelab.cli.ui import out
from facelab.errors import FacelabError
from facelab.video.cut import DEFAULT_BITRATE_MBPS, CutReport, cut_video
from facelab.video.timecode import format_timecode, parse_timecode


def register(app: typer.Typer) -> None:
    command(app, "cut")(cut)


def cut(
    file: Path = typer.Argument(..., help="The video to cut (left unchanged)."),
    start: str | None = typer.Option(None, "--from", help="First time kept, HH:MM:SS.mmm "
                                     "(default: the start)."),
    end: str | None = typer.Option(None, "--to", help="Time where the cut ends (the frame "
                                   "shown then is not kept), HH:MM:SS.mmm (default: the end)."),
    audio_track: int | None = typer.Option(None, "--audio-track", help="Audio track to keep, "
                                           "counted from 0 (default 0); the others are left "
                                           "out."),
    bitrate: float = typer.Option(DEFAULT_BITRATE_MBPS, "--bitrate", help="Video bitrate in "
                                  "Mbit/s."),
) -> None:
    """Write the part of FILE from --from to --to as FILE_cut.<ext> beside it, same
    container, re-encoded so the cut is frame-exact; one audio track kept in sync. An old
    FILE_cut.<ext> moves to .trash/<timestamp>/ beside it."""
    st = state()
    t0 = _time("--from", start) if start is not None else 0.0
    t1 = _time("--to", end) if end is not None else None
    rep = cut_video(file, t0, t1, audio_track, bitrate, st.reporter)
    out.print(summary(rep), soft_wrap=True, markup=False)


def _time(option: str, text: str) -> float:
    try:
        return parse_timecode(text)
    except FacelabError as e:
        raise FacelabError(f"{option}: {e}") from None


def summary(rep: CutReport) -> str:
    """One line: what was written, how long, which audio, where an old cut went."""
    span = f"{format_timecode(rep.first_s)}–{format_timecode(rep.first_s + rep.duration_s)}"
    sound = (f"audio track {rep.audio_track} ({rep.audio})" if rep.audio_track is not None
             else "no audio")
    old = f"; the previous {rep.output.name} moved to {rep.trashed_to}" \
        if rep.trashed_to else ""
    return (f"Wrote {rep.output}: {span} ({rep.duration_s:.3f} s, {rep.frames} frames at "
            f"{rep.fps} fps, {rep.codec} {rep.bitrate_mbps:g} Mbit/s), {sound}{old}.")
