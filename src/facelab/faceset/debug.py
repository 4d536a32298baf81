"""`add-debug` / `remove-debug`: each face with its 68 landmarks drawn, written beside it as
`<name>_debug.jpg`, so eyebrows set too low or a jaw line off the face stand out when
flipping through a faceset sorted by yaw. The overlays carry a marker (folder.DEBUG_HEAD):
remove-debug deletes those and nothing else."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.faceimage import read_face
from facelab.faceset.folder import DEBUG_HEAD, DEBUG_SUFFIX, Faceset, is_debug, locked
from facelab.fsutil import atomic_path
from facelab.progress import NULL, Reporter

#: iBUG 68 contours: (first, last, closed).
CONTOURS = ((0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False),
            (31, 35, False), (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True))
LINE, POINT = (0, 255, 0), (0, 0, 255)


def overlay(image: np.ndarray, landmarks: np.ndarray, label: str) -> np.ndarray:
    out = image.copy()
    pts = np.round(landmarks).astype(np.int32)
    for a, b, closed in CONTOURS:
        cv2.polylines(out, [pts[a:b + 1]], closed, LINE, 1, cv2.LINE_AA)
    for x, y in pts:
        cv2.circle(out, (int(x), int(y)), 2, POINT, -1, cv2.LINE_AA)
    cv2.putText(out, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def debug_path(face: Path) -> Path:
    return face.with_name(face.stem + DEBUG_SUFFIX)


def add_debug(fs: Faceset, reporter: Reporter = NULL) -> int:
    """Write an overlay beside every face; returns how many. A file of that name that is
    not ours is left alone (and said so)."""
    with locked(reporter, fs):
        return _add_debug(fs, reporter)


def _add_debug(fs: Faceset, reporter: Reporter) -> int:
    faces = fs.require_faces()
    written = 0
    with reporter.task("debug overlays", len(faces)) as task:
        for f in faces:
            dest = debug_path(f)
            if dest.exists() and not is_debug(dest):
                reporter.warn(f"{dest.name} exists and is not a facelab overlay: skipped.")
                continue
            image, meta = read_face(f)
            img = overlay(image, meta.landmarks,
                          f"{f.name} yaw {meta.yaw:+.0f} pitch {meta.pitch:+.0f}")
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise FacelabError(f"{dest.name} could not be encoded.")
            with atomic_path(dest) as tmp:
                tmp.write_bytes(DEBUG_HEAD + buf.tobytes()[2:])  # marker right after SOI
            written += 1
            task.advance()
    return written


def remove_debug(fs: Faceset, reporter: Reporter = NULL) -> int:
    """Delete the overlays add-debug wrote (by their marker); returns how many."""
    if not fs.folder.is_dir():
        raise FacelabError(f"{fs.label} does not exist.")
    with locked(reporter, fs):
        gone = fs.debug_files()
        for p in gone:
            p.unlink()
        return len(gone)
