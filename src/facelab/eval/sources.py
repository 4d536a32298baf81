"""What eval reads: frames of a video or of a folder of images, and faces of a faceset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError
from facelab.faces.faceimage import has_meta, read_face
from facelab.faceset.folder import is_debug
from facelab.video.frames import read_image
from facelab.workspace import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_images


class UnreadableInput(FacelabError):
    """An input of eval is missing or cannot be read (exit 2, like `verify`)."""

    exit_code = 2


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def read_frames(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """BGR frames of a video, or of the images in a folder in name order (merged frames).
    A missing or unreadable input is one UnreadableInput, raised before the first frame."""
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise UnreadableInput(f"{path} holds no images.")
        return (_image(p) for p in images[:limit])
    if not is_video(path):
        what = "does not exist" if not path.exists() else "is not a video or a folder of frames"
        raise UnreadableInput(f"{path} {what}.")
    return _video_frames(path, limit)


def _image(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except FacelabError as e:
        raise UnreadableInput(str(e)) from None


def _video_frames(path: Path, limit: int | None) -> Iterator[np.ndarray]:
    from facelab.video.frames import DecodeState, decode_video, to_array
    from facelab.video.probe import open_video

    try:
        container = open_video(path)
    except FacelabError as e:
        raise UnreadableInput(str(e)) from None
    try:
        state = DecodeState()
        first = True
        for frame in decode_video(container, state):
            first = False
            yield to_array(frame)
            if limit is not None and state.frames >= limit:
                break
        if first:
            raise UnreadableInput(f"{path.name} has no readable video frame.")
    finally:
        container.close()


def load_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """All frames at once (eval compares two videos frame by frame and looks back in time)."""
    return list(read_frames(path, limit))


def faceset_images(folder: Path, limit: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Up to `limit` faces of a folder, evenly spread: (image, 68 points in it) for facelab's
    aligned faces, (image, None) for other images (the caller finds the face). An aligned
    face whose source frame lies in the folder above (data_src/aligned → data_src/) is
    measured in that frame, like the result's faces, rather than in its tight crop."""
    paths = [p for p in list_images(folder)
             if p.suffix.lower() in IMAGE_EXTENSIONS and not is_debug(p)]
    if not paths:
        raise UnreadableInput(f"{folder} holds no face images.")
    if len(paths) > limit:
        paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, limit).round()]
    out: list[tuple[np.ndarray, np.ndarray | None]] = []
    for p in paths:
        if p.suffix.lower() in (".jpg", ".jpeg") and has_meta(p):
            image, meta = read_face(p)
            frame = folder.parent / meta.source_filename
            if frame.is_file():
                out.append((_image(frame), np.asarray(meta.source_landmarks, np.float64)))
            else:
                out.append((image, np.asarray(meta.landmarks, np.float64)))
        else:
            out.append((_image(p), None))
    return out
