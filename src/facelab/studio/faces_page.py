"""The faces page: a faceset (src or dst aligned faces) as a grid, with thumbnails, each
face's metadata and landmarks, trash and undo through the faceset library's journal.

The listing is names and inodes only (one `scandir`), so 10,000 faces list in tens of
milliseconds, with the first screen's thumbnails inline; the page draws only the rows in
view and asks for theirs in batches, each made once into `.studio/`; as the studio starts,
the first screens' thumbnails of both sides are made in the background. Sorting and the
coverage plot run as jobs (`facelab sort`, `facelab faceset stats`): long, cancellable,
holding the faceset's lock. Trash and undo run here, under the same lock, so a job on the
faceset refuses them.
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from facelab.errors import FacelabError
from facelab.faces.faceimage import read_face, read_meta
from facelab.faceset import methods
from facelab.faceset.debug import overlay
from facelab.faceset.folder import DEBUG_SUFFIX, Faceset, is_debug, resolve
from facelab.faceset.journal import describe
from facelab.faceset.ops import trash_files, undo
from facelab.studio.app import body, ok
from facelab.studio.context import StudioContext
from facelab.studio.security import PathMissing, PathRefused, plain_name, workspace_path
from facelab.studio.thumbnails import THUMB, thumbnail
from facelab.workspace import IMAGE_EXTENSIONS, SIDES

TITLE = "Faces"
MAX_NAMES = 100_000
MAX_BATCH = 256
WARM = 256  # thumbnails made per side as the studio starts


def _side(request: Request) -> str:
    side = request.path_params["side"]
    if side not in SIDES:
        raise PathMissing(f"No faceset {side!r}: src or dst.")
    return side


def listing(folder: Path) -> tuple[list[str], list[str]]:
    """The faces of `folder` by name (what `Faceset.faces` lists) and each one's inode, in
    one directory scan and no `stat`: 10,000 faces list in a few tens of milliseconds.
    The inode versions a face for the page's thumbnail cache: facelab writes a face anew
    (a temporary file renamed over it) and so gives it a new inode; the thumbnail itself
    is checked against the face's size and time on every request."""
    if not folder.is_dir():
        return [], []
    found = []
    with os.scandir(folder) as it:
        for e in it:
            name = e.name
            if (name[0] == "." or not name.lower().endswith(IMAGE_EXTENSIONS)
                    or not e.is_file(follow_symlinks=False)
                    or (name.endswith(DEBUG_SUFFIX) and is_debug(Path(e.path)))):
                continue
            found.append((name, f"{e.inode():x}"))
    found.sort()
    return [n for n, _ in found], [k for _, k in found]


def warm_up(ctx: StudioContext, count: int = WARM) -> int:
    """Make the thumbnails of each side's first `count` faces (the first screens), at a low
    priority; returns how many were made or found."""
    with contextlib.suppress(OSError):  # this thread only (Linux: a thread is a task)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    done = 0
    for side in SIDES:
        folder = ctx.ws.aligned_dir(side)
        for name in listing(folder)[0][:count]:
            with contextlib.suppress(OSError, ValueError):
                thumbnail(ctx.cache_dir, folder / name)
                done += 1
    return done


def startup(ctx: StudioContext) -> None:
    """The first screens' thumbnails are made while the user opens the page."""
    threading.Thread(target=warm_up, args=(ctx,), daemon=True, name="thumbnails").start()


