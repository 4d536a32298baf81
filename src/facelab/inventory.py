"""What a workspace holds, for `facelab workspace info` (read-only, cheap: headers only)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from facelab.errors import FacelabError
from facelab.video.probe import VideoInfo, probe
from facelab.video.source import kept_as_video, open_frames
from facelab.workspace import SIDES, VIDEO_EXTENSIONS, Workspace, list_images


@dataclass
class FolderCount:
    path: str  # relative to the workspace
    files: int


@dataclass
class Inventory:
    root: Path
    videos: list[VideoInfo | str] = field(default_factory=list)  # str: unreadable, with reason
    folders: list[FolderCount] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    trash_entries: int = 0
    kept: dict[str, int] = field(default_factory=dict)  # side -> frames kept in its video


def inventory(ws: Workspace) -> Inventory:
    ws.require()
    inv = Inventory(ws.root)
    for p in sorted(ws.root.iterdir()):
        if not p.is_file() or p.suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        if p.name.startswith("result"):
            inv.results.append(p.name)
            continue
        try:
            inv.videos.append(probe(p))
        except FacelabError as e:
            inv.videos.append(f"{p.name}: {e}")
    folders: list[Path] = []
    for side in SIDES:
        folders += [ws.frames_dir(side), ws.aligned_dir(side), ws.aligned_debug_dir(side),
                    ws.aligned_trash_dir(side)]
    folders += [ws.merged_dir, ws.merged_mask_dir]
    for side in SIDES:
        if kept_as_video(ws, side):
            with contextlib.suppress(FacelabError, OSError, ValueError):
                inv.kept[side] = len(open_frames(ws, side))
    for d in folders:
        if d.is_dir():
            inv.folders.append(FolderCount(str(d.relative_to(ws.root)), len(list_images(d))))
    if ws.model_dir.is_dir():
        inv.models = sorted({_model_name(p) for p in ws.model_dir.iterdir() if p.is_file()})
    if ws.trash_root.is_dir():
        inv.trash_entries = sum(1 for _ in ws.trash_root.iterdir())
    return inv


def _model_name(p: Path) -> str:
    """Model files are prefixed by the model's name: NAME_<part>.<ext>."""
    return p.stem.split("_", 1)[0]
