"""The result and dst as videos a browser plays (the merge page's side-by-side player): a
file chromium plays is served as it is; another (an MPEG-1 dst, dst kept as frames, an AVI
result) is transcoded once into an H.264 mp4 in the workspace's `.studio/merge/`, named by
the source's size and time so a new version gets a new copy."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facelab.studio.security import PathMissing
from facelab.video.source import kept_as_video, kept_video, open_frames
from facelab.workspace import VIDEO_EXTENSIONS, Workspace

CACHE = "merge"  # in .studio/: browser-playable copies of the videos
PLAYABLE = {"h264", "vp8", "vp9", "av1"}  # codecs every chromium plays, in mp4/webm


def result_file(ws: Workspace) -> Path | None:
    """The newest result.<video> in the workspace (what merge and assemble write)."""
    found = [p for p in ws.root.glob("result.*")
             if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def playable(path: Path) -> bool:
    """Whether chromium plays the file as it is (mp4/webm, 8-bit 4:2:0 H.264/VP8/VP9/AV1)."""
    import av

    if path.suffix.lower() not in (".mp4", ".m4v", ".webm"):
        return False
    try:
        with av.open(str(path)) as f:
            v = f.streams.video[0].codec_context
            return v.name in PLAYABLE and v.pix_fmt in ("yuv420p", "yuvj420p")
    except (av.error.FFmpegError, IndexError, OSError):
        return False


_transcoding = threading.Lock()


def browser_copy(ws: Workspace, which: str) -> Path:
    """The result or dst as a file the page's <video> plays: the file itself when it can,
    else an H.264 copy in .studio/merge/ made once per version of the source."""
    if which == "result":
        src = result_file(ws)
        if src is None:
            raise PathMissing("No result yet: merge all first.")
    else:
        src = kept_video(ws, "dst")[0] if kept_as_video(ws, "dst") else ws.frames_dir("dst")
    inside = src.resolve().is_relative_to(ws.root.resolve())
    if src.is_file() and inside and playable(src):
        return src
    st = src.stat()
    folder = ws.root / ".studio" / CACHE
    dest = folder / f"{which}-{st.st_size}-{st.st_mtime_ns}.mp4"
    with _transcoding:
        if not dest.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob(f"{which}-*.mp4"):
                old.unlink(missing_ok=True)
            _transcode(ws, src if which == "result" else None, dest)
    return dest


def _transcode(ws: Workspace, video: Path | None, dest: Path) -> None:
    """`video` (None: dst's frames as merge reads them) into an H.264 mp4 at its rate."""
    from fractions import Fraction

    from facelab.merge.jobs import dst_fps
    from facelab.merge.video_out import SegmentWriter, VideoSpec
    from facelab.video.probe import open_video

    with contextlib.ExitStack() as stack:
        if video is not None:
            f = stack.enter_context(open_video(video))
            stream = f.streams.video[0]
            rate = stream.average_rate or Fraction(25)
            frames: Iterator[np.ndarray] = (fr.to_ndarray(format="bgr24")
                                            for fr in f.decode(stream))
        else:
            source = open_frames(ws, "dst")
            stack.callback(source.close)
            rate = Fraction(dst_fps(ws)).limit_denominator(1001)
            frames = (image for _, image in source.frames(source.names))
        writer = None
        try:
            for image in frames:
                if writer is None:
                    h, w = image.shape[:2]
                    writer = SegmentWriter(dest, VideoSpec("mp4", rate, w, h, {
                        "crf": "20", "preset": "veryfast"}))
                writer.add(image)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.close()
