"""Manual extraction: a face placed by hand where the detector missed it or got it wrong
(DeepFaceLab's manual extractor, for the studio's page).

The user draws or moves a box and `landmarks_in_box` runs the workspace's landmarker inside
it (loaded once, shared by the server's threads), or places the mean face where it finds
none, so there are always points to drag. `face_from_points` turns the 68 points, dragged or
not, into an aligned face exactly as extraction does: the workspace's face type and size,
the pose, and a FaceMesh mesh bent onto the points by a thin-plate spline (so mesh-based
merges and meshswap take the face). Its detector name, `manual`, says it was placed by hand.

`save_manual_face` writes it into `data_<side>/aligned/` with the frame's next face index,
records it in `faces.json` (a rerun of `facelab extract` keeps it and skips the frame),
takes the frame off `aligned_missing.txt` and redraws its debug frame when the side has
debug frames; `replace_face` puts a face in the place of a wrong one, which goes to
`aligned_trash/` (`facelab faceset restore` brings it back). Both hold the `faces-<side>`
lock, as extraction and curation do. Faces are found by their metadata (frame name, face
index), as the merge finds them, so a sorted faceset works too.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.debug import draw_debug
from facelab.faces.extract import MISSING, STATE, FaceExtractOptions, _lock, _settings, face_name
from facelab.faces.extractor import ExtractorOptions, Face
from facelab.faces.faceimage import FaceMeta, read_meta, write_face
from facelab.faces.facetype import FaceType, crop_face, face_transform
from facelab.faces.landmarks import (
    Landmarker,
    bend_mesh,
    box_from_points,
    create_landmarker,
    mean_face_in_box,
)
from facelab.faces.pose import mesh_pose, pose_from_68
from facelab.faces.record import Detection, Landmarks
from facelab.fsutil import atomic_path, move_to_trash, read_json, write_json
from facelab.progress import NULL
from facelab.video.source import INDEX, MANIFEST, FrameSource, VideoSource, open_frames
from facelab.workspace import SIDES, Side, Workspace

MANUAL = "manual"  # the detector name of a face placed by hand
MIN_BOX = 20  # px: a smaller face gives the landmarker and the trainer nothing to work with

_LANDMARKERS: dict[str, Landmarker] = {}
_FIT_LOCK = threading.Lock()  # one model, not thread-safe, shared by the server's threads
_WRITE_LOCK = threading.Lock()  # locks.hold is re-entrant within a process: not for threads
_META_LOCK = threading.Lock()
_METAS: dict[Path, tuple[tuple[int, int, int], FaceMeta | None]] = {}
_FOLDERS: dict[Path, tuple[int, int, dict[str, list[tuple[Path, FaceMeta]]]]] = {}
_SOURCE_LOCK = threading.Lock()
_SOURCES: dict[tuple[Path, str], tuple[Any, VideoSource]] = {}
T = TypeVar("T")


@dataclass
class ManualFace(Face):
    """A face placed by hand: the extractor's record plus the frame it was placed on."""

    frame_name: str
    side: Side
    frame: np.ndarray = field(repr=False, compare=False)


# -- landmarks --------------------------------------------------------------------------------

def check_box(box: Any, shape: tuple[int, ...],
              what: str = "The face box") -> tuple[float, float, float, float]:
    """`box` (x0, y0, x1, y1) as floats, or one FacelabError: not four finite numbers,
    smaller than MIN_BOX, or less than half of it inside the frame of `shape`."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise FacelabError(f"{what} must be four numbers x0, y0, x1, y1.") from None
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise FacelabError(f"{what} must be four finite numbers x0, y0, x1, y1.")
    w, h = x1 - x0, y1 - y0
    if w < MIN_BOX or h < MIN_BOX:
        raise FacelabError(f"{what} is {max(w, 0):.0f}×{max(h, 0):.0f} pixels: make it at "
                           f"least {MIN_BOX}×{MIN_BOX} around the face.")
    fh, fw = shape[:2]
    inside = max(0.0, min(x1, fw) - max(x0, 0)) * max(0.0, min(y1, fh) - max(y0, 0))
    if inside < 0.5 * w * h:
        raise FacelabError(f"{what} ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) lies mostly "
                           f"outside the {fw}×{fh} frame: put it around a face in the frame.")
    return x0, y0, x1, y1


def _bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def _fit(frame: np.ndarray, box: tuple[float, float, float, float],
         options: ExtractorOptions) -> Landmarks | None:
    """The workspace's landmarker in `box`, loaded on first use and kept (≈ 1 s to load)."""
    with _FIT_LOCK:
        marker = _LANDMARKERS.get(options.landmarks)
        if marker is None:
            marker = _LANDMARKERS[options.landmarks] = create_landmarker(
                options.landmarks, device=options.device)
        return marker.fit(frame, box)