def routes(ctx: StudioContext) -> list[BaseRoute]:
    ws = ctx.ws

    def faceset(side: str) -> Faceset:
        return resolve(ws, side, None)

    def face(request: Request) -> Path:
        """The face named in the request, a file of the side's aligned folder."""
        side = _side(request)
        name = plain_name(request.path_params["name"])
        path = workspace_path(ws, f"data_{side}/aligned/{name}")
        if not path.is_file():
            raise PathMissing(f"No face {name} in data_{side}/aligned.")
        return path

    def encoded(side: str, name: str) -> str | None:
        """A face's thumbnail as base64 (made now when missing), None when it is gone."""
        try:
            path = workspace_path(ws, f"data_{side}/aligned/{plain_name(name)}")
            return base64.b64encode(thumbnail(ctx.cache_dir, path).read_bytes()).decode()
        except (PathRefused, OSError, ValueError):
            return None

    def list_faces(request: Request) -> Response:
        side = _side(request)
        fs = faceset(side)
        names, keys = listing(fs.folder)
        trash = sum(1 for p in fs.trash.iterdir() if p.is_file()) if fs.trash.is_dir() else 0
        given = request.query_params.get("thumbs", "0")
        first = min(int(given), MAX_BATCH) if given.isdigit() else 0
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:  # decoding frees the GIL
            inline = dict(enumerate(pool.map(lambda n: encoded(side, n), names[:first])))
        plot = fs.folder.parent / f"{fs.folder.name}_stats.png"
        return ok({"side": side, "folder": fs.label, "count": len(names), "names": names,
                   "keys": keys, "trash": trash, "thumb": THUMB, "thumbs": inline,
                   "plot": (f"data_{side}/{plot.name}?v={plot.stat().st_mtime_ns}"
                            if plot.is_file() else None)})

    def thumbs(request: Request) -> Response:
        """Many thumbnails in one answer (name → base64 JPEG; null for one that is gone):
        a screen of faces is one request, not a hundred."""
        side = _side(request)
        names = request.query_params.get("names", "").split("/")
        if not 0 < len(names) <= MAX_BATCH:
            raise FacelabError(f"Ask for 1 to {MAX_BATCH} thumbnails at a time.")
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:  # decoding frees the GIL
            return ok(dict(zip(names, pool.map(lambda n: encoded(side, n), names),
                               strict=True)))

    def thumb(request: Request) -> Response:
        path = thumbnail(ctx.cache_dir, face(request))
        return FileResponse(path, media_type="image/jpeg",  # revalidated by its ETag
                            headers={"cache-control": "private, no-cache"})

    def image(request: Request) -> Response:
        return FileResponse(face(request), media_type="image/jpeg",
                            headers={"cache-control": "no-store"})

    def debug(request: Request) -> Response:
        path = face(request)
        img, meta = read_face(path)
        label = f"{path.name} yaw {meta.yaw:+.0f} pitch {meta.pitch:+.0f}"
        ok_, buf = cv2.imencode(".jpg", overlay(img, meta.landmarks, label),
                                [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok_:
            raise FacelabError(f"The overlay of {path.name} could not be encoded.")
        return Response(buf.tobytes(), media_type="image/jpeg",
                        headers={"cache-control": "no-store"})

    def meta(request: Request) -> Response:
        path = face(request)
        data: dict[str, Any] = read_meta(path).to_json()
        for key in ("mesh", "mask"):
            if data.get(key) is not None:
                data[key] = f"<{key}: {len(data[key])} values>" if key == "mesh" \
                    else "<mask image>"
        return ok({"file": path.name, "bytes": path.stat().st_size, **data})

    def sort_methods(request: Request) -> Response:
        return ok([{"name": m.name, "doc": m.doc} for m in methods.METHODS.values()])

    async def trash(request: Request) -> Response:
        side = _side(request)
        names = (await body(request)).get("names")
        if not isinstance(names, list) or not names or len(names) > MAX_NAMES:
            raise FacelabError("Name the faces to trash (a list of file names).")
        files = []
        for n in names:
            path = workspace_path(ws, f"data_{side}/aligned/{plain_name(n)}")
            if not path.is_file() or path.parent != ws.aligned_dir(side).resolve():  # type: ignore[arg-type]
                raise PathRefused(f"{n} is not a face of data_{side}/aligned.")
            files.append(path)
        op = await run_in_threadpool(_locked, ctx, trash_files, files)
        return ok(describe(op))

    async def undo_last(request: Request) -> Response:
        side = _side(request)
        ops = await run_in_threadpool(_locked, ctx, undo, faceset(side), 1)
        return ok([describe(op) for op in ops])

    base = "/api/faces/{side}"
    return [
        Route("/api/faces-methods", sort_methods),
        Route(base, list_faces),
        Route(base + "/thumbs", thumbs),
        Route(base + "/thumb/{name}", thumb),
        Route(base + "/image/{name}", image),
        Route(base + "/debug/{name}", debug),
        Route(base + "/meta/{name}", meta),
        Route(base + "/trash", trash, methods=["POST"]),
        Route(base + "/undo", undo_last, methods=["POST"]),
    ]


def _locked(ctx: StudioContext, fn: Any, *args: Any) -> Any:
    """A faceset edit made in this process, one at a time (see StudioContext.edit_lock)."""
    with ctx.edit_lock:
        return fn(*args)
