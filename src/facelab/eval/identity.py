"""Identity: who a face looks like, by dlib's ResNet face descriptor (128-d, Euclidean).

dlib's ResNet (from the `face-recognition-models` package, the `[dlib]` extra) is the only
face recogniser whose weights ship in a package that installs here (checked: SFace, FaceNet,
ArcFace wheels download their weights at run time or do not load beside our OpenCV); it
separates the GRID speakers with a wide margin (docs/EVAL.md, bench/eval_identity.py). It
uses its own 5-point shape model (dlib's own data, no iBUG licence) to cut its 150 px chip,
placed inside the box of our 68 landmarks, so every face is aligned the way the network was
trained, whatever produced the landmarks.
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import FacelabError

# Same-person threshold on the distance of one frame's descriptor to an identity (the mean
# descriptor of a faceset), calibrated on the GRID clips: see docs/EVAL.md.
THRESHOLD = 0.45
MODELS = ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")
CHIP, PADDING = 150, 0.25  # what the network was trained on


def models_dir() -> Path | None:
    """face_recognition_models' folder of .dat files, found without importing the package
    (its __init__ needs pkg_resources, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if all((folder / m).is_file() for m in MODELS) else None


def available() -> bool:
    return importlib.util.find_spec("dlib") is not None and models_dir() is not None


class Recognizer:
    """Face descriptors from frames and 68-point landmarks; models load on first use.

    `inner`: grey out everything outside the face's landmark hull first, so that only
    what a face swap replaces is compared (dst's hair, ears and head outline stay in a
    swapped frame and pull a whole-head descriptor toward dst)."""

    name = "dlib-resnet"
    threshold = THRESHOLD

    def __init__(self, inner: bool = True) -> None:
        self.inner = inner

    @cached_property
    def _models(self) -> tuple[Any, Any]:
        folder = models_dir()
        if folder is None or importlib.util.find_spec("dlib") is None:
            raise FacelabError("Identity needs dlib and its models: "
                               "pip install 'facelab[dlib]'.")
        import dlib

        return (dlib.shape_predictor(str(folder / MODELS[0])),
                dlib.face_recognition_model_v1(str(folder / MODELS[1])))

    def chip(self, image_bgr: np.ndarray, points68: np.ndarray) -> np.ndarray:
        """The network's aligned 150 px RGB chip of the face marked by `points68`."""
        import dlib

        shape_model, _ = self._models
        rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        x0, y0 = np.floor(points68.min(0)).astype(int)
        x1, y1 = np.ceil(points68.max(0)).astype(int)
        shape = shape_model(rgb, dlib.rectangle(int(x0), int(y0), int(x1), int(y1)))
        if self.inner:
            rgb = _inner(rgb, points68)
        return np.asarray(dlib.get_face_chip(rgb, shape, size=CHIP, padding=PADDING))

    def embed(self, faces: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Descriptors (N×128 float32) of faces given as (image BGR, 68 points) pairs."""
        return self.describe([self.chip(img, pts) for img, pts in faces])

    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        """Descriptors (N×128 float32) of chips made by `chip`."""
        if not chips:
            return np.zeros((0, 128), np.float32)
        _, net = self._models
        out = net.compute_face_descriptor(chips)
        return np.asarray([np.asarray(d) for d in out], np.float32)


def _inner(rgb: np.ndarray, points68: np.ndarray) -> np.ndarray:
    """`rgb` with mid-grey outside the hull of jaw and brows."""
    import cv2

    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points68[:27]).astype(np.int32)), 1)
    out = np.full_like(rgb, 128)
    out[mask > 0] = rgb[mask > 0]
    return out


def identity_of(descriptors: np.ndarray) -> np.ndarray:
    """One identity from a faceset's descriptors: their mean (dlib's space is Euclidean)."""
    if len(descriptors) == 0:
        raise FacelabError("No face to take an identity from.")
    return descriptors.mean(0)


def distances(descriptors: np.ndarray, identity: np.ndarray) -> np.ndarray:
    return np.linalg.norm(descriptors - identity[None], axis=1)