def landmarks_in_box(frame: np.ndarray, box: tuple[float, float, float, float],
                     options: ExtractorOptions | None = None) -> Landmarks:
    """The 68 points (mesh, pose) of the face in a box the user drew, a detector's kind of
    box; where the landmarker finds none, the mean face filling the box (model "mean")."""
    options = options or ExtractorOptions()
    frame = _bgr(frame)
    box = check_box(box, frame.shape)
    found = _fit(frame, box, options)
    return found if found is not None else mean_face_in_box(box)


def _points68(points68: Any) -> np.ndarray:
    try:
        pts = np.asarray(points68, dtype=np.float64)
    except (TypeError, ValueError):
        pts = np.zeros(0)
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        raise FacelabError("A face needs 68 points, each two finite numbers x, y.")
    return pts


def face_from_points(frame: np.ndarray, points68: Any, frame_name: str, side: Side,
                     options: ExtractorOptions | None = None) -> ManualFace:
    """The aligned face of 68 points the user placed (or accepted) on `frame`, as automatic
    extraction makes it with `options` (use `workspace_options(ws, side).extractor`)."""
    options = options or ExtractorOptions()
    side, frame_name = _side(side), _plain_name(frame_name)
    frame = _bgr(frame)
    pts = _points68(points68)
    box = check_box(box_from_points(pts), frame.shape, "The face the 68 points outline")
    found = _fit(frame, box, options)
    mesh = None if found is None or found.mesh is None else \
        bend_mesh(found.mesh, found.points68, pts)
    yaw, pitch, roll = pose_from_68(pts) if mesh is None else mesh_pose(mesh)
    lm = Landmarks(pts, mesh, yaw, pitch, roll, model=options.landmarks)
    face_type = FaceType(options.face_type)
    mat = face_transform(pts, face_type, options.size, yaw_deg=yaw)
    return ManualFace(0, Detection(box, 1.0, None, MANUAL), lm, mat,
                      crop_face(frame, mat, options.size), face_type, frame_name, side, frame)


# -- the workspace ----------------------------------------------------------------------------

def _side(side: str) -> Side:
    if side not in SIDES:
        raise FacelabError(f"Unknown side {side!r}: use src or dst.")
    return side  # type: ignore[return-value]


def _plain_name(name: Any) -> str:
    if not isinstance(name, str) or name in ("", ".", "..") or len(name) > 255 or any(
            c in "/\\\x7f" or c < " " for c in name):
        raise FacelabError(f"{name!r} is not a frame name.")
    return name


def _read_state(ws: Workspace, side: Side) -> dict[str, Any] | None:
    """faces.json ({"settings", "frames": name → faces}), None before any extraction."""
    path = ws.frames_dir(side) / STATE
    if not path.exists():
        return None
    try:
        doc = read_json(path)
        doc["frames"] = {str(k): int(v) for k, v in doc["frames"].items()}
        doc["settings"] = dict(doc["settings"])
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        raise FacelabError(f"{path} is damaged ({e}); `facelab extract {side} --force` "
                           "extracts again.") from None
    return doc


def workspace_options(ws: Workspace, side: Side) -> FaceExtractOptions:
    """The options the side's faces were extracted with (faces.json), else the defaults: a
    face placed by hand must match its automatic neighbours."""
    return _options(ws, _side(side), _read_state(ws, side))


def _options(ws: Workspace, side: Side, state: dict[str, Any] | None) -> FaceExtractOptions:
    if state is None:
        return FaceExtractOptions()
    s = state["settings"]
    try:
        extractor = ExtractorOptions(detector=s["detector"], landmarks=s["landmarks"],
                                     face_type=FaceType(s["face_type"]), size=int(s["size"]))
        return FaceExtractOptions(extractor=extractor, jpeg_quality=int(s["jpeg_quality"]))
    except (KeyError, ValueError, TypeError) as e:
        raise FacelabError(f"{ws.frames_dir(side) / STATE} is damaged ({e}); `facelab extract "
                           f"{side} --force` extracts again.") from None


