"""Face detection: pick a detector by role or name, get `Detection`s in frame pixels.

    det = create_detector("accurate")        # RetinaFace: fewest false faces (the default)
    det = create_detector("fast")            # BlazeFace: cheapest, more misses on hard poses
    faces = det.detect(frame_bgr)            # largest box first

The roles and why each implementation holds them are measured in docs/DETECTORS.md.
Importing this package loads no model and imports neither runtime.
"""

from facelab.faces.detect import blazeface, retinaface  # noqa: F401  (they register)
from facelab.faces.detect._base import (
    DEFAULT,
    ROLES,
    Detector,
    create_detector,
    detector_names,
    register,
)

__all__ = ["DEFAULT", "ROLES", "Detector", "create_detector", "detector_names", "register"]
