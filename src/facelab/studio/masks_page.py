"""The mask editor: DeepFaceLab's XSeg editor in the page. Include and exclude polygons
drawn on an aligned face are stored in the face's own metadata (`faceset.polygons`), W and
E move the face to `aligned_skipped/` and `aligned_confirmed/` (`faceset.labels`, through
the faceset's journal, so they can be undone), and a mask can be copied onto the next
faces of the same shot as a start.

A face is named in a request by its folder (one of `labels.FOLDERS`) and its file name;
both are untrusted. `_face` checks them with the studio's one door to files
(`workspace_path`: no `..`, no encoded tricks, no symlink out of the workspace) and then
with the labelling library's own rule (a plain JPG name, not a link). Request bodies are
checked by the metadata's validator (kinds, finite numbers, every point within one face
side of the face, at most 1,000 polygons and 100,000 points); a refusal is one sentence.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import cv2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from facelab.errors import FacelabError
from facelab.faces.faceimage import read_meta
from facelab.faceset import labels
from facelab.faceset.folder import list_faces
from facelab.faceset.polygons import MAX_COPY, copy_forward, set_polygons
from facelab.studio.app import body, ok
from facelab.studio.context import StudioContext
from facelab.studio.security import PathMissing, PathRefused, plain_name, workspace_path
from facelab.studio.thumbnails import thumbnail
from facelab.workspace import SIDES, Workspace

TITLE = "Masks"


def _side(request: Request) -> str:
    side = request.path_params["side"]
    if side not in SIDES:
        raise PathMissing(f"No faceset {side!r}: src or dst.")
    return side


def faces(ws: Workspace, side: str) -> list[dict[str, Any]]:
    """Every face file of the side that can be labelled (aligned, confirmed, skipped; not
    links) in name order (frame order for extracted faces), with its folder and polygon
    count. The counts come from `labels.face_info`'s cache: a side is read once, then only
    what changed."""
    data = ws.frames_dir(side)  # type: ignore[arg-type]
    out = []
    for folder in labels.FOLDERS:
        for p in list_faces(data / folder):
            if p.is_symlink():  # never a face here (labels.face_path refuses links)
                continue
            try:
                polys = labels.face_info(p).polys
            except FileNotFoundError:  # moved since the listing
                continue
            except (FacelabError, OSError):  # damaged: listed, not editable
                polys = -1
            out.append({"name": p.name, "folder": folder, "polys": polys})
    out.sort(key=lambda f: (f["name"], f["folder"]))
    return out


def warm_up(ws: Workspace) -> None:
    """Read both sides' face summaries into the cache at a low priority, so the page's
    first listing of a large side does not wait for them."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    for side in SIDES:
        with contextlib.suppress(FacelabError, OSError):
            faces(ws, side)


def startup(ctx: StudioContext) -> None:
    threading.Thread(target=warm_up, args=(ctx.ws,), daemon=True, name="mask-scan").start()


def _face(ws: Workspace, side: str, folder: str, name: str) -> Path:
    """The face file a request names, or PathRefused / PathMissing / FacelabError."""
    name = plain_name(name)
    if folder not in labels.FOLDERS:
        raise PathRefused(f"{folder[:100]!r} is not a labelling folder "
                          f"({', '.join(labels.FOLDERS)}).")
    workspace_path(ws, f"data_{side}/{folder}/{name}")  # refuses what leads out, or is absent
    return labels.face_path(ws, side, f"{folder}/{name}")


def _where(path: Path) -> dict[str, str]:
    return {"name": path.name, "folder": path.parent.name}


def _polys_of(data: dict[str, Any], required: bool) -> Any:
    """The `polys` of a request body (None when optional and absent); nothing else."""
    if extra := sorted(set(data) - {"polys"}):
        raise FacelabError(f"Unknown field {extra[0][:40]!r}: send {{\"polys\": [...]}}.")
    if "polys" not in data:
        if required:
            raise FacelabError('Send the polygons as {"polys": [{"type": "include", '
                               '"pts": [[x, y], ...]}, ...]}.')
        return None
    if not isinstance(data["polys"], list):
        raise FacelabError("The polygons must be a list.")
    return data["polys"]


