"""Occlusion kept: where something stood in front of dst's face (a hand over the mouth, a
microphone), the result must still show it, not the new face drawn over it.

Given occluder regions of some dst frames (hand-labelled: `tests/fixtures/segment/
pexels_hand.json`, or any frame → mask), the measure is the share of the result's pixels
inside them that are dst's own, within `TOLERANCE` grey levels on every channel (a lossy
result video moves them a little; a merged face moves them by tens of levels). Pooled over
the labelled frames: 1.0 = every occluder stays in front of the new face. A merge masked by
the dst landmarks' hull pastes the face over a hand inside the hull; seg-dst leaves it.

Occluder files (`facelab eval --occluders FILE`) are JSON, either the fixture's format
({"face_type", "size", "faces": [{"frame": 0-based index, "occluders": polygons}]}, polygons
in aligned-face pixels, mapped back through the face's alignment) or the plain one
({"frames": [{"frame": 0-based index, "occluders": [[[x, y], ...], ...]}]}, polygons in
frame pixels).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.facetype import FaceType, face_transform, invert, transform_points

TOLERANCE = 8  # grey levels: a CRF-18 H.264 result keeps dst's pixels within this
GOAL = 0.9  # issue 18: the hand over the mouth stays in front


def polygon_mask(polygons: Iterable[Any], shape: tuple[int, ...],
                 to_frame: np.ndarray | None = None) -> np.ndarray:
    """bool H×W, True inside any polygon (points in frame pixels, or mapped by the 2×3
    `to_frame`, e.g. from aligned-face pixels)."""
    mask = np.zeros(shape[:2], np.uint8)
    for poly in polygons:
        pts = np.asarray(poly, np.float64).reshape(-1, 2)
        if len(pts) < 3:
            continue
        if to_frame is not None:
            pts = transform_points(pts, to_frame)
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8,
                     shift=4)
    return mask.astype(bool)


def kept(dst: np.ndarray, result: np.ndarray, occluder: np.ndarray,
         tolerance: int = TOLERANCE) -> tuple[int, int]:
    """(pixels of `occluder` where result is dst's own within `tolerance`, pixels of
    `occluder`) for one frame."""
    if dst.shape != result.shape:
        raise FacelabError(f"The result's frames are {result.shape[1]}×{result.shape[0]}, "
                           f"dst's {dst.shape[1]}×{dst.shape[0]}: they cannot be compared.")
    inside = np.asarray(occluder, bool)
    diff = np.abs(dst[inside].astype(np.int16) - result[inside].astype(np.int16))
    same = diff.max(axis=-1) <= tolerance if diff.ndim == 2 else diff <= tolerance
    return int(same.sum()), int(inside.sum())


def kept_share(pairs: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
               tolerance: int = TOLERANCE) -> float | None:
    """Pooled share of occluder pixels kept over (dst, result, occluder) frames; None
    when no occluder pixel was given."""
    same = total = 0
    for dst, result, occ in pairs:
        s, n = kept(dst, result, occ, tolerance)
        same, total = same + s, total + n
    return same / total if total else None


def measure(dst_frames: Iterable[np.ndarray], result_frames: Iterable[np.ndarray],
            occluders: Mapping[int, np.ndarray], tolerance: int = TOLERANCE
            ) -> dict[str, Any]:
    """The occlusion measure over two frame streams (0-based index → occluder mask):
    pooled share, per labelled frame share, frames and pixels used."""
    per: dict[int, float] = {}
    pairs = []
    for i, (d, r) in enumerate(zip(dst_frames, result_frames, strict=False)):
        occ = occluders.get(i)
        if occ is None:
            continue
        s, n = kept(d, r, occ, tolerance)
        if n:
            per[i] = s / n
            pairs.append((s, n))
    total = sum(n for _, n in pairs)
    return {"occlusion_kept": sum(s for s, _ in pairs) / total if total else None,
            "occlusion_frames": len(per), "occlusion_pixels": total,
            "occlusion_per_frame": per}


def _entries(doc: Any) -> tuple[list[dict[str, Any]], bool]:
    """The file's labelled frames and whether their polygons are in aligned-face pixels."""
    if isinstance(doc, dict) and isinstance(doc.get("faces"), list) and doc["faces"]:
        return doc["faces"], True
    if isinstance(doc, dict) and isinstance(doc.get("frames"), list) and doc["frames"]:
        return doc["frames"], False
    raise ValueError("neither a 'faces' nor a 'frames' list")


Alignment = tuple[np.ndarray, float]  # a dst face's 68 landmarks (frame px) and yaw (deg)


def occluder_masks(path: Path, shape: tuple[int, ...],
                   faces: Mapping[int, Alignment] | None = None) -> dict[int, np.ndarray]:
    """0-based frame index → occluder mask (frame `shape`) from an occluder file (see the
    module docstring). Aligned-face polygons go back to the frame through the alignment the
    extractor gives the frame's face at the file's face type and size (`face_transform` of
    its landmarks and yaw): from the entry when it has "landmarks" (and "yaw"), else from
    `faces` (dst's faces as extracted). Bad files are one FacelabError line."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        entries, aligned = _entries(doc)
        out = {}
        for entry in entries:
            index = int(entry["frame"])
            polys = entry.get("occluders", [])
            if not aligned:
                out[index] = polygon_mask(polys, shape)
                continue
            if "landmarks" in entry:
                lm, yaw = entry["landmarks"], float(entry.get("yaw", 0.0))
            elif faces is not None and index in faces:
                lm, yaw = faces[index]
            else:
                raise FacelabError(f"The occluder file {path} labels frame {index}, where "
                                   "dst has no face to place its polygons by.")
            size = int(entry.get("size", doc.get("size")))
            face_type = FaceType(entry.get("face_type", doc.get("face_type")))
            to_frame = invert(face_transform(np.asarray(lm, np.float64), face_type, size,
                                             yaw))
            out[index] = polygon_mask(polys, shape, to_frame)
        return out
    except FacelabError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
            ValueError, IndexError) as e:
        raise FacelabError(f"The occluder file {path} cannot be read ({e.__class__.__name__}"
                           f": {e}).") from None


def check(path: Path) -> None:
    """Refuse an unreadable occluder file (one FacelabError line) before the slow part."""
    try:
        _entries(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise FacelabError(f"The occluder file {path} cannot be read ({e.__class__.__name__}"
                           f": {e}).") from None
