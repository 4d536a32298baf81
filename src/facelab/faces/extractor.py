"""The face extractor: frame in, plain face records out (insightface's small API).

    faces = Extractor(ExtractorOptions(detector="accurate")).run(frame_bgr)

Each record holds the detection, the 68 points (+ mesh and pose), the frame→face transform
of the chosen face type and the aligned face image. Nothing here knows about workspaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from facelab.faces.faceimage import FaceMeta
from facelab.faces.facetype import FaceType, crop_face, face_transform, transform_points
from facelab.faces.record import Detection, Landmarks
from facelab.options import option
from facelab.options import validate as check_options


def _detectors() -> list[str]:
    from facelab.faces.detect import detector_names  # registers the detectors, loads no model

    return detector_names()


@dataclass
class ExtractorOptions:
    """What to find and how to align it; checked on construction."""

    detector: str = option(
        "accurate", choices=_detectors,
        help="accurate (fewest false faces) or fast (cheapest, more false faces), or a "
        "detector by name.")
    landmarks: str = option("mesh", cli=False, help="The landmarker: mesh or dlib.")
    face_type: FaceType = option(
        FaceType.FULL, choices=tuple(FaceType),
        help="How much of the head an aligned face shows.")
    size: int = option(256, range=(16, 4096), help="Aligned face size in pixels (the trainer "
                       "resizes to the model's resolution).")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N.")
    threshold: float | None = option(  # None: the detector's own
        None, cli=False, range=(0, 1), help="The detector's minimum score.")
    sensitive: bool = option(  # re-extracting missed faces
        False, cli=False, help="The detector's more sensitive pass.")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> ExtractorOptions:
        """Raise FacelabError naming the first bad option; return self."""
        check_options(self)
        self.face_type = FaceType(self.face_type)
        return self


@dataclass
class Face:
    """One face found in a frame; `image` is the aligned crop."""

    index: int
    detection: Detection
    landmarks: Landmarks
    frame_to_face: np.ndarray
    image: np.ndarray
    face_type: FaceType

    @classmethod
    def from_meta(cls, meta: FaceMeta) -> Face:
        """A stored face back as a record, without its pixels (what `faces/debug.py` draws:
        a debug frame redrawn after a face was placed by hand)."""
        lm = Landmarks(np.asarray(meta.source_landmarks), None, meta.yaw, meta.pitch, meta.roll)
        det = Detection(tuple(map(float, meta.source_rect)), meta.score, None, meta.detector)
        blank = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (meta.size, meta.size, 3))
        return cls(meta.face_index, det, lm, np.asarray(meta.frame_to_face), blank,
                   FaceType(meta.face_type))

    def meta(self, source_filename: str, source_size: tuple[int, int]) -> FaceMeta:
        lm = self.landmarks
        x0, y0, x1, y1 = self.detection.box
        mesh = None
        if lm.mesh is not None:
            xy = transform_points(lm.mesh[:, :2], self.frame_to_face)
            scale = float(np.sqrt(abs(np.linalg.det(self.frame_to_face[:, :2]))))
            mesh = np.c_[xy, lm.mesh[:, 2] * scale]
        return FaceMeta(
            face_type=self.face_type.value, size=self.image.shape[0],
            landmarks=transform_points(lm.points68, self.frame_to_face),
            source_landmarks=lm.points68, frame_to_face=self.frame_to_face,
            source_filename=source_filename,
            source_rect=(int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))),
            source_size=source_size, face_index=self.index, yaw=lm.yaw, pitch=lm.pitch,
            roll=lm.roll, detector=self.detection.detector, score=float(self.detection.score),
            mesh=mesh,
        )


class Extractor:
    """Detect, mark landmarks, align. Models load on first use, once."""

    def __init__(self, options: ExtractorOptions | None = None) -> None:
        self.options = options or ExtractorOptions()
        self.options.face_type = FaceType(self.options.face_type)

    @cached_property
    def detector(self) -> Any:  # a faces.detect detector, imported on first use
        from facelab.faces.detect import create_detector

        o = self.options
        return create_detector(o.detector, device=o.device, threshold=o.threshold,
                               sensitive=o.sensitive)

    @cached_property
    def landmarker(self) -> Any:  # a faces.landmarks landmarker
        from facelab.faces.landmarks import create_landmarker

        return create_landmarker(self.options.landmarks, device=self.options.device)

    def run(self, frame: np.ndarray) -> list[Face]:
        """All faces in `frame` (BGR), in detector order, each aligned."""
        o = self.options
        faces: list[Face] = []
        for det in self.detector.detect(frame):
            lm = self.landmarker.fit(frame, det.box)
            if lm is None:
                continue
            mat = face_transform(lm.points68, o.face_type, o.size, yaw_deg=lm.yaw)
            faces.append(Face(len(faces), det, lm, mat, crop_face(frame, mat, o.size),
                              o.face_type))
        return faces