def _stat(path: Path) -> tuple[int, int] | None:
    st = path.stat() if path.exists() else None
    return (st.st_mtime_ns, st.st_size) if st else None


def _with_source(ws: Workspace, side: Side, use: Callable[[FrameSource], T]) -> T:
    """`use` the side's frames; a kept video stays open between calls (walking to the next
    frame decodes one frame, not a seek from the key frame) until its index changes."""
    folder = ws.frames_dir(_side(side))
    stamp = [_stat(folder / name) for name in (MANIFEST, INDEX)]
    with _SOURCE_LOCK:
        key = (ws.root.resolve(), side)
        hit = _SOURCES.pop(key, None)
        if hit is not None and hit[0] != stamp:
            hit[1].close()
            hit = None
        source = hit[1] if hit is not None else open_frames(ws, side)
        try:
            return use(source)
        finally:
            if isinstance(source, VideoSource):
                _SOURCES[key] = (stamp, source)


def release() -> None:
    """Close the kept videos and landmarkers held for the page (the server's shutdown)."""
    with _SOURCE_LOCK:
        for _, source in _SOURCES.values():
            source.close()
        _SOURCES.clear()
    with _FIT_LOCK:
        for marker in _LANDMARKERS.values():
            marker.close()
        _LANDMARKERS.clear()


def frame_names(ws: Workspace, side: Side) -> list[str]:
    """Every frame of the side in clip order (image files or the kept video)."""
    return _with_source(ws, side, lambda source: list(source.names))


def load_frame(ws: Workspace, side: Side, frame_name: str) -> np.ndarray:
    """One frame (BGR) by name, from its file or the kept video."""
    name = _plain_name(frame_name)

    def read(source: FrameSource) -> np.ndarray:
        if name not in set(source.names):
            raise FacelabError(f"data_{side} has no frame {name}.")
        return _bgr(source.read(name))
    return _with_source(ws, side, read)


def missing_frames(ws: Workspace, side: Side) -> list[str]:
    """The frames without a face: aligned_missing.txt (dst), else faces.json's (src)."""
    path = ws.frames_dir(_side(side)) / MISSING
    if path.is_file():
        names = path.read_text(encoding="utf-8", errors="replace").splitlines()
    else:
        state = _read_state(ws, side)
        names = sorted(n for n, c in (state or {"frames": {}})["frames"].items() if c == 0)
    return [n.strip() for n in names if n.strip() and "/" not in n and "\\" not in n]


def _by_frame(folder: Path) -> dict[str, list[tuple[Path, FaceMeta]]]:
    """The faces of an aligned folder by frame name. A header is read once per file version
    (≈ 1 ms a face); while the folder's mtime stands (facelab writes files by rename, which
    changes it) and was over a second old when last scanned, not even a file is stat'ed.
    Unreadable files (an add-debug overlay, a damaged face) are no faces."""
    try:
        stamp = folder.stat().st_mtime_ns
    except FileNotFoundError:
        return {}
    with _META_LOCK:
        hit = _FOLDERS.get(folder)
        if hit is not None and hit[0] == stamp and hit[1] - stamp > 1_000_000_000:
            return hit[2]
        scanned = time.time_ns()
        index: dict[str, list[tuple[Path, FaceMeta]]] = defaultdict(list)
        listed = set()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = Path(entry.path)
                if path.suffix.lower() not in (".jpg", ".jpeg") or entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # removed meanwhile
                    continue
                key, got = (st.st_mtime_ns, st.st_size, st.st_ino), _METAS.get(path)
                if got is None or got[0] != key:
                    try:
                        got = key, read_meta(path)
                    except FacelabError:
                        got = key, None
                    _METAS[path] = got
                listed.add(path)
                if got[1] is not None:
                    index[got[1].source_filename].append((path, got[1]))
        for path in [p for p in _METAS if p.parent == folder and p not in listed]:
            del _METAS[path]
        _FOLDERS[folder] = (stamp, scanned, index)
        return index


def frame_face_files(ws: Workspace, side: Side, frame_name: str) -> list[tuple[Path, FaceMeta]]:
    """The faces of one frame (files and metadata copies) by face index."""
    faces = _by_frame(ws.aligned_dir(_side(side))).get(_plain_name(frame_name), [])
    return sorted(((p, copy.deepcopy(m)) for p, m in faces),
                  key=lambda pm: (pm[1].face_index, pm[0].name))


