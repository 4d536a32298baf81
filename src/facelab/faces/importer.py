"""Bringing DeepFaceLab facesets in: untrusted files in, facelab aligned faces out.

Each file is read by `dfl.read_dfl` (never runs pickle); a refused or broken file is
reported and skipped, the import goes on with the others. Pixels are re-encoded only for
PNG sources; a JPG keeps its exact JPEG data (the metadata segments are replaced).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError
from facelab.faces.dfl import DflFace, is_dfl_file, read_dfl
from facelab.faces.faceimage import FaceMeta, write_face
from facelab.faces.facetype import similarity_fit
from facelab.fsutil import move_to_trash, timestamp
from facelab.progress import NULL, Reporter
from facelab.video.frames import read_image

_SAFE_NAME = re.compile(r"^[\w.\- ]{1,200}$")


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file, one-line reason)


def to_meta(face: DflFace, image: np.ndarray, name: str) -> FaceMeta:
    """facelab metadata for a DeepFaceLab face whose pixels are `image`."""
    from facelab.faces.pose import pose_from_68

    size = image.shape[0]
    if image.shape[0] != image.shape[1]:
        raise FacelabError(f"{name}: the face image is not square ({image.shape[1]}×"
                           f"{image.shape[0]}); not a DeepFaceLab aligned face.")
    src = face.source_landmarks
    mat = face.image_to_face_mat
    if mat is None and src is not None:
        mat = similarity_fit(src, face.landmarks)
    if src is None or mat is None:  # nothing ties the face to a frame: the face is the frame
        mat = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        src = face.landmarks
    x0, y0 = np.floor(src.min(0)).astype(int)
    x1, y1 = np.ceil(src.max(0)).astype(int)
    rect = face.source_rect or (int(x0), int(y0), int(x1) + 1, int(y1) + 1)
    width = max(rect[2], int(x1) + 1, 1)
    height = max(rect[3], int(y1) + 1, 1)
    source = face.source_filename if face.source_filename and \
        _SAFE_NAME.match(face.source_filename) and ".." not in face.source_filename else name
    yaw, pitch, roll = pose_from_68(src)
    return FaceMeta(
        face_type=face.face_type, size=size, landmarks=face.landmarks,
        source_landmarks=src, frame_to_face=mat, source_filename=source,
        source_rect=tuple(int(v) for v in rect),  # type: ignore[arg-type]
        source_size=(width, height), face_index=0, yaw=yaw, pitch=pitch, roll=roll,
        detector="deepfacelab", score=1.0,
        mask_polys=[dict(p) for p in face.polys], mask=face.xseg_mask,
        original_name=f"{Path(name).stem}.jpg",
        extra={"imported_from": "deepfacelab", "source_size_estimated": True,
               "eyebrows_expand_mod": face.eyebrows_expand_mod},
    )


def _convert(path: Path, dest_dir: Path) -> str:
    """Write the facelab face of DeepFaceLab face `path` into `dest_dir`; its name."""
    image = read_image(path)
    meta = to_meta(read_dfl(path), image, path.name)
    target = dest_dir / f"{path.stem}.jpg"
    if target.exists():  # never overwrite a face that is already there
        target = dest_dir / f"{path.stem}_{timestamp()}.jpg"
        meta.original_name = target.name
    write_face(target, image, meta)
    return target.name


def import_dfl(source_dir: Path, dest_dir: Path, reporter: Reporter = NULL) -> ImportReport:
    """Import every DeepFaceLab face (JPG or PNG) in `source_dir` into `dest_dir`."""
    if not source_dir.is_dir():
        raise FacelabError(f"{source_dir} is not a folder.")
    files = sorted(p for p in source_dir.iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())
    if not files:
        raise FacelabError(f"{source_dir} holds no .jpg or .png faces.")
    dest_dir.mkdir(parents=True, exist_ok=True)
    report = ImportReport()
    with reporter.task(f"import {source_dir.name}", len(files)) as task:
        for path in files:
            try:
                report.imported.append(_convert(path, dest_dir))
            except FacelabError as e:
                report.refused.append((path.name, str(e)))
            task.advance()
    return report


def convert_png(folder: Path, reporter: Reporter = NULL) -> ImportReport:
    """Old (DeepFaceLab 1.0) PNG facesets to JPG in place; the PNGs move to the folder's
    `png_trash/` so nothing is lost."""
    if not folder.is_dir():
        raise FacelabError(f"{folder} is not a folder.")
    pngs = sorted(p for p in folder.glob("*.png") if is_dfl_file(p))
    if not pngs:
        raise FacelabError(f"{folder} holds no DeepFaceLab PNG faces.")
    report = ImportReport()
    with reporter.task(f"convert {folder.name}", len(pngs)) as task:
        for png in pngs:
            try:
                report.imported.append(_convert(png, folder))
                move_to_trash([png], folder / "png_trash", folder)
            except FacelabError as e:
                report.refused.append((png.name, str(e)))
            task.advance()
    return report
