"""The merge page: DeepFaceLab's interactive merger in the browser.

One dst frame is merged again on every option change by a `merge.preview.Previewer` kept
loaded in the server (one per model and output kind, made on first use, made again when
the model is saved anew or the dst faces change): the pixels `facelab merge` writes for
that frame, a few tens of ms after the first at 360p. Renders run one at a time in the
threadpool; a render still queued when the same page has asked for a newer one is
dropped (204), so dragging a slider costs one render, not one per step.

Options come from `MergeOptions`' declarations (the controls are generated from the
merge form's fields) and are checked by them: a bad value is a 400 with the declaration's
sentence. Frame ranges with their own options live in `data_dst/merge.json`
(`merge/ranges.py`), which `facelab merge` reads itself; "merge all" is the `merge`
stage run as a job (the studio's /api/jobs: the merge form's values) with the page's
options. The result and dst play side by side: a file
the browser cannot play (MPEG-1 dst, an AVI result) is transcoded once into
`.studio/merge/`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from facelab.errors import FacelabError
from facelab.merge.options import MergeOptions
from facelab.merge.ranges import (
    RUN_ONLY,
    load_ranges,
    options_for,
    parse_ranges,
    range_of,
    save_ranges,
    set_range,
)
from facelab.options import OptionSpec, specs
from facelab.studio.app import body, ok
from facelab.studio.context import StudioContext
from facelab.studio.forms import form
from facelab.studio.playback import browser_copy, result_file
from facelab.studio.security import PathMissing
from facelab.train.checkpoint import list_models
from facelab.video.source import (
    MANIFEST,
    frame_number,
    kept_as_video,
    open_frames,
)
from facelab.workspace import Workspace

TITLE = "Merge"
KEPT = 2  # Previewers loaded at once (a model's weights each)
JPEG_QUALITY = 90
PAGE_KEYS = ("frame", "model", "output", "fmt", "ranges", "seq", "client")


def option_specs() -> dict[str, OptionSpec]:
    """The options the page's controls and a range can set (not the run-only ones)."""
    return {s.name: s for s in specs(MergeOptions) if s.name not in RUN_ONLY}


def option_fields() -> list[dict[str, Any]]:
    """The controls: the merge form's fields (generated from the declarations) of the
    options, each with its declaration's label."""
    declared = option_specs()
    return [{**f, "label": declared[f["name"]].label} for f in form("merge")["fields"]
            if f["name"] in declared]


def _value(s: OptionSpec, raw: str) -> Any:
    """A query string value as the declared type (the declaration then checks it)."""
    if s.base is bool:
        if raw in ("true", "false"):
            return raw == "true"
        raise FacelabError(f"{s.flag} must be true or false, not {raw!r}.")
    if s.base in (int, float):
        try:
            return s.base(raw)
        except (ValueError, OverflowError):
            raise FacelabError(f"{s.flag} must be {s.constraint()}, not {raw[:40]!r}.") from None
    return raw[:100]  # a longer one is no choice either: the refusal stays a sentence


def parse_options(query: Mapping[str, str]) -> MergeOptions:
    """MergeOptions from a query string (unknown names refused, each value checked by its
    declaration: FacelabError with the CLI's sentence)."""
    declared = option_specs()
    if unknown := sorted(set(query) - set(declared) - set(PAGE_KEYS)):
        raise FacelabError(f"The merge has no option {unknown[0][:40]!r}.")
    return MergeOptions(**{k: _value(declared[k], v) for k, v in query.items()
                           if k in declared})


def models(ws: Workspace) -> list[dict[str, Any]]:
    from facelab.merge.predictor import model_info

    found = []
    for name in list_models(ws.model_dir):
        try:
            info = model_info(ws.model_dir, name)
        except FacelabError as e:
            found.append({"name": name, "error": str(e)})
            continue
        found.append({"name": name, "family": info.family, "iteration": info.iteration,
                      "resolution": info.resolution})
    return found


