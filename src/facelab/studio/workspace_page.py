"""The workspace page: each stage's state read from the files the stages write (their
manifests, the faces, the model's state, the merged frames or segments, the result and
what `verify` finds in it), the next step, and who holds a stage's lock.

Reading is cheap and read-only: manifests and directory listings, never a decode (the
result's `verify` runs on request, cached by the file's size and time).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from facelab.errors import FacelabError
from facelab.faces.extract import MISSING, STATE, UNREADABLE
from facelab.fsutil import read_json
from facelab.locks import LOCKS, describe, holder
from facelab.studio.app import ok
from facelab.studio.context import StudioContext
from facelab.studio.security import workspace_path
from facelab.video.source import MANIFEST, VIDEO_FORMAT
from facelab.workspace import IMAGE_EXTENSIONS, SIDES, VIDEO_EXTENSIONS, Side, Workspace

TITLE = "Workspace"
SEGMENT = re.compile(r"^seg_(\d+)-(\d+)\.mp4$")


def _json(path: Path) -> dict[str, Any] | None:
    """A manifest as a dict, or None when absent or unreadable (the page says so)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _count(folder: Path, suffixes: tuple[str, ...] = IMAGE_EXTENSIONS) -> int:
    if not folder.is_dir():
        return 0
    with os.scandir(folder) as it:
        return sum(1 for e in it if not e.name.startswith(".")
                   and os.path.splitext(e.name)[1].lower() in suffixes and e.is_file())


def _lines(path: Path) -> int:
    try:
        return sum(1 for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
    except (OSError, UnicodeDecodeError):
        return 0


def side_state(ws: Workspace, side: Side) -> dict[str, Any]:
    root = ws.frames_dir(side)
    videos = sorted(p.name for p in ws.root.glob(f"data_{side}.*")
                    if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    manifest = _json(root / MANIFEST)
    frames: dict[str, Any] = {"count": _count(root), "complete": False, "format": None}
    if manifest is not None:
        inputs = [r for r in manifest.get("inputs", []) if isinstance(r, dict)]
        frames.update(format=(manifest.get("settings") or {}).get("format"),
                      count=sum(int(r.get("count", 0)) for r in inputs),
                      complete=bool(inputs) and all(r.get("complete") for r in inputs),
                      inputs=[str(r.get("name")) for r in inputs])
    frames["kept_in_video"] = frames["format"] == VIDEO_FORMAT
    faces_state = _json(root / STATE)
    done = faces_state.get("frames", {}) if faces_state else {}
    faces = {"count": _count(ws.aligned_dir(side)),
             "frames_done": len(done) if isinstance(done, dict) else 0,
             "extracted": faces_state is not None,
             "missing": _lines(root / MISSING) if side == "dst" else 0,
             "unreadable": _lines(root / UNREADABLE),
             "trash": _count(ws.aligned_trash_dir(side)),
             "debug": _count(ws.aligned_debug_dir(side))}
    return {"side": side, "videos": videos, "frames": frames, "faces": faces}


def models(ws: Workspace) -> list[dict[str, Any]]:
    found = []
    folder = ws.model_dir
    for path in sorted(folder.glob("*_state.json")) if folder.is_dir() else []:
        name = path.name.removesuffix("_state.json")
        doc = _json(path) or {}
        state = doc.get("state") if isinstance(doc.get("state"), dict) else {}
        options = state.get("options") if isinstance(state.get("options"), dict) else {}
        preview = folder / f"{name}_preview.png"
        found.append({
            "name": name, "iteration": state.get("iteration"),
            "family": state.get("family", "sae"), "preset": options.get("preset"),
            "target": options.get("target_iteration"),
            "preview": f"model/{preview.name}?v={preview.stat().st_mtime_ns}"
            if preview.is_file() else None})
    return found


def merged(ws: Workspace) -> dict[str, Any]:
    segments = ws.frames_dir("dst") / "merged_video"
    seg_frames = 0
    if segments.is_dir():
        for p in segments.iterdir():
            if m := SEGMENT.match(p.name):
                seg_frames += int(m[2]) - int(m[1]) + 1
    record = _json(ws.merged_dir / "merge.json") or _json(segments / "merge.json") or {}
    return {"frames": _count(ws.merged_dir, (".png",)), "segment_frames": seg_frames,
            "model_id": record.get("model_id")}


def results(ws: Workspace) -> list[dict[str, Any]]:
    out = []
    for p in sorted(ws.root.glob("result.*")):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            st = p.stat()
            out.append({"name": p.name, "bytes": st.st_size, "mtime": st.st_mtime})
    return out


def busy(ws: Workspace) -> list[dict[str, str]]:
    """The stages a live process holds now (a CLI run or a studio job)."""
    held = []
    for lock in sorted((ws.root / LOCKS).glob("*.lock")):
        info = holder(ws.root, lock.stem)
        if info is not None:
            held.append({"lock": lock.stem, "by": describe(info)})
    return held


def next_step(st: dict[str, Any]) -> dict[str, Any]:
    """What to do next: a stage to run (with its side) or a sentence."""
    for side in SIDES:
        s = st["sides"][side]
        if not s["frames"]["complete"]:
            if not s["videos"] and not s["frames"]["count"]:
                return {"text": f"Put the {side} video in the workspace as "
                        f"data_{side}.mp4 (any container FFmpeg reads)."}
            return {"stage": "video-extract", "side": side,
                    "text": f"Extract the {side} frames."}
    for side in SIDES:
        f, faces = st["sides"][side]["frames"], st["sides"][side]["faces"]
        if not faces["extracted"] or faces["frames_done"] < f["count"]:
            return {"stage": "extract", "side": side, "text": f"Extract the {side} faces."}
    if not st["models"]:
        return {"stage": "train", "text": "Train a model on the two facesets."}
    m = st["merged"]
    if not st["results"] and m["frames"] and not m["segment_frames"]:
        return {"stage": "assemble", "text": "Assemble the merged frames into the result."}
    if not st["results"]:
        return {"stage": "merge", "text": "Merge the model's faces into the dst frames."}
    return {"text": "The result is made: check what verify says, or merge again with "
            "other options.", "done": True}


def workspace_state(ws: Workspace) -> dict[str, Any]:
    ws.require()
    st: dict[str, Any] = {"root": str(ws.root.resolve()),
                          "sides": {side: side_state(ws, side) for side in SIDES},
                          "models": models(ws), "merged": merged(ws),
                          "results": results(ws), "busy": busy(ws)}
    st["next"] = next_step(st)
    return st


def verify_file(ctx: StudioContext, rel: str) -> dict[str, Any]:
    """What `facelab verify` finds in a file of the workspace (cached per size and time)."""
    from facelab.provenance.mark import UnreadableFile
    from facelab.provenance.verify import verify

    path = workspace_path(ctx.ws, rel)
    st = path.stat()
    key = ("verify", str(path), st.st_size, st.st_mtime_ns)
    if key not in ctx.caches:
        try:
            verdict = verify(path)
        except UnreadableFile as e:
            raise FacelabError(str(e)) from None
        ctx.caches[key] = verdict.to_json(rel)
    return ctx.caches[key]


def routes(ctx: StudioContext) -> list[BaseRoute]:
    async def state(request: Request) -> Response:
        return ok(await run_in_threadpool(workspace_state, ctx.ws))

    async def verify(request: Request) -> Response:
        rel = request.query_params.get("file", "")
        return ok(await run_in_threadpool(verify_file, ctx, rel))

    return [Route("/api/workspace", state), Route("/api/workspace/verify", verify)]
