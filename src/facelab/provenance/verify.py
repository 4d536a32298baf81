"""`verify`: which provenance marks a file carries, found by a list of detectors.

Each detector looks at one identified file and returns findings; the metadata detector is
the only one now. An invisible-watermark detector (pixels, so it survives uploads that
strip metadata) joins `DETECTORS` later without changing the callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import av
import av.error
from PIL import Image, UnidentifiedImageError

from facelab.provenance.image import image_type, read_mark
from facelab.provenance.mark import Mark, UnreadableFile, require_file
from facelab.provenance.video import container_marks


@dataclass(frozen=True)
class Media:
    """A file known to be readable, and what it is: "png", "jpeg", "image" or "video"."""

    path: Path
    kind: str


@dataclass(frozen=True)
class Finding:
    detector: str  # "metadata"
    where: str  # "PNG XMP", "container metadata", …
    mark: Mark


class Detector(Protocol):
    name: str

    def detect(self, media: Media) -> list[Finding]: ...


@dataclass
class Verdict:
    media: Media
    findings: list[Finding] = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        return any(f.mark.is_synthetic for f in self.findings)


class MetadataDetector:
    """XMP in PNG/JPEG, tags in a video's container or streams."""

    name = "metadata"

    def detect(self, media: Media) -> list[Finding]:
        if media.kind in ("png", "jpeg"):
            mark = read_mark(media.path)
            return [Finding(self.name, f"{media.kind.upper()} XMP", mark)] if mark else []
        if media.kind == "video":
            with _open_video(media.path) as c:
                return [Finding(self.name, where, m) for where, m in container_marks(c)]
        return []  # other image formats: no metadata mark written or read (yet)


DETECTORS: list[Detector] = [MetadataDetector()]


def identify(path: Path) -> Media:
    """What `path` is; `UnreadableFile` when missing, damaged or neither image nor video."""
    require_file(path)
    try:
        with path.open("rb") as f:
            kind = image_type(f.read(8))
    except OSError as e:
        raise UnreadableFile(f"{path.name} cannot be read ({e.strerror or e}).") from e
    if kind:
        return Media(path, kind)
    try:
        with Image.open(path) as im:
            im.verify()
            if im.format != "MPEG":  # Pillow "identifies" MPEG video by its header
                return Media(path, "image")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        pass
    with _open_video(path) as c:
        if not c.streams.video:
            raise UnreadableFile(f"{path.name} holds no video stream.")
        try:
            next(c.decode(video=0))
        except (av.error.FFmpegError, StopIteration) as e:
            raise UnreadableFile(f"{path.name} is a damaged video: no frame decodes.") from e
    return Media(path, "video")


def _open_video(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise UnreadableFile(f"{path.name} is not an image or video facelab can read.") from e


def verify(path: Path, detectors: list[Detector] | None = None) -> Verdict:
    """Run every detector on `path`. Raises `UnreadableFile` for a file that cannot be read."""
    media = identify(path)
    verdict = Verdict(media)
    for d in detectors if detectors is not None else DETECTORS:
        verdict.findings += d.detect(media)
    return verdict
