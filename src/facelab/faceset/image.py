"""Simple image measures: `face-size`, `brightness`, `hue`, `black`."""

from __future__ import annotations

import cv2
import numpy as np

from facelab.faceset.features import FaceData, FaceRecord, column, feature
from facelab.faceset.methods import Selection, SortOptions, by_score, method

BLACK = 8  # a pixel whose channels are all ≤ this is padding (JPEG keeps it near 0)


@feature("face_size", pixels=False)
def face_size(face: FaceData) -> float:
    """Side of the face in its frame, pixels: the aligned size over the frame→face scale."""
    m = np.asarray(face.meta.frame_to_face)[:, :2]
    return float(face.meta.size / np.sqrt(abs(np.linalg.det(m))))


@feature("hsv")
def mean_hsv(face: FaceData) -> list[float]:
    """Mean hue (OpenCV's 0–180) and value (0–255) inside the face hull."""
    hsv = cv2.cvtColor(face.image, cv2.COLOR_BGR2HSV)[face.mask].astype(np.float64)
    return [float(hsv[:, 0].mean()), float(hsv[:, 2].mean())]


@feature("black")
def black_fraction(face: FaceData) -> float:
    """Share of black pixels: the frame edge cut the face and the crop was padded."""
    return float((face.image.max(axis=2) <= BLACK).mean())


@method("face-size", ("face_size",))
def by_face_size(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Largest faces in their frame first (most detail), the smallest at the end."""
    return by_score(column(recs, "face_size"), descending=True)


@method("brightness", ("hsv",))
def by_brightness(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Brightest faces first, the darkest at the end."""
    return by_score(column(recs, "hsv")[:, 1], descending=True)


@method("hue", ("hsv",))
def by_hue(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """By mean hue, highest first: odd colour casts gather at the ends."""
    return by_score(column(recs, "hsv")[:, 0], descending=True)


@method("black", ("black",))
def by_black(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Faces cut by the frame edge (many black pixels) at the end."""
    return by_score(column(recs, "black"))
