"""Which segmenter a workspace side uses: the person's own (fine-tuned with `facelab mask
train`, in `<workspace>/segmenter/<side>.safetensors` + `.json`) when it exists, else the
generic one shipped inside the package (`segment/weights/generic.*`, trained by
`tools/train_segmenter.py`, its model card beside it). Loaded networks are cached by path
and file version, so a merge or a studio page loads each once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.segment.network import SegNet, load_segmenter
from facelab.workspace import Side, Workspace

SHIPPED = Path(__file__).resolve().parent / "weights" / "generic"
FOLDER = "segmenter"  # in the workspace: the people's own networks, one per side

_cache: dict[tuple[str, int], tuple[SegNet, dict[str, Any]]] = {}
_lock = threading.Lock()


def person_path(ws: Workspace, side: Side) -> Path:
    """Where `facelab mask train SIDE` keeps the side's fine-tuned network (no suffix)."""
    return ws.root / FOLDER / side


def has_person(ws: Workspace, side: Side) -> bool:
    p = person_path(ws, side)
    return p.with_suffix(".safetensors").is_file() and p.with_suffix(".json").is_file()


def load(path: Path) -> tuple[SegNet, dict[str, Any]]:
    """The network at `path` (no suffix), loaded once per version of its weights file."""
    weights = path.with_suffix(".safetensors")
    try:
        version = weights.stat().st_mtime_ns
    except OSError:
        if path == SHIPPED:
            raise FacelabError("No generic segmenter ships with this install "
                               f"({weights} is missing): reinstall facelab.") from None
        raise FacelabError(f"No segmenter at {weights}.") from None
    key = (str(path), version)
    with _lock:
        if key not in _cache:
            for old in [k for k in _cache if k[0] == key[0]]:
                del _cache[old]
            _cache[key] = load_segmenter(path)
        return _cache[key]


def load_shipped() -> tuple[SegNet, dict[str, Any]]:
    return load(SHIPPED)


def load_for(ws: Workspace, side: Side) -> tuple[SegNet, dict[str, Any], str]:
    """The side's segmenter, its card, and where it came from: "person" or "generic"."""
    if has_person(ws, side):
        return (*load(person_path(ws, side)), "person")
    return (*load_shipped(), "generic")
