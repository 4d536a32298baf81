"""The merge's job list: which face of which dst frame is merged, where, and in what order.

The one place that turns data_dst's frames and aligned faces into per-frame `FaceJob`s:
faces grouped by source frame in face-index order (a deleted face is simply absent),
frames numbered by their position in the clip, landmarks smoothed over time. The merger,
the smoother's tests and the benches all build their faces here, so they see the same
faces in the same order.

A family that works from the dst face's FaceMesh mesh (meshswap) asks for it: the mesh is
carried in frame pixels and moved with the smoothed landmarks (see `_frame_mesh`). Other
families do not ask, so their jobs stay two small arrays to pickle to the workers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError
from facelab.faces.faceimage import FaceMeta, read_meta
from facelab.faces.facetype import FIT_POINTS, similarity_fit, transform_points
from facelab.faceset.folder import list_faces
from facelab.fsutil import read_json
from facelab.merge.smooth import (
    SHAPE_BETA,
    SHAPE_MIN_CUTOFF,
    FaceRef,
    adaptive_smooth,
    build_tracks,
    smooth_landmarks,
)
from facelab.meshswap.descriptors import MIN_MESH_POINTS
from facelab.video.source import open_frames
from facelab.workspace import Workspace


@dataclass
class FaceJob:
    """One dst face of one frame, as the worker needs it (small to pickle)."""

    landmarks: np.ndarray  # 68×2 frame px, smoothed
    yaw: float
    pitch: float
    mesh: np.ndarray | None = None  # N×3 frame px (depth in frame px), when asked for
    track: int = -1  # the face's track (`smooth.build_tracks`): whose masks it is smoothed with


def dst_frames(ws: Workspace) -> list[Path]:
    """The dst frames in clip order (for dst kept in its video, paths by name only: the
    frames are read through `video/source.py`)."""
    folder = ws.frames_dir("dst")
    return [folder / name for name in open_frames(ws, "dst").names]


def dst_faces(ws: Workspace) -> dict[str, list[FaceMeta]]:
    """The dst faces' metadata by source frame name (deleted faces are simply absent)."""
    folder = ws.aligned_dir("dst")
    faces = list_faces(folder)
    if not faces:
        raise FacelabError(f"{folder} holds no faces: run `facelab extract dst` first.")
    by_frame: dict[str, list[FaceMeta]] = defaultdict(list)
    for p in faces:
        meta = read_meta(p)
        by_frame[meta.source_filename].append(meta)
    for metas in by_frame.values():
        metas.sort(key=lambda m: m.face_index)
    return by_frame


def dst_fps(ws: Workspace) -> float:
    """dst's frame rate from video.json (the smoother's time base); 25 if unknown."""
    try:
        doc = read_json(ws.video_json)
        num, _, den = str(doc["fps"]).partition("/")
        return float(num) / float(den or 1)
    except (OSError, TypeError, KeyError, ValueError, ZeroDivisionError):
        return 25.0


def face_refs(frames: list[Path], by_frame: dict[str, list[FaceMeta]]) -> list[FaceRef]:
    """The faces of `frames` as the smoother sees them, in (frame, face) order; a frame is
    numbered by its position in `frames`."""
    index = {p.name: i for i, p in enumerate(frames)}
    refs = [FaceRef(index[name], m.face_index, np.asarray(m.source_landmarks, np.float64),
                    tuple(m.source_rect))
            for name, metas in by_frame.items() if name in index for m in metas]
    refs.sort(key=lambda r: (r.frame, r.face))
    return refs


def dst_face_refs(ws: Workspace) -> list[FaceRef]:
    """Every dst frame's faces as a whole-clip merge smooths them (for tests and benches)."""
    return face_refs(dst_frames(ws), dst_faces(ws))


def without_mesh(by_frame: dict[str, list[FaceMeta]], frames: list[Path]) -> list[FaceMeta]:
    """`frames`' dst faces that carry no FaceMesh mesh (extracted with the dlib landmarker
    or imported from DeepFaceLab), in frame order."""
    names = {p.name for p in frames}
    return [m for name, metas in sorted(by_frame.items()) if name in names for m in metas
            if m.mesh is None or len(m.mesh) < MIN_MESH_POINTS]


