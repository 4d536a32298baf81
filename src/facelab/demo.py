"""The demo: every stage built so far, run on the bundled GRID clips (CC BY 4.0).

Speaker A (two clips) is src, speaker B is dst. As stages land, the demo grows into the
full swap; today it extracts frames and aligned faces of both (with dst's debug frames) and
rebuilds the dst video from its frames.
Each stage is resumable, so a second run only does what is missing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from facelab.errors import FacelabError
from facelab.faces.extract import FaceExtractReport, extract_faces
from facelab.progress import NULL, Reporter
from facelab.video.assemble import AssembleOptions, AssembleReport, assemble
from facelab.video.extract import ExtractReport, extract_frames
from facelab.workspace import Workspace

#: Bundled clip -> its name in the workspace.
CLIPS = {
    "speaker_a_1.mpg": "data_src.mpg",
    "speaker_a_2.mpg": "data_src_2.mpg",
    "speaker_b.mpg": "data_dst.mpg",
}
ROUNDTRIP = "result_roundtrip.mp4"


@dataclass
class DemoReport:
    workspace: Path
    extracted: list[ExtractReport] = field(default_factory=list)
    faces: list[FaceExtractReport] = field(default_factory=list)
    assembled: AssembleReport | None = None
    copied: list[str] = field(default_factory=list)


def examples_dir() -> Path:
    """The bundled clips: $FACELAB_EXAMPLES, the source checkout's examples/, or ./examples."""
    candidates = [Path(os.environ["FACELAB_EXAMPLES"])] if "FACELAB_EXAMPLES" in os.environ \
        else []
    candidates += [Path(__file__).resolve().parents[2] / "examples", Path.cwd() / "examples"]
    for c in candidates:
        if all((c / name).is_file() for name in CLIPS):
            return c
    raise FacelabError("The demo clips are missing: run the demo from a facelab checkout "
                       "(examples/) or set FACELAB_EXAMPLES to their folder.")


def run_demo(ws: Workspace, fresh: bool = False, reporter: Reporter = NULL) -> DemoReport:
    source = examples_dir()
    if fresh and ws.root.is_dir():
        ws.clear()
    ws.init()
    report = DemoReport(ws.root)
    for clip, name in CLIPS.items():
        if not (ws.root / name).exists():
            shutil.copyfile(source / clip, ws.root / name)
            report.copied.append(name)
    src_inputs = [ws.root / "data_src.mpg", ws.root / "data_src_2.mpg"]
    report.extracted.append(extract_frames(ws, "src", src_inputs, reporter=reporter))
    report.extracted.append(extract_frames(ws, "dst", reporter=reporter))
    for side in ("src", "dst"):
        report.faces.append(extract_faces(ws, side, reporter=reporter))
    # No face stages yet: rebuild dst from its own frames to show the video round trip.
    report.assembled = assemble(
        ws, AssembleOptions(frames_dir=ws.frames_dir("dst"), output=ws.root / ROUNDTRIP),
        reporter,
    )
    return report
