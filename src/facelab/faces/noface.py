"""What to say when a side holds no face at all, said the same way by every stage.

A clip in which the detector finds no face (a test pattern, a face too small or turned
away) used to pass `extract` as "0 faces written" and then surface in `train` or `swap` as
"run `facelab extract src`", although that had run. The sentence here names the frames that
were searched and what to do; `extract` raises it, and a stage that finds an empty faceset
asks `empty_faceset_message`, which tells a faceless side from one never extracted.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from facelab.errors import FacelabError
from facelab.fsutil import read_json

FACES_STATE = "faces.json"  # faces/extract.py's record: settings, frame -> faces found
FRAMES_MANIFEST = "frames.json"  # video/extract.py's record of the videos the frames came from
MIN_FACE_PX = 40  # about the smallest face the default detector finds in a frame ≤ 1280 px


class NoFaceFound(FacelabError):
    """Face extraction searched every frame of a side and found no face in any."""


def source_of(frames_dir: Path) -> str:
    """What the frames in `frames_dir` came from: its videos' names (frames.json), else
    the folder, as `data_src/`."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        inputs = read_json(frames_dir / FRAMES_MANIFEST)["inputs"]
        names = [str(rec["name"]) for rec in inputs]
        if len(names) > 2:
            return f"{names[0]} and {len(names) - 1} more videos"
        if names:
            return " and ".join(names)
    return f"{frames_dir.name}/"


def no_face_message(frames_dir: Path, frames: int) -> str:
    """The one sentence for a side whose `frames` searched frames hold no face."""
    plural = "s" if frames != 1 else ""
    return (f"No face was found in any of the {frames} frame{plural} of "
            f"{source_of(frames_dir)}: use footage in which the face is clearly visible, "
            f"roughly facing the camera and at least about {MIN_FACE_PX} pixels wide.")


def empty_faceset_message(aligned: Path) -> str:
    """Why the faceset `aligned` (data_<side>/aligned) holds no faces, for a stage that
    needs them: no face in any frame when extraction recorded every frame it searched as
    faceless, else that extraction has not run (or the faces were removed)."""
    frames_dir = aligned.parent
    side = frames_dir.name.removeprefix("data_")
    side = side if side in ("src", "dst") else "src|dst"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        counts = read_json(frames_dir / FACES_STATE)["frames"]
        if counts and not any(int(c) for c in counts.values()):
            return no_face_message(frames_dir, len(counts))
    return (f"{frames_dir.name}/{aligned.name} holds no faces: run `facelab extract {side}`.")
