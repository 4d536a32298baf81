"""The studio's web application: the security layer, the shared API (stages, forms, jobs,
workspace files) and every page's routes.

Pages are modules `facelab.studio.<id>_page` exposing `TITLE`, `routes(ctx)` and
optionally `startup(ctx)` (called as the server starts; it must return at once) and
`shutdown(ctx)` (as it stops), with their
script in `static/<id>.js`; the ones present are served, in the order of `PAGES`, so a new
page is two new files and no edit here.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from facelab.errors import FacelabError
from facelab.locks import Busy
from facelab.studio.context import StudioContext
from facelab.studio.forms import form, form_args, stages
from facelab.studio.jobs import JobBusy, JobRunner
from facelab.studio.security import PathMissing, PathRefused, SecurityMiddleware, workspace_path
from facelab.workspace import Workspace

STATIC = Path(__file__).with_name("static")
PAGES = ("workspace", "faces", "manual", "masks", "train", "merge")
MAX_BODY = 1 << 20
NO_STORE = {"cache-control": "no-store"}


def ok(data: Any, status: int = 200) -> JSONResponse:
    """A JSON answer of the API (never cached: it describes files that change)."""
    return JSONResponse(data, status_code=status, headers=NO_STORE)


async def body(request: Request) -> dict[str, Any]:
    """A request's JSON object, or FacelabError (the body is untrusted data)."""
    try:
        data = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise FacelabError("The request body is not JSON.") from None
    if not isinstance(data, dict):
        raise FacelabError("The request body must be a JSON object.")
    return data


def page_modules() -> list[tuple[str, Any]]:
    """(id, module) of the pages present, in navigation order."""
    found = []
    for page in PAGES:
        name = f"facelab.studio.{page}_page"
        try:
            found.append((page, importlib.import_module(name)))
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    return found


def _models(ws: Workspace) -> list[str]:
    folder = ws.model_dir
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix("_state.json") for p in folder.glob("*_state.json"))


def core_routes(ctx: StudioContext, pages: list[tuple[str, Any]]) -> list[BaseRoute]:
    ws, jobs = ctx.ws, ctx.jobs

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def list_pages(request: Request) -> Response:
        return ok({"workspace": str(ws.root.resolve()), "pages": [
            {"id": pid, "title": getattr(mod, "TITLE", pid.capitalize()),
             "script": f"/static/{pid}.js"}
            for pid, mod in pages if (STATIC / f"{pid}.js").is_file()]})

    async def list_stages(request: Request) -> Response:
        return ok(stages())

    async def get_form(request: Request) -> Response:
        spec = await run_in_threadpool(form, request.path_params["stage"])
        spec = {**spec, "models": _models(ws)}  # suggestions for --model-name
        return ok(spec)

    async def start_job(request: Request) -> Response:
        data = await body(request)
        stage = data.get("stage")
        if not isinstance(stage, str):
            raise FacelabError("Name the stage to run.")
        args = await run_in_threadpool(form_args, stage, data.get("values") or {}, ws)
        job = jobs.start(args, stage)
        return ok(job.summary(), 202)

    async def current_job(request: Request) -> Response:
        job = jobs.current()
        if job is None:
            return ok(None)
        given = request.query_params.get("tail", "0")
        tail = int(given) if given.isdigit() else 0
        return ok({**job.summary(), "tail": job.lines[-tail:] if tail > 0 else []})

    async def job_events(request: Request) -> Response:
        job = jobs.current()
        if job is None:
            return ok({"error": "No job has run in this studio yet."}, 404)
        try:
            start = int(request.query_params.get("from", "0"))
        except ValueError:
            start = 0

        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            async for kind, data in jobs.follow(job, start):
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**NO_STORE, "x-accel-buffering": "no"})

    async def cancel_job(request: Request) -> Response:
        return ok(jobs.cancel().summary())

    async def ws_file(request: Request) -> Response:
        path = workspace_path(ws, request.path_params["path"])
        if not path.is_file():
            raise PathRefused("Only files are served.")
        return FileResponse(path, headers=NO_STORE)

    return [
        Route("/", index),
        Route("/api/pages", list_pages),
        Route("/api/stages", list_stages),
        Route("/api/forms/{stage}", get_form),
        Route("/api/jobs", start_job, methods=["POST"]),
        Route("/api/jobs/current", current_job),
        Route("/api/jobs/current/events", job_events),
        Route("/api/jobs/current/cancel", cancel_job, methods=["POST"]),
        Route("/ws/{path:path}", ws_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def _error(status: int) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        return ok({"error": str(exc)}, status)
    return handler


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return ok({"error": exc.detail}, exc.status_code)


def create_app(ws: Workspace, token: str, *, jobs: JobRunner | None = None,
               allow_remote: bool = False) -> Starlette:
    """The studio for workspace `ws`, answering only requests that carry `token`."""
    ctx = StudioContext(ws, jobs or JobRunner(ws), token, allow_remote)
    pages = page_modules()
    routes: list[BaseRoute] = []
    for _, mod in pages:
        routes += mod.routes(ctx)
    routes += core_routes(ctx, pages)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for _, mod in pages:  # a page's work ahead of its first visit (a hook, optional)
            if hasattr(mod, "startup"):
                mod.startup(ctx)
        yield
        await run_in_threadpool(ctx.jobs.shutdown)
        for _, mod in pages:  # what a page holds (models, open videos), let go as it stops
            if hasattr(mod, "shutdown"):
                await run_in_threadpool(mod.shutdown, ctx)

    app = Starlette(
        routes=routes, lifespan=lifespan, max_body_size=MAX_BODY,
        middleware=[Middleware(SecurityMiddleware, token=token, allow_remote=allow_remote)],
        exception_handlers={PathMissing: _error(404), PathRefused: _error(403),
                            JobBusy: _error(409), Busy: _error(409),
                            FacelabError: _error(400), HTTPException: _http_error})
    app.state.ctx = ctx
    return app