def frame_mesh(meta: FaceMeta, aligned: np.ndarray | None = None) -> np.ndarray:
    """The face's mesh (stored in aligned-face pixels, or `aligned` in its place) in frame
    pixels: x, y through the inverse of `frame_to_face`, depth times frame pixels per face
    pixel."""
    assert meta.mesh is not None
    mesh = np.asarray(meta.mesh if aligned is None else aligned, np.float64)
    to_frame = meta.face_to_frame()
    scale = float(np.sqrt(abs(np.linalg.det(to_frame[:, :2]))))
    return np.c_[transform_points(mesh[:, :2], to_frame), mesh[:, 2] * scale]


def _frame_mesh(meta: FaceMeta, raw: np.ndarray, smoothed: np.ndarray | None,
                aligned: np.ndarray | None = None) -> np.ndarray:
    """The frame mesh moved by the similarity that takes the raw landmarks to the smoothed
    ones, fitted on the points the crop is placed by (`FIT_POINTS`): the mesh keeps its
    place in the smoothed crop, its pose jitter is smoothed with the crop's, and its
    expression (the mesh's own shape) is `aligned`'s, smoothed by `smooth_meshes`."""
    mesh = frame_mesh(meta, aligned)
    if smoothed is None:
        return mesh
    s = similarity_fit(raw[FIT_POINTS], smoothed[FIT_POINTS])
    scale = float(np.sqrt(abs(np.linalg.det(s[:, :2]))))
    return np.c_[transform_points(mesh[:, :2], s), mesh[:, 2] * scale]


def smooth_meshes(refs: list[FaceRef], by_frame: dict[str, list[FaceMeta]],
                  frames: list[Path], strength: int, fps: float
                  ) -> dict[tuple[int, int], np.ndarray]:
    """Each face's aligned mesh smoothed along its track, by (frame, face index), with the
    landmark smoother's shape filter (`smooth.SHAPE_*`, in units of the face's side): the
    per-frame noise of a FaceMesh fit would otherwise move the swapped face's features by a
    pixel or two each frame, while a blink or a word (fast) passes through."""
    metas = {(i, m.face_index): m for i, p in enumerate(frames)
             for m in by_frame.get(p.name, [])}
    out: dict[tuple[int, int], np.ndarray] = {}
    for track in build_tracks(refs):
        keys = [f.key for f in track.faces]
        group = [metas[k] for k in keys]
        n = min(len(m.mesh) for m in group if m.mesh is not None)  # type: ignore[arg-type]
        x = np.stack([np.asarray(m.mesh, np.float64)[:n] / m.size for m in group])
        t = np.asarray(track.frames, np.float64) / fps
        y = adaptive_smooth(x, t, SHAPE_MIN_CUTOFF / strength, SHAPE_BETA)
        for k, m, mesh in zip(keys, group, y, strict=True):
            out[k] = mesh * m.size
    return out


def face_jobs(frames: list[Path], by_frame: dict[str, list[FaceMeta]],
              smooth: int, fps: float, meshes: bool = False) -> dict[str, list[FaceJob]]:
    """FaceJobs per frame name, landmarks smoothed over time when `smooth` > 0; with
    `meshes`, each job carries its face's mesh in frame pixels (every face must have one:
    check with `without_mesh` first)."""
    index = {p.name: i for i, p in enumerate(frames)}
    smoothed: dict[tuple[int, int], np.ndarray] = {}
    steady: dict[tuple[int, int], np.ndarray] = {}
    refs = face_refs(frames, by_frame)
    tracks = {f.key: i for i, t in enumerate(build_tracks(refs)) for f in t.faces}
    if smooth:
        smoothed = smooth_landmarks(refs, smooth, fps)
        if meshes:
            steady = smooth_meshes(refs, by_frame, frames, smooth, fps)
    jobs: dict[str, list[FaceJob]] = {}
    for name, metas in by_frame.items():
        if name not in index:
            continue
        jobs[name] = out = []
        for m in metas:
            raw = np.asarray(m.source_landmarks, np.float64)
            lm = smoothed.get((index[name], m.face_index))
            key = (index[name], m.face_index)
            mesh = _frame_mesh(m, raw, lm, steady.get(key)) if meshes else None
            out.append(FaceJob(raw if lm is None else lm, float(m.yaw), float(m.pitch), mesh,
                               tracks.get(key, -1)))
    return jobs