def _stamp(ws: Workspace, model: str) -> tuple[int, ...]:
    """What a loaded Previewer depends on: the model's save, the dst faces (a face
    written, added or removed changes the folder's time) and dst's frames manifest (an
    extraction rewrites it; a merge writing beside the frames does not)."""
    paths = (ws.model_dir / f"{model}_manifest.json", ws.aligned_dir("dst"),
             ws.frames_dir("dst") / MANIFEST)
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths)


class Previews:
    """The loaded Previewers and the dst frames, for every request of one studio."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._lock = threading.Lock()  # one render (or model load) at a time
        self._loaded: OrderedDict[tuple[str, bool], tuple[tuple[int, ...], Any]] = \
            OrderedDict()
        self._source: tuple[int, Any] | None = None
        self._latest: dict[str, int] = {}

    def ask(self, client: str, seq: int) -> None:
        """A page asked for render `seq`: its older ones still queued are dropped."""
        self._latest[client] = max(seq, self._latest.get(client, seq))

    def _previewer(self, model: str, to_video: bool) -> Any:
        from facelab.merge.preview import Previewer

        if model not in list_models(self.ws.model_dir):
            names = ", ".join(list_models(self.ws.model_dir)) or "none is trained yet"
            raise FacelabError(f"No model {model[:40]!r} in model/ ({names}).")
        key, stamp = (model, to_video), _stamp(self.ws, model)
        hit = self._loaded.get(key)
        if hit is not None and hit[0] == stamp:
            self._loaded.move_to_end(key)
            return hit[1]
        if hit is not None:
            hit[1].close()
            del self._loaded[key]
        pv = Previewer(self.ws, model, to_video=to_video)
        self._loaded[key] = (stamp, pv)
        while len(self._loaded) > KEPT:
            self._loaded.popitem(last=False)[1][1].close()
        return pv

    def render(self, model: str, to_video: bool, frame: int, opts: MergeOptions,
               ranges: bool, client: str = "", seq: int = 0
               ) -> tuple[np.ndarray, dict[str, str]] | None:
        """Frame number `frame` merged as `facelab merge` would with `opts` (and the
        frame's range when `ranges`); None when the page has asked for a newer one."""
        with self._lock:
            if seq < self._latest.get(client, seq):
                return None
            start = time.perf_counter()
            pv = self._previewer(model, to_video)
            name = pv.name_of(frame)
            found = range_of(frame_number(name), load_ranges(self.ws)) if ranges else None
            if found is not None:
                opts = options_for(frame_number(name), opts, [found])
            image = pv.render(name, opts)
            ms = 1000 * (time.perf_counter() - start)
        info = {"x-frame": name, "x-render-ms": f"{ms:.1f}",
                "x-range": f"{found.first}-{found.last}" if found else ""}
        return image, info

    def dst(self, frame: int) -> np.ndarray:
        """The dst frame as decoded (from a loaded Previewer's cache when there is one)."""
        with self._lock:
            for _, pv in reversed(self._loaded.values()):
                return pv.frame(frame)
            manifest = self.ws.frames_dir("dst") / MANIFEST
            stamp = manifest.stat().st_mtime_ns if manifest.exists() else 0
            if self._source is None or self._source[0] != stamp:
                if self._source is not None:
                    self._source[1].close()
                self._source = (stamp, open_frames(self.ws, "dst"))
            source = self._source[1]
            name = next((n for n in source.names if frame_number(n) == frame), None)
            if name is None:
                raise PathMissing(f"dst has no frame {frame}.")
            return source.read(name)

    def close(self) -> None:
        with self._lock:
            for _, pv in self._loaded.values():
                pv.close()
            self._loaded.clear()


def encode(image: np.ndarray, fmt: str) -> Response:
    if fmt == "png" or (image.ndim == 3 and image.shape[2] == 4):  # alpha: PNG only
        ok_, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        media = "image/png"
    else:
        ok_, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        media = "image/jpeg"
    if not ok_:
        raise FacelabError("The frame could not be encoded.")
    return Response(buf.tobytes(), media_type=media, headers={"cache-control": "no-store"})


# -- routes -------------------------------------------------------------------------------

def _int(v: Any, what: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.isdigit() and len(v) < 12:
        return int(v)
    raise FacelabError(f"{what} must be a whole number, not {str(v)[:40]!r}.")


def _output(q: Mapping[str, str], ws: Workspace) -> bool:
    """Whether the preview follows a merge --to-video (its prediction batches)."""
    out = q.get("output") or ("video" if kept_as_video(ws, "dst") else "frames")
    if out not in ("video", "frames"):
        raise FacelabError(f"output must be video or frames, not {out[:20]!r}.")
    return out == "video"


def routes(ctx: StudioContext) -> list[BaseRoute]:
    ws = ctx.ws
    previews: Previews = ctx.caches.setdefault("merge.previews", Previews(ws))
    ranges_lock = threading.Lock()

    def setup(request: Request) -> Response:
        source = open_frames(ws, "dst")
        names = source.names
        source.close()
        return ok({"models": models(ws), "frames": [frame_number(n) for n in names],
                   "output": "video" if kept_as_video(ws, "dst") else "frames",
                   "result": (r := result_file(ws)) and r.name})

    def options(request: Request) -> Response:
        return ok({"fields": option_fields()})

    async def preview(request: Request) -> Response:
        q = request.query_params
        opts = parse_options(q)
        frame, seq = _int(q.get("frame", ""), "frame"), _int(q.get("seq", "0"), "seq")
        client = q.get("client", "")[:40]
        previews.ask(client, seq)
        got = await run_in_threadpool(previews.render, q.get("model", ""), _output(q, ws),
                                      frame, opts, q.get("ranges", "1") != "0", client, seq)
        if got is None:
            return Response(status_code=204, headers={"cache-control": "no-store"})
        image, info = got
        res = await run_in_threadpool(encode, image, q.get("fmt", "jpg"))
        res.headers.update(info)
        return res

    async def dst(request: Request) -> Response:
        q = request.query_params
        image = await run_in_threadpool(previews.dst, _int(q.get("frame", ""), "frame"))
        return await run_in_threadpool(encode, image, q.get("fmt", "jpg"))

    def get_ranges(request: Request) -> Response:
        return ok({"ranges": [r.to_json() for r in load_ranges(ws)]})

    async def put_ranges(request: Request) -> Response:
        doc = await body(request)

        def put() -> list[dict[str, Any]]:
            with ranges_lock:
                save_ranges(ws, parse_ranges(doc, "the merge ranges"))
                return [r.to_json() for r in load_ranges(ws)]

        return ok({"ranges": await run_in_threadpool(put)})

    async def set_one(request: Request) -> Response:
        data = await body(request)
        first, last = _int(data.get("first"), "first"), _int(data.get("last"), "last")
        opts = data.get("options") or {}
        if not isinstance(opts, dict):
            raise FacelabError("options must be an object of option names.")

        def change() -> list[dict[str, Any]]:
            with ranges_lock:
                new = set_range(load_ranges(ws), first, last, opts)
                save_ranges(ws, new)
                return [r.to_json() for r in new]

        return ok({"ranges": await run_in_threadpool(change)})

    async def video(request: Request) -> Response:
        which = request.path_params["which"]
        if which not in ("result", "dst"):
            raise PathMissing("Only the result and dst are played here.")
        path = await run_in_threadpool(browser_copy, ws, which)
        return FileResponse(path, media_type="video/mp4", headers={"cache-control": "no-cache"})

    async def verify(request: Request) -> Response:
        from facelab.studio.workspace_page import verify_file

        found = result_file(ws)
        if found is None:
            return ok({"file": None})
        return ok(await run_in_threadpool(verify_file, ctx, found.name))

    return [
        Route("/api/merge/setup", setup),
        Route("/api/merge/options", options),
        Route("/api/merge/preview", preview),
        Route("/api/merge/dst", dst),
        Route("/api/merge/ranges", get_ranges),
        Route("/api/merge/ranges", put_ranges, methods=["PUT"]),
        Route("/api/merge/ranges/set", set_one, methods=["POST"]),
        Route("/api/merge/video/{which}", video),
        Route("/api/merge/verify", verify),
    ]

