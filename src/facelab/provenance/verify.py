"""`verify`: which provenance marks a file carries, found by a list of detectors.

First the C2PA manifest embedded in the file (credentials/: valid, tampered or absent).
Then each detector looks at one identified file and returns findings: the metadata detector
(XMP, container tags) and the invisible-watermark detector (pixels, so it survives uploads
that strip metadata; see watermark/ and docs/WATERMARK.md). A file without a valid manifest
whose watermark reads has its manifest looked up in a store by the payload (soft binding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import av
import av.error
import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from facelab.errors import FacelabError
from facelab.provenance.credentials.keys import KeyPair, load_keys
from facelab.provenance.credentials.read import Credentials, read_file
from facelab.provenance.credentials.recover import Recovery, recover
from facelab.provenance.credentials.store import workspace_store
from facelab.provenance.image import image_type, read_mark
from facelab.provenance.mark import (
    SYNTHETIC_TYPES,
    TOOL,
    TRAINED_ALGORITHMIC_MEDIA,
    Mark,
    UnreadableFile,
    require_file,
)
from facelab.provenance.video import container_marks
from facelab.provenance.watermark import (
    detect_clip,
    detect_watermark,
    model_hash,
    sample_pairs,
)


@dataclass(frozen=True)
class Media:
    """A file known to be readable, and what it is: "png", "jpeg", "image" or "video"."""

    path: Path
    kind: str


@dataclass(frozen=True)
class Finding:
    detector: str  # "metadata", "watermark"
    where: str  # "PNG XMP", "container metadata", …
    mark: Mark
    payload: int | None = None  # the watermark's, when read
    soft: np.ndarray | None = field(default=None, compare=False, repr=False)  # its chips


class Detector(Protocol):
    name: str

    def detect(self, media: Media) -> list[Finding]: ...


@dataclass
class Verdict:
    media: Media
    findings: list[Finding] = field(default_factory=list)
    credentials: Credentials = field(default_factory=lambda: Credentials("absent"))
    recovery: Recovery | None = None  # the manifest found by the watermark's payload

    @property
    def synthetic(self) -> bool:
        c = self.credentials
        return (any(f.mark.is_synthetic for f in self.findings)
                or (c.state == "valid" and c.source_type in SYNTHETIC_TYPES))

    def to_json(self, name: str) -> dict[str, Any]:
        """The verdict as `verify --json` and the studio give it (`name`: the file's)."""
        return {
            "file": name, "synthetic": self.synthetic,
            "manifest": self.credentials.to_json(),
            "marks": [{"detector": f.detector, "where": f.where, **f.mark.__dict__,
                       "payload": None if f.payload is None else f"{f.payload:08x}"}
                      for f in self.findings],
            "recovered": self.recovery.to_json() if self.recovery else None,
        }


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


class WatermarkDetector:
    """facelab's invisible watermark in an image, or in up to SAMPLE frames spread over a
    video (in pairs one sign run apart: `sample_pairs`). A video is marked when the frames' summed
    evidence scores Z ≥ the threshold (the per-frame share is reported beside it; see
    docs/WATERMARK.md for why the sum decides)."""

    name = "watermark"
    SAMPLE = 60
    MAX_HEIGHT = 1080  # taller frames are averaged down first: the pattern scales with height

    def detect(self, media: Media) -> list[Finding]:
        if media.kind == "video":
            grays, indices = self._video_frames(media.path)
            result = detect_clip(grays, indices=indices)
            if not result.clip.found:
                return []
            n, found = len(result.frames), sum(d.found for d in result.frames)
            where = (f"watermark in {found} of {n} sampled frames ({100 * found / n:.0f} %), "
                     f"clip Z {result.clip.score:.1f}")
            return [self._finding(where, result.clip.payload, result.clip.soft)]
        d = detect_watermark(self._image(media.path))
        return [self._finding(f"watermark, Z {d.score:.1f}", d.payload, d.soft)] if d.found else []

    def _finding(self, where: str, payload: int | None, soft: np.ndarray | None) -> Finding:
        model = model_hash(payload) if payload is not None else None
        where += f", payload {payload:08x}" if payload is not None else ", payload unreadable"
        return Finding(self.name, where, Mark(TRAINED_ALGORITHMIC_MEDIA, TOOL,
                                              model_id=f"sha256:{model}…" if model else ""),
                       payload, soft)

    def _image(self, path: Path) -> np.ndarray:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:  # a format OpenCV lacks: Pillow identified it
            with Image.open(path) as im:
                gray = np.asarray(im.convert("L"))
        return self._fit(gray)

    def _fit(self, gray: np.ndarray) -> np.ndarray:
        h, w = gray.shape
        if h <= self.MAX_HEIGHT:
            return gray
        return cv2.resize(gray, (round(w * self.MAX_HEIGHT / h), self.MAX_HEIGHT),
                          interpolation=cv2.INTER_AREA)

    def _video_frames(self, path: Path) -> tuple[list[np.ndarray], list[int]]:
        """Luma of up to SAMPLE frames (decoded in order) and their indices, in pairs that
        carry opposite signs of the watermark's sign sequence (`sample_pairs`)."""
        with _open_video(path) as c:
            stream = c.streams.video[0]
            total = stream.frames or 0
            if not total and stream.duration and stream.average_rate:
                total = int(stream.duration * stream.time_base * stream.average_rate)
            keep = set(sample_pairs(total, self.SAMPLE)) if total > self.SAMPLE else None
            grays, idx = [], []
            try:
                for i, frame in enumerate(c.decode(stream)):
                    if keep is None or i in keep:
                        grays.append(self._fit(frame.to_ndarray(format="gray")))
                        idx.append(i)
            except av.error.FFmpegError:
                pass  # a damaged tail: judge the frames that decoded
        if keep is None and len(grays) > self.SAMPLE:
            pick = sample_pairs(len(grays), self.SAMPLE)
            grays, idx = [grays[i] for i in pick], pick
        return grays, idx


DETECTORS: list[Detector] = [MetadataDetector(), WatermarkDetector()]


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


_MIME = {"png": "image/png", "jpeg": "image/jpeg"}


def verify(path: Path, detectors: list[Detector] | None = None, store: Path | None = None
           ) -> Verdict:
    """Read `path`'s C2PA manifest and run every detector on it; without a valid manifest,
    look the watermark's payload up in `store` (default: the credentials/ of the workspace
    `path` lies in). Raises `UnreadableFile` for a file that cannot be read."""
    media = identify(path)
    verdict = Verdict(media)
    keys = _own_keys()
    verdict.credentials = read_file(path, keys, _MIME.get(media.kind))
    for d in detectors if detectors is not None else DETECTORS:
        verdict.findings += d.detect(media)
    mark = next((f for f in verdict.findings if f.detector == "watermark"), None)
    store = store or workspace_store(path.resolve())
    if verdict.credentials.state != "valid" and mark is not None and store is not None:
        verdict.recovery = recover(mark.payload, store, keys, mark.soft)
    return verdict


def _own_keys() -> KeyPair | None:
    """The user's signing key, to tell their manifests from others' (never made here)."""
    try:
        return load_keys()
    except FacelabError:
        return None
