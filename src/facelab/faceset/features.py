"""Per-face features for sorting, computed once and cached by file content.

Each feature is a small function registered by name (the sort modules define them next to
the orderings that use them). Values are cached in `<faceset>/.facelab-features.json`,
keyed by a hash of the file's bytes: a rename (every sort renames) keeps the cache valid, an
edited file is computed again. Misses are computed by the executor's worker processes when
there are enough of them to pay for the pool's start-up (≈ 1 s), in chunks of faces.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.executor import create_executor, default_workers
from facelab.faces.faceimage import FaceMeta, read_face, read_meta
from facelab.faceset.folder import Faceset
from facelab.faceset.journal import file_hash
from facelab.fsutil import atomic_path
from facelab.progress import NULL, Reporter

CACHE = ".facelab-features.json"
CACHE_VERSION = 1
MIN_POOL = 256  # misses below this are computed in-process (a pool costs ≈ 1 s to start)
CHUNK = 64  # faces per work item
MAX_WORKERS = 4
SIDE = 256  # faces of other sizes are resized to this before measuring


class FaceData:
    """One face as the feature functions see it; derived images computed on first use."""

    def __init__(self, meta: FaceMeta, image: np.ndarray | None) -> None:
        self.meta, self._image, self.landmarks = meta, image, meta.landmarks
        if image is not None and image.shape[0] != SIDE:  # measures compare at one scale
            self._image = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
            self.landmarks = meta.landmarks * (SIDE / image.shape[0])

    @property
    def image(self) -> np.ndarray:
        assert self._image is not None, "a pixel feature was registered with pixels=False"
        return self._image

    @functools.cached_property
    def gray(self) -> np.ndarray:
        return cv2.cvtColor(self.image, cv2.COLOR_BGR2GRAY)

    @functools.cached_property
    def mask(self) -> np.ndarray:
        """bool H×W: the convex hull of the 68 points (the face, not the background)."""
        m = np.zeros(self.image.shape[:2], np.uint8)
        hull = cv2.convexHull(np.round(self.landmarks).astype(np.int32))
        cv2.fillConvexPoly(m, hull, 1)
        if m.sum() < 64:  # degenerate landmarks: the whole face image
            m[:] = 1
        return m.astype(bool)


@dataclass(frozen=True)
class Feature:
    fn: Callable[[FaceData], Any]  # → a number or a list of numbers
    pixels: bool  # needs the decoded image (else the metadata is enough)


FEATURES: dict[str, Feature] = {}


def feature(name: str, pixels: bool = True) -> Callable[[Callable], Callable]:
    def add(fn: Callable) -> Callable:
        FEATURES[name] = Feature(fn, pixels)
        return fn
    return add


@feature("info", pixels=False)
def _info(face: FaceData) -> dict[str, Any]:
    """What every sort needs of the metadata: names and the frame the face came from."""
    m = face.meta
    return {"original_name": m.original_name, "source_filename": m.source_filename,
            "face_index": m.face_index}


@dataclass
class FaceRecord:
    path: Path
    hash: str
    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def _compute(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    import facelab.faceset.methods  # noqa: F401  (fills FEATURES in a worker)

    pixels = any(FEATURES[n].pixels for n in names)
    image, meta = read_face(path) if pixels else (None, read_meta(path))
    face = FaceData(meta, image)
    out = {}
    for n in names:
        v = FEATURES[n].fn(face)
        out[n] = v if isinstance(v, dict) else np.asarray(v, np.float64).round(6).tolist()
    return out


def _compute_chunk(paths: list[str], names: tuple[str, ...]) -> list[dict[str, Any] | str]:
    out: list[dict[str, Any] | str] = []
    for p in paths:
        try:
            out.append(_compute(Path(p), names))
        except FacelabError as e:  # a damaged file: reported by the caller as one line
            out.append(str(e))
    return out


def _load_cache(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") == CACHE_VERSION and isinstance(data.get("faces"), dict):
            return data["faces"]
    except (OSError, ValueError, AttributeError):
        pass  # absent or damaged: it is only a cache
    return {}


def _save_cache(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "faces": entries},
                                  separators=(",", ":")), encoding="utf-8")


def load_features(fs: Faceset, files: list[Path], names: tuple[str, ...],
                  reporter: Reporter = NULL, jobs: int | None = None) -> list[FaceRecord]:
    """`names` (plus `info`) for every file, from the cache or computed (in parallel)."""
    import facelab.faceset.methods  # noqa: F401  (registers every feature)

    names = tuple(dict.fromkeys(("info", *names)))
    cache_path = fs.folder / CACHE
    cache = _load_cache(cache_path)
    records, todo = [], []
    with reporter.task("reading faces", len(files)) as task:
        for p in files:
            h = file_hash(p)
            rec = FaceRecord(p, h, dict(cache.get(h, {})))
            records.append(rec)
            if any(n not in rec.values for n in names):
                todo.append(rec)
            task.advance()
    if todo:
        missing = tuple(n for n in names if any(n not in r.values for r in todo))
        chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
        jobs = (jobs or default_workers(MAX_WORKERS)) if len(todo) >= MIN_POOL else 1
        compute = functools.partial(_compute_chunk, names=missing)
        with (reporter.task("computing features", len(todo)) as task,
              create_executor(jobs, preload=("facelab.faceset.methods",)) as ex):
            results = ex.map(compute, [[str(r.path) for r in c] for c in chunks])
            for res, c in zip(results, chunks, strict=True):
                _merge(c, res)
                task.advance(len(c))
        _save_cache(cache_path, {r.hash: r.values for r in records})
    return records


def _merge(recs: list[FaceRecord], results: list[dict[str, Any] | str]) -> None:
    for r, res in zip(recs, results, strict=True):
        if isinstance(res, str):
            raise FacelabError(res)
        r.values.update(res)


def column(records: list[FaceRecord], name: str) -> np.ndarray:
    """One feature of every record as a float array (N, or N×D)."""
    return np.array([r[name] for r in records], np.float64)
