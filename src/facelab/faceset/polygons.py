"""Mask polygons of aligned faces: DeepFaceLab XSeg's include/exclude polygons, stored in
the face's own metadata (`FaceMeta.mask_polys`), rasterised, and copied along a shot.

A polygon is `{"type": "include" | "exclude", "pts": [[x, y], ...]}` (at least 3 points) in
the aligned face's pixel coordinates: the form `FaceMeta` has always stored and DeepFaceLab
imports arrive in. Polygons from a request are untrusted and checked by the metadata's own
validator (`facemeta.parse_polys`: kinds, 3 to 100,000 points, at most 1,000 polygons,
finite numbers, every point within one face side of the face); a refusal is one sentence.

Writing polygons rewrites only the JPG's metadata segments (`faceimage.update_meta`): the
pixel bytes stay identical, and since sort, trash, skip, confirm and undo move whole files,
the polygons go wherever the face goes.

The rule that turns polygons into a mask (`polygon_mask`) is XSeg's: polygons are painted
in their stored order onto an empty mask, an include with 1 and an exclude with 0. So an
exclude cuts out of the includes before it, and an include drawn after an exclude fills
back over it (an island inside a hole). DeepFaceLab's importer stores includes first
(`faces/dfl.py`), where this is simply "the includes minus the excludes".
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.faceimage import FaceMeta, read_meta, update_meta
from facelab.faces.facemeta import MAX_SIDE, PathLike, parse_polys
from facelab.faces.facetype import FIT_POINTS, similarity_fit
from facelab.faceset.folder import list_faces
from facelab.faceset.labels import FOLDERS, SKIPPED, face_info, face_path, noted, writing
from facelab.workspace import Workspace

MAX_COPY = 10_000  # faces copy_forward may visit in one call
_SHIFT = 4  # fractional bits of the rasteriser's vertices (1/16 px)
#: A face links to the previous one of its track when its box centre is within this many
#: box sizes and the sizes agree within this ratio (merge/smooth.py's rule, one frame apart).
LINK_DISTANCE = 0.5
LINK_SIZE_RATIO = 1.5
_EXTRACTED = re.compile(r".+_\d+(?:_\d+)?\.jpe?g", re.IGNORECASE)  # <frame>_<i>[_k].jpg
_FRAME = re.compile(r"(.*?)(\d+)(\.[^.]*)?")


def polygon_mask(polys: list[dict[str, Any]], size: int) -> np.ndarray:
    """The size×size float32 mask (0 or 1) the polygons paint, in order (see above).

    A pixel is painted when its centre lies inside the polygon or the outline touches it
    (OpenCV's fillPoly with 1/16-pixel vertices; self-intersections fill alternately)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIDE:
        raise FacelabError(f"The mask size must be a whole number from 1 to {MAX_SIDE}, "
                           f"not {size!r}.")
    mask = np.zeros((size, size), np.uint8)
    for p in parse_polys(_plain(polys)):
        pts = np.round(np.asarray(p["pts"], np.float64) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1 if p["type"] == "include" else 0, cv2.LINE_8, _SHIFT)
    return mask.astype(np.float32)


def get_polygons(path: PathLike) -> list[dict[str, Any]]:
    """The face's polygons (an empty list for a face without any, as old faces are)."""
    return read_meta(path).mask_polys


def set_polygons(path: PathLike, polys: Any) -> list[dict[str, Any]]:
    """Replace the face's polygons by `polys` (untrusted: validated) and return them as
    stored. Only the metadata changes; the face's lock is held while it is rewritten."""
    path = Path(path)
    with writing(path):
        meta = read_meta(path)
        meta.mask_polys = parse_polys(_plain(polys), meta.size)
        update_meta(path, meta)
        noted(path, meta)
    return meta.mask_polys


def clear_polygons(path: PathLike) -> None:
    """Remove the face's polygons (the rest of its metadata and its pixels unchanged)."""
    set_polygons(path, [])


def map_polygons(polys: Sequence[dict[str, Any]], a: FaceMeta, b: FaceMeta
                 ) -> list[dict[str, Any]]:
    """Face `a`'s polygons moved onto face `b` of the same person in another frame.

    A point goes from `a`'s aligned face to `a`'s frame (`a.face_to_frame()`), follows the
    head's motion between the frames (the similarity that best maps `a`'s landmarks onto
    `b`'s, on the points the alignment fits: brows, eyes, nose; not the jaw, which speech
    moves), then into `b`'s aligned face (`b.frame_to_face`). Mapping through the frame
    alone would leave the mask where the face was; through the motion it stays on the same
    part of the face. Points land within one face side of `b` (clipped beyond)."""
    motion = similarity_fit(a.source_landmarks[FIT_POINTS], b.source_landmarks[FIT_POINTS])
    m = _affine(b.frame_to_face) @ _affine(motion) @ _affine(a.face_to_frame())
    lo, hi = -b.size, 2 * b.size
    out = []
    for p in polys:
        pts = np.asarray(p["pts"], np.float64) @ m[:2, :2].T + m[:2, 2]
        out.append({"type": p["type"], "pts": np.clip(pts, lo, hi).round(3).tolist()})
    return out


def copy_forward(ws: Workspace, side: str, from_face: str | Path, count: int,
                 overwrite: bool = False) -> list[Path]:
    """Copy a face's polygons onto the next `count` faces of its shot, as a start to edit.

    The next faces are those of the same person in the following frames: frame numbers
    consecutive in the same sequence (`00042.png` → `00043.png`, same frame size), each
    face linked to the previous one by its detection box (centre within half a box, size
    within 1.5×), so another person in the same frames is never touched. The run ends at
    the first frame without such a face (the shot cut away, or the face was lost). The
    faces are looked for in aligned, aligned_confirmed and aligned_skipped; a skipped face
    (W: no mask wanted) and, unless `overwrite`, a face already carrying polygons are left
    as they are but still link the run and count. Returns the faces written, in frame
    order."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COPY:
        raise FacelabError(f"The number of faces to copy to must be a whole number from 1 "
                           f"to {MAX_COPY:,}, not {count!r}.")
    start = face_path(ws, side, from_face)
    written: list[Path] = []
    with writing(start):
        first = read_meta(start)
        if not first.mask_polys:
            raise FacelabError(f"{start.name} has no mask polygons to copy.")
        finder = _Frames(start.parent.parent)
        prev, frame = first, first.source_filename
        for _ in range(count):
            frame = _next_frame(frame)
            found = finder.linked(prev, frame) if frame else None
            if found is None:
                break
            path, meta = found
            if path.parent.name != SKIPPED and (overwrite or not meta.mask_polys):
                meta.mask_polys = map_polygons(first.mask_polys, first, meta)
                update_meta(path, meta)
                noted(path, meta)
                written.append(path)
            prev = meta
    return written


def _plain(polys: Any) -> Any:
    """Points given as numpy arrays (a library caller's) as the lists JSON would bring."""
    if isinstance(polys, list | tuple):
        return [{**p, "pts": p["pts"].tolist()} if isinstance(p, dict)
                and isinstance(p.get("pts"), np.ndarray) else p for p in polys]
    return polys


def _affine(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])


def _next_frame(name: str) -> str | None:
    """The next frame's file name (`00042.png` → `00043.png`), None without a number."""
    m = _FRAME.fullmatch(name)
    if m is None:
        return None
    digits = m[2]
    return f"{m[1]}{int(digits) + 1:0{len(digits)}d}{m[3] or ''}"


class _Frames:
    """Finds a side's faces by frame: by their extraction names (`<frame>_<i>.jpg`), and
    faces under other names (a sorted faceset's `00000.jpg`) by their metadata, read once
    per call (and cached across calls by `face_info`)."""

    def __init__(self, data: Path) -> None:
        self.files = [p for f in FOLDERS for p in list_faces(data / f)]
        self._others: dict[str, list[Path]] | None = None

    def others(self) -> dict[str, list[Path]]:
        if self._others is None:
            self._others = defaultdict(list)
            for p in self.files:
                if not _EXTRACTED.fullmatch(p.name):
                    try:
                        self._others[face_info(p).source_filename].append(p)
                    except (FacelabError, OSError):  # damaged or gone: nobody's next face
                        continue
        return self._others

    def linked(self, prev: FaceMeta, frame: str) -> tuple[Path, FaceMeta] | None:
        """The face of `frame` that continues `prev`'s track, with its metadata; faces
        under other names are read only when none under the frame's name links."""
        stem = Path(frame).stem + "_"
        named = [p for p in self.files if p.name.startswith(stem)]
        return self._best(prev, frame, named) or self._best(prev, frame, self.others()[frame])

    def _best(self, prev: FaceMeta, frame: str, cands: list[Path]
              ) -> tuple[Path, FaceMeta] | None:
        best, best_cost = None, math.inf
        for p in cands:
            try:
                info = face_info(p)
            except (FacelabError, OSError):
                continue
            if info.source_filename == frame and info.source_size == prev.source_size \
                    and (c := _link_cost(prev.source_rect, info.source_rect)) < best_cost:
                best, best_cost = p, c
        return None if best is None else (best, read_meta(best))


def _link_cost(a: Sequence[int], b: Sequence[int]) -> float:
    """Box centre distance in box sizes; inf when the boxes cannot be one face."""
    sa = math.sqrt(max(a[2] - a[0], 1) * max(a[3] - a[1], 1))
    sb = math.sqrt(max(b[2] - b[0], 1) * max(b[3] - b[1], 1))
    dist = math.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    cost = dist / ((sa + sb) / 2)
    return cost if cost <= LINK_DISTANCE and max(sa, sb) / min(sa, sb) <= LINK_SIZE_RATIO \
        else math.inf
