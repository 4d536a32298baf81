"""The workspace: the user's folder that every stage reads from and writes to.

Only relative names live inside it, so a workspace can be renamed, moved or copied as a
backup. Clearing never deletes: the old contents move to `.trash/<timestamp>/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from facelab.errors import FacelabError
from facelab.fsutil import move_to_trash, timestamp
from facelab.locks import LOCKS, describe, holder

Side = Literal["src", "dst"]
SIDES: tuple[Side, ...] = ("src", "dst")

#: Containers FFmpeg reads that users are likely to drop in as data_src.* / data_dst.*.
VIDEO_EXTENSIONS = (
    ".mp4", ".mkv", ".avi", ".mov", ".mpg", ".mpeg", ".webm", ".m4v", ".wmv", ".flv", ".ts",
    ".mts", ".m2ts", ".3gp", ".ogv",
)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
TRASH = ".trash"


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace (see DESIGN.md's layout); creating the object touches nothing."""

    root: Path

    def frames_dir(self, side: Side) -> Path:
        return self.root / f"data_{side}"

    def aligned_dir(self, side: Side) -> Path:
        return self.frames_dir(side) / "aligned"

    def aligned_debug_dir(self, side: Side) -> Path:
        return self.frames_dir(side) / "aligned_debug"

    def aligned_trash_dir(self, side: Side) -> Path:
        return self.frames_dir(side) / "aligned_trash"

    @property
    def merged_dir(self) -> Path:
        return self.frames_dir("dst") / "merged"

    @property
    def merged_mask_dir(self) -> Path:
        return self.frames_dir("dst") / "merged_mask"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def video_json(self) -> Path:
        """What `video assemble` needs of the dst video: fps, size, frames, audio."""
        return self.frames_dir("dst") / "video.json"

    @property
    def trash_root(self) -> Path:
        return self.root / TRASH

    def new_trash_dir(self) -> Path:
        return self.trash_root / timestamp()

    def layout(self) -> list[Path]:
        dirs = [self.model_dir]
        for side in SIDES:
            dirs += [self.frames_dir(side), self.aligned_dir(side)]
        dirs.append(self.merged_dir)
        return dirs

    def init(self) -> list[Path]:
        """Create the layout; returns the folders that were new."""
        if self.root.exists() and not self.root.is_dir():
            raise FacelabError(f"Workspace {self.root} exists and is not a folder.")
        created = []
        for d in [self.root, *self.layout()]:
            if not d.exists():
                d.mkdir(parents=True)
                created.append(d)
        return created

    def require(self) -> None:
        if not self.root.is_dir():
            raise FacelabError(
                f"No workspace at {self.root}: run `facelab workspace init` or pass -w DIR."
            )

    def find_video(self, side: Side) -> Path:
        """The single `data_<side>.<ext>` input video."""
        self.require()
        found = sorted(
            p for p in self.root.glob(f"data_{side}.*")
            if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
        )
        if not found:
            raise FacelabError(
                f"No data_{side} video in {self.root}: put one there as data_{side}.mp4 "
                f"(any container FFmpeg reads) or pass --input FILE."
            )
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise FacelabError(f"Several data_{side} videos in {self.root} ({names}): keep one.")
        return found[0]

    def clear(self) -> Path | None:
        """Move everything but the trash (and the lock files) into `.trash/<timestamp>/`,
        then re-create the layout; refused while a stage holds a lock on the workspace.

        Returns the trash folder used, or None when there was nothing to move.
        """
        self.require()
        for lock in sorted((self.root / LOCKS).glob("*.lock")):
            info = holder(self.root, lock.stem)
            if info is not None:
                raise FacelabError(f"Cannot clear {self.root}: it is in use by "
                                   f"{describe(info)}; wait for it to end or stop it.")
        items = [p for p in self.root.iterdir() if p.name not in (TRASH, LOCKS)]
        if not items:
            self.init()
            return None
        trash = self.new_trash_dir()
        move_to_trash(items, trash, self.root)
        self.init()
        return trash


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (frames are zero-padded)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