def warm(ws: Workspace, side: Side) -> int:
    """Read every face's header now (the first call's cost, ≈ 1 ms a face, once per
    process), e.g. in a thread as the page opens; the number of faces."""
    return sum(map(len, _by_frame(ws.aligned_dir(_side(side))).values()))


def frame_faces(ws: Workspace, side: Side, frame_name: str) -> list[FaceMeta]:
    """The metadata of one frame's faces, by face index."""
    return [m for _, m in frame_face_files(ws, side, frame_name)]


def save_manual_face(ws: Workspace, side: Side, frame_name: str, face: ManualFace) -> Path:
    """Write a face placed by hand as the frame's next face; its path."""
    return _save(ws, side, frame_name, face, None)


def replace_face(ws: Workspace, side: Side, frame_name: str, face_index: int,
                 face: ManualFace) -> Path:
    """Put `face` in the place (file, face index) of the frame's face `face_index`, which
    moves to aligned_trash/; the new face's path."""
    return _save(ws, side, frame_name, face, int(face_index))


def _save(ws: Workspace, side: Side, frame_name: str, face: ManualFace,
          old_index: int | None) -> Path:
    side, name = _side(side), _plain_name(frame_name)
    if (face.side, face.frame_name) != (side, name):
        raise FacelabError(f"This face was placed on {face.side} frame {face.frame_name}, "
                           f"not on {side} frame {name}.")
    ws.require()
    with _WRITE_LOCK, _lock(ws, side, NULL):
        state = _read_state(ws, side)
        opts = _options(ws, side, state)
        want = (opts.extractor.face_type.value, opts.extractor.size)
        if (face.face_type.value, face.image.shape[0]) != want:
            raise FacelabError(f"data_{side}/aligned/ holds {want[0]} faces of {want[1]} px, "
                               f"this one is {face.face_type.value} of {face.image.shape[0]} "
                               "px: place it with the workspace's options.")
        if name not in set(frame_names(ws, side)):
            raise FacelabError(f"data_{side} has no frame {name}.")
        faces = frame_face_files(ws, side, name)
        aligned = ws.aligned_dir(side)
        if old_index is None:
            index = max((m.face_index for _, m in faces), default=-1) + 1
            while (aligned / face_name(Path(name), index)).exists():
                index += 1
            path = aligned / face_name(Path(name), index)
        else:
            old = [p for p, m in faces if m.face_index == old_index]
            if not old:
                have = ", ".join(str(m.face_index) for _, m in faces) or "none"
                raise FacelabError(f"{side} frame {name} has no face {old_index} (its faces: "
                                   f"{have}).")
            path, index = old[0], old_index
            move_to_trash([path], ws.aligned_trash_dir(side), aligned)
        face = replace(face, index=index)
        meta = face.meta(name, (face.frame.shape[1], face.frame.shape[0]))
        meta.original_name = face_name(Path(name), index)
        write_face(path, face.image, meta, opts.jpeg_quality)
        _record(ws, side, state, opts, name, len(faces) + (old_index is None))
        _drop_missing(ws, side, name)
        _redraw_debug(ws, side, name, face.frame)
    return path


def _record(ws: Workspace, side: Side, state: dict[str, Any] | None, opts: FaceExtractOptions,
            name: str, count: int) -> None:
    """The frame's face count in faces.json: a rerun of extract skips the frame."""
    doc = state or {"settings": _settings(opts), "frames": {}}
    doc["frames"][name] = count
    write_json(ws.frames_dir(side) / STATE, doc)


def _drop_missing(ws: Workspace, side: Side, name: str) -> None:
    path = ws.frames_dir(side) / MISSING
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    if name in lines:
        with atomic_path(path) as tmp:
            tmp.write_text("".join(f"{n}\n" for n in lines if n != name), encoding="utf-8")


def _redraw_debug(ws: Workspace, side: Side, name: str, frame: np.ndarray) -> None:
    """The frame's debug image with all its faces, when the side has debug frames."""
    folder = ws.aligned_debug_dir(side)
    if not folder.is_dir() or not any(folder.glob("*.jpg")):
        return
    faces = [Face.from_meta(m) for m in frame_faces(ws, side, name)]
    with atomic_path(folder / f"{Path(name).stem}.jpg") as tmp:
        cv2.imwrite(str(tmp), draw_debug(frame, faces), [cv2.IMWRITE_JPEG_QUALITY, 90])