def routes(ctx: StudioContext) -> list[BaseRoute]:
    ws = ctx.ws

    def face(request: Request) -> Path:
        p = request.path_params
        return _face(ws, _side(request), p["folder"], p["name"])

    def edit(fn: Any, *args: Any) -> Any:
        """A faceset edit made in this process, one at a time (StudioContext.edit_lock)."""
        with ctx.edit_lock:
            return fn(*args)

    async def list_side(request: Request) -> Response:
        side = _side(request)
        found = await run_in_threadpool(faces, ws, side)
        return ok({"side": side, "count": len(found), "faces": found,
                   "max_copy": MAX_COPY})

    async def get_face(request: Request) -> Response:
        path = face(request)
        meta = await run_in_threadpool(read_meta, path)
        return ok({**_where(path), "size": meta.size, "polys": meta.mask_polys,
                   "source": meta.source_filename, "mask": meta.mask is not None})

    async def put_face(request: Request) -> Response:
        path = face(request)
        polys = _polys_of(await body(request), required=True)
        saved = await run_in_threadpool(edit, set_polygons, path, polys)
        return ok({**_where(path), "polys": saved})

    def image(request: Request) -> Response:
        return FileResponse(face(request), media_type="image/jpeg",
                            headers={"cache-control": "no-store"})

    def thumb(request: Request) -> Response:
        return FileResponse(thumbnail(ctx.cache_dir, face(request)), media_type="image/jpeg",
                            headers={"cache-control": "private, no-cache"})

    async def stored_mask(request: Request) -> Response:
        """The mask `facelab mask apply` wrote into the face (PNG), 404 when it has none."""
        path = face(request)
        meta = await run_in_threadpool(read_meta, path)
        if meta.mask is None:
            raise PathMissing(f"{path.name} has no mask yet: run `facelab mask apply`.")
        done, buf = cv2.imencode(".png", meta.mask)
        if not done:
            raise FacelabError("The mask could not be encoded.")
        return Response(buf.tobytes(), media_type="image/png",
                        headers={"cache-control": "no-store"})

    def mover(fn: Any) -> Any:
        async def move(request: Request) -> Response:
            """W or E: save the polygons sent along (an edit is never lost), then move."""
            side, path = _side(request), face(request)
            polys = _polys_of(await body(request), required=False)

            def run() -> Path:
                if polys is not None:
                    set_polygons(path, polys)
                return fn(ws, side, f"{path.parent.name}/{path.name}")

            dest = await run_in_threadpool(edit, run)
            return ok({"from": _where(path), "to": _where(dest)})
        return move

    async def copy(request: Request) -> Response:
        side, path = _side(request), face(request)
        data = await body(request)
        if extra := sorted(set(data) - {"count", "overwrite"}):
            raise FacelabError(f"Unknown field {extra[0][:40]!r}: send "
                               f'{{"count": N, "overwrite": false}}.')
        overwrite = data.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise FacelabError("overwrite must be true or false.")
        written = await run_in_threadpool(edit, copy_forward, ws, side,
                                          path, data.get("count"), overwrite)
        return ok({"written": [_where(p) for p in written]})

    async def undo(request: Request) -> Response:
        side = _side(request)
        op = await run_in_threadpool(edit, labels.undo_label, ws, side)
        src, dest = op.phases[0].steps[0]
        return ok({"command": op.command, "from": _at(dest), "to": _at(src)})

    base = "/api/masks/{side}"
    one = base + "/face/{folder}/{name}"
    return [
        Route(base, list_side),
        Route(base + "/undo", undo, methods=["POST"]),
        Route(one, get_face),
        Route(one, put_face, methods=["PUT"]),
        Route(one + "/image", image),
        Route(one + "/thumb", thumb),
        Route(one + "/mask", stored_mask),
        Route(one + "/skip", mover(labels.skip), methods=["POST"]),
        Route(one + "/confirm", mover(labels.confirm), methods=["POST"]),
        Route(one + "/copy", copy, methods=["POST"]),
    ]


def _at(rel: str) -> dict[str, str]:
    """A journal path (`folder/name`) as the page names a face."""
    folder, _, name = rel.partition("/")
    return {"name": name, "folder": folder}
