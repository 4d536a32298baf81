"""Debug frames: what extraction saw, so a user can spot bad alignments by eye."""

from __future__ import annotations

import cv2
import numpy as np

from facelab.faces.extractor import Face
from facelab.faces.facetype import invert, transform_points

BOX, POINTS, OUTLINE = (0, 0, 255), (0, 255, 0), (255, 128, 0)


#: debug frames are drawn at full size, then kept at most this many pixels on their long
#: side: a 1080p dst's debug frames took 6× the disk of its aligned faces (430 KB each)
#: while a check by eye of boxes and points needs no more than 720p
MAX_SIDE = 1280


def draw_debug(frame: np.ndarray, faces: list[Face]) -> np.ndarray:
    """The frame with each face's detector box (red), 68 points (green) and the outline of
    its aligned crop (blue, with a tick on the top edge), at most `MAX_SIDE` wide or tall."""
    out = frame.copy()
    thick = max(1, round(min(frame.shape[:2]) / 360))
    for face in faces:
        x0, y0, x1, y1 = (round(v) for v in face.detection.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX, thick)
        for x, y in face.landmarks.points68:
            cv2.circle(out, (round(x), round(y)), thick, POINTS, -1, cv2.LINE_AA)
        size = face.image.shape[0]
        square = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)
        corners = transform_points(square, invert(face.frame_to_face))
        cv2.polylines(out, [np.round(corners).astype(np.int32)], True, OUTLINE, thick,
                      cv2.LINE_AA)
        top = (corners[0] + corners[1]) / 2
        cv2.circle(out, (round(top[0]), round(top[1])), 2 * thick + 1, OUTLINE, -1)
        label = f"{face.index} {face.detection.score:.2f} yaw {face.landmarks.yaw:+.0f}"
        cv2.putText(out, label, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, BOX, thick, cv2.LINE_AA)
    scale = MAX_SIDE / max(out.shape[:2])
    if scale < 1:
        size = (round(out.shape[1] * scale), round(out.shape[0] * scale))
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
    return out
