"""BlazeFace short range (MediaPipe 0.10.14, TF Lite on the CPU): the `fast` detector.

The model ships inside the mediapipe wheel. MediaPipe imports matplotlib and starts glog,
absl and TF Lite, which print to stderr: it is imported only when the first frame is
detected, with their logging turned down first. MediaPipe's wheel has no GPU path on Linux,
so this detector always runs on the CPU (`device="cuda"` is refused, not silently ignored).
Its six keypoints (eyes, nose tip, mouth centre, ear tragions) hold no mouth corners, so
`Detection.keypoints` stays None.
"""

from __future__ import annotations

import warnings
from typing import Any

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.detect._base import Detector, register, require
from facelab.faces.mediapipe_runtime import quiet_env, quiet_stderr


@register
class BlazeFace(Detector):
    """Cheapest detector measured (docs/DETECTORS.md); frontal, near faces (< 2 m)."""

    name = "blazeface"
    package = "mediapipe==0.10.14"
    threshold = 0.5
    sensitive_threshold = 0.3
    model_selection = 0  # 0: short range (128² input), 1: full range (192², sparse)

    def _load(self) -> Any:
        if self.device == "cuda":
            raise FacelabError("The 'blazeface' detector runs on the CPU only (MediaPipe's "
                               "wheel has no GPU path); use device 'auto' or 'cpu'.")
        quiet_env()
        require("mediapipe", "mediapipe", f"--no-deps {self.package}", self.name)
        from mediapipe.python.solutions import face_detection

        # protobuf 4 warns on every process that finds a face; mediapipe 0.10.14 is pinned
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype",
                                category=UserWarning)
        with quiet_stderr():  # TF Lite and absl log from C++ while the graph starts
            model = face_detection.FaceDetection(model_selection=self.model_selection,
                                                 min_detection_confidence=self.min_score)
            model.process(np.zeros((64, 64, 3), np.uint8))  # returns once the graph is up
        return model

    def _detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        h, w = image.shape[:2]
        result = self._model.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        boxes, scores = [], []
        for det in result.detections or []:
            rel = det.location_data.relative_bounding_box
            x0, y0 = rel.xmin * w, rel.ymin * h
            boxes.append((x0, y0, x0 + rel.width * w, y0 + rel.height * h))
            scores.append(det.score[0])
        return np.array(boxes, np.float64).reshape(-1, 4), np.array(scores), None
