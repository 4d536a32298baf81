"""The detector registry and the base class every detector plugin derives from.

Faceswap's plugin style: each detector is a small class registered under its name, with its
defaults (score threshold, input size) beside it as class attributes, so choosing, listing
and documenting detectors needs no table kept elsewhere. Models load lazily, on the first
`detect`, once per instance: creating a detector is cheap and cannot fail on a model file.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.record import Detection

#: Roles the user names by purpose, mapped to a registered implementation (docs/DETECTORS.md).
ROLES: dict[str, str] = {"accurate": "retinaface", "fast": "blazeface"}
DEFAULT = "accurate"
DEVICES = ("auto", "cpu", "cuda")

_REGISTRY: dict[str, type[Detector]] = {}


#: threads each ONNX session of this process runs (extraction's measured layout sets it)
THREADS = [0]


class Detector(ABC):
    """Finds faces in one BGR frame; one instance per thread (the runtimes are not shared)."""

    name: ClassVar[str]  # registered name, recorded in every Detection
    package: ClassVar[str]  # pip requirement that ships the model, for the error message
    threshold: ClassVar[float]  # default minimum score
    sensitive_threshold: ClassVar[float]  # minimum score of the sensitive pass
    max_side: ClassVar[int] = 1280  # larger frames are shrunk first: big faces, bounded time

    def __init__(self, device: str = "auto", threshold: float | None = None,
                 sensitive: bool = False) -> None:
        if device not in DEVICES:
            raise FacelabError(f"Unknown device {device!r}; use one of {', '.join(DEVICES)}.")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise FacelabError(f"A detector threshold must lie between 0 and 1, not {threshold}.")
        self.device = device
        self.sensitive = sensitive
        default = self.sensitive_threshold if sensitive else type(self).threshold
        self.min_score = default if threshold is None else threshold
        self._model: Any = None  # the runtime's session or graph, loaded on first use

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in an H×W×3 uint8 BGR frame, largest box first (see `_records`)."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 BGR image, got {image_bgr.shape} "
                             f"{image_bgr.dtype}")
        if self._model is None:
            self._model = self._load()
        h, w = image_bgr.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        image = image_bgr if scale == 1.0 else cv2.resize(
            image_bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        boxes, scores, points = self._detect(np.ascontiguousarray(image))
        if scale != 1.0:
            back = np.array([w / image.shape[1], h / image.shape[0]])
            boxes = boxes * np.tile(back, 2)
            points = None if points is None else points * back
        return self._records(boxes, scores, points, w, h)

    @abstractmethod
    def _load(self) -> Any:
        """Load the model from the installed package; FacelabError when it is missing."""

    @abstractmethod
    def _detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Boxes (N×4 x0 y0 x1 y1), scores (N) ≥ min_score, keypoints (N×5×2) or None."""

    def _records(self, boxes: np.ndarray, scores: np.ndarray, points: np.ndarray | None,
                 w: int, h: int) -> list[Detection]:
        """Clip boxes to the frame and order them by area, largest first (as DeepFaceLab
        does): true faces all score near 1, so size is what tells the main subject."""
        out = []
        boxes = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, [w, h, w, h])
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            kp = None if points is None else np.asarray(points[i], np.float32).reshape(5, 2)
            out.append(Detection((float(x0), float(y0), float(x1), float(y1)),
                                 float(scores[i]), kp, self.name))
        out.sort(key=lambda d: ((d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), d.score),
                 reverse=True)
        return out


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available under `cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


def detector_names() -> list[str]:
    """Every name `create_detector` accepts: the roles, then the implementations."""
    return [*ROLES, *sorted(_REGISTRY)]


def create_detector(name: str = DEFAULT, device: str = "auto", threshold: float | None = None,
                    sensitive: bool = False) -> Detector:
    """A detector by role ("fast", "accurate") or implementation name.

    `sensitive` asks for the pass used to re-extract frames where a face was missed: a lower
    threshold and, where the detector defines one, extra work (e.g. an upscaled frame).
    """
    cls = _REGISTRY.get(ROLES.get(name, name))
    if cls is None:
        raise FacelabError(f"Unknown face detector {name!r}; known detectors: "
                           f"{', '.join(detector_names())}.")
    return cls(device=device, threshold=threshold, sensitive=sensitive)


def require(module: str, distribution: str, requirement: str, detector: str) -> object:
    """Import `module` from the pip distribution `distribution`, or say how to install it.

    Checks the distribution, not just the module name: `import retinaface` also succeeds
    with an unrelated package of that name installed.
    """
    try:
        importlib.metadata.version(distribution)
        return importlib.import_module(module)
    except (importlib.metadata.PackageNotFoundError, ImportError):
        raise FacelabError(f"The {detector!r} face detector needs the Python package "
                           f"{distribution}: pip install {requirement}") from None


def onnx_session(model: bytes | str, device: str) -> object:
    """An ONNX Runtime session on CUDA when asked for or (`auto`) available, else the CPU.

    Keeps ONNX Runtime's thread count (one per physical core) but stops idle threads from
    spinning: on a shared 2-core machine spinning threads made RetinaFace ≈ 1.8× slower than
    one thread, without spinning it matches one thread there and can still use free cores.
    """
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not cuda:
        raise FacelabError("Device 'cuda' was asked for, but this ONNX Runtime has no CUDA "
                           "provider (install onnxruntime-gpu) or no GPU is visible.")
    providers = ["CPUExecutionProvider"]
    if cuda and device in ("auto", "cuda"):
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS[0]  # 0: ONNX Runtime's choice (one per core)
    options.log_severity_level = 3  # errors only: the model's harmless warnings are noise
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=providers)
