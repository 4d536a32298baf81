"""Plain records that flow through face extraction (no behaviour, no framework)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detection:
    """A face found by a detector, in frame pixels."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    keypoints: np.ndarray | None = None  # 5×2 where the detector gives them (eyes, nose, mouth)
    detector: str = ""


@dataclass
class Landmarks:
    """A face's shape: the 68 iBUG points, the dense mesh when the model gives one, pose."""

    points68: np.ndarray  # 68×2 frame pixels, iBUG order
    mesh: np.ndarray | None  # N×3 frame pixels (x, y, depth in x's scale), e.g. 478 points
    yaw: float  # degrees, + = the face turns toward the image's right
    pitch: float  # degrees, + = the face looks up
    roll: float  # degrees, + = the head tilts clockwise in the image
    model: str = ""
