"""Head pose from each face's 68 landmarks: `yaw` (left → right) and `pitch` (down → up).

The pose comes from the landmarks themselves (not the stored angles), so a face whose
landmarks are edited or mirrored sorts by what they now say."""

from __future__ import annotations

from facelab.faces.pose import pose_from_68
from facelab.faceset.features import FaceData, FaceRecord, column, feature
from facelab.faceset.methods import Selection, SortOptions, by_score, method


@feature("pose", pixels=False)
def yaw_pitch(face: FaceData) -> list[float]:
    """[yaw, pitch] in degrees; + yaw turns toward the image's right, + pitch looks up."""
    yaw, pitch, _ = pose_from_68(face.meta.landmarks)
    return [yaw, pitch]


@method("yaw", ("pose",))
def by_yaw(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Faces turned to the image's left first, to the right last."""
    return by_score(column(recs, "pose")[:, 0])


@method("pitch", ("pose",))
def by_pitch(recs: list[FaceRecord], opts: SortOptions) -> Selection:
    """Faces looking down first, up last."""
    return by_score(column(recs, "pose")[:, 1])
