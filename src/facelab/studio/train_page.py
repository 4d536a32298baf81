"""The training page: a model's saved state (iteration, target, last save, loss history),
its preview images, and the live run of the training job (speed, ETA, losses) read from
the lines the job's CLI logs; save-now and preview-now requests sent to that job.

Nothing here trains or loads PyTorch: training is the `train` stage run as a job
(jobs.py), the real CLI, whose piped status line (`[0001234]   54 ms/iter  src 0.1  dst
0.2  ETA 0:01:02`, every FACELAB_PROGRESS_EVERY seconds) is the live feed. The CLI takes
SIGUSR1 as "save now" and SIGUSR2 as "preview now" (cli/common.py `stop_on_signals`), so
the S and P keys are a signal to the job's own process, sent only once that process
catches it (before, its default action would end the run). Stop is the job's cancel
(SIGINT: the CLI saves and stops). A poll is a few `stat`s; files are re-read only when
they changed, and log lines are parsed once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from facelab.errors import FacelabError
from facelab.studio.app import body, ok
from facelab.studio.context import StudioContext
from facelab.studio.jobs import Job

TITLE = "Training"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # checkpoint.check_name's, bounded
STATUS = re.compile(r"^\[(?P<it>\d+)\]\s+(?P<ms>\d+(?:\.\d+)?) ms/iter\s+(?P<values>.*?)"
                    r"(?:\s+ETA (?P<eta>\d+:\d\d:\d\d))?\s*$")
VALUE = re.compile(r"([A-Za-z][\w-]*) (-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|nan|-?inf)")
SAVED = re.compile(r"^\[(?P<it>\d+)\] saved")
KEEP_POINTS = 5000  # live points kept per job (a long run's older ones are in the save)
REQUESTS = {"save": "SIGUSR1", "preview": "SIGUSR2"}


def parse_status(line: str) -> dict[str, Any] | None:
    """A training status line as {"iteration", "ms", "eta", "labels", "losses"}, or None.
    A family with one loss (meshswap's refiner) has one label; non-finite values are
    None (JSON has no NaN)."""
    m = STATUS.match(line)
    if m is None:
        return None
    pairs = VALUE.findall(m["values"])
    if not pairs:
        return None
    losses = [float(v) for _, v in pairs]
    return {"iteration": int(m["it"]), "ms": float(m["ms"]), "eta": m["eta"],
            "labels": [k for k, _ in pairs],
            "losses": [v if math.isfinite(v) else None for v in losses]}


def job_flag(job: Job, flag: str) -> str | None:
    """The value a `train` job gives `flag` (`--flag=value` or `--flag value`), else None."""
    if job.stage != "train":
        return None
    args = job.args
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def job_model(job: Job) -> str | None:
    """The model a `train` job trains (its --model-name), else None."""
    return job_flag(job, "--model-name")


def catches(pid: int, sig: int) -> bool | None:
    """Whether process `pid` has a handler for `sig` now (Linux: /proc's SigCgt mask);
    None where that cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


class Live:
    """What one job's log lines say about its run, parsed once per line."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.parsed = 0  # absolute number of the next line to parse
        self.points: list[tuple[int, int, float | None, float | None]] = []  # line, it, s, d
        self.status: dict[str, Any] | None = None
        self.saved: int | None = None  # the iteration of the run's last save line
        self.lock = threading.Lock()

    def update(self) -> None:
        job = self.job
        with self.lock:
            for _ in range(3):  # the follower thread may cut the front meanwhile: read again
                dropped = job.dropped
                first = max(self.parsed, dropped)
                new = job.lines[first - dropped:]  # a copy
                if job.dropped == dropped:
                    break
            for k, text in enumerate(new):
                st = parse_status(text)
                if st is not None:
                    losses = st["losses"]
                    self.points.append((first + k, st["iteration"], losses[0], losses[-1]))
                    self.status = st
                elif m := SAVED.match(text):
                    self.saved = int(m["it"])
            self.parsed = first + len(new)
            if len(self.points) > KEEP_POINTS:
                del self.points[:len(self.points) - KEEP_POINTS // 2]

    def since(self, line: int) -> list[list[Any]]:
        with self.lock:
            return [[n, it, s, d] for n, it, s, d in self.points if n >= line]


class Train:
    """The page's state of one studio: caches keyed by file versions, one `Live` per job."""

    def __init__(self, ctx: StudioContext) -> None:
        self.ctx = ctx
        self.folder = ctx.ws.model_dir
        self._live: Live | None = None
        self._docs: dict[str, tuple[int, dict[str, Any]]] = {}  # path → (mtime_ns, state)
        self._history_dirs: dict[str, tuple[int, list[str]]] = {}
        self._lock = threading.Lock()

    def live(self, job: Job) -> Live:
        with self._lock:
            if self._live is None or self._live.job is not job:
                self._live = Live(job)
            live = self._live
        live.update()
        return live

    def models(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name.removesuffix("_state.json") for p in self.folder.glob("*_state.json")
                      if NAME.match(p.name.removesuffix("_state.json")))

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.ctx.ws.root).as_posix()

    def saved(self, name: str) -> tuple[dict[str, Any], list[Any]] | None:
        """The save's summary and its loss history, re-read only when the file changed."""
        path = self.folder / f"{name}_state.json"
        try:
            version = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._docs.get(name)
        if cached is None or cached[0] != version:
            try:
                doc = json.loads(path.read_bytes())
                state = doc["state"] if isinstance(doc, dict) else None
            except (OSError, ValueError, KeyError):
                return None  # mid-write on a platform without atomic rename: next poll
            if not isinstance(state, dict):
                return None
            cached = (version, state)
            self._docs[name] = cached
        state = cached[1]
        options = state.get("options") if isinstance(state.get("options"), dict) else {}
        saved_at = None  # the commit point of the save, else the state file
        for made in (self.folder / f"{name}_manifest.json", path):
            with contextlib.suppress(OSError):
                saved_at = made.stat().st_mtime
                break
        history = [h for h in state.get("history") or []
                   if isinstance(h, list) and len(h) == 3
                   and all(isinstance(v, int | float) and math.isfinite(v) for v in h)]
        summary = {"iteration": state.get("iteration"), "version": str(version),
                   "saved_at": saved_at,
                   "family": state.get("family", "sae"), "preset": options.get("preset"),
                   "target": options.get("target_iteration"),
                   "batch": options.get("batch_size"),
                   "resolution": options.get("resolution")}
        return summary, history

    def images(self, name: str) -> dict[str, Any]:
        """The preview (grid + plot) and the newest preview-history image, with versions."""
        found: dict[str, Any] = {"preview": None, "history": None}
        preview = self.folder / f"{name}_preview.png"
        with contextlib.suppress(OSError):
            v = preview.stat().st_mtime_ns
            found["preview"] = {"url": f"/ws/{self._rel(preview)}?v={v}", "version": str(v)}
        folder = self.folder / f"{name}_history"
        try:
            v = folder.stat().st_mtime_ns
        except OSError:
            return found
        cached = self._history_dirs.get(name)
        if cached is None or cached[0] != v:
            with os.scandir(folder) as it:
                names = sorted(e.name for e in it if e.name.endswith(".png")
                               and e.name[:-4].isdigit())
            cached = (v, names)
            self._history_dirs[name] = cached
        names = cached[1]
        if names:
            last = folder / names[-1]
            with contextlib.suppress(OSError):
                lv = last.stat().st_mtime_ns
                found["history"] = {"url": f"/ws/{self._rel(last)}?v={lv}", "version": str(lv),
                                    "iteration": int(names[-1][:-4]), "count": len(names)}
        return found

    def state(self, model: str, history_version: str, line: int, job_id: int) -> dict[str, Any]:
        """What the page shows; the loss history only when its version differs from the
        page's, live points only from line `line` of job `job_id`."""
        job = self.ctx.jobs.current()
        training = job_model(job) if job is not None else None
        models = self.models()
        if model and not NAME.match(model):
            raise FacelabError(f"Model name {model!r} must be letters, digits, '.', '_' or '-'.")
        if not model:
            model = training or (max(models, key=self._mtime) if models else "")
        out: dict[str, Any] = {"models": models, "model": model, "job": None, "saved": None,
                               "live": None, "preview": None, "history_image": None}
        if job is not None:
            target = job_flag(job, "--target-iteration")
            out["job"] = {**job.summary(), "model": training,
                          "target": int(target) if target and target.isdigit() else None,
                          "ready": training is not None and job.running and self._ready(job)}
        if model:
            found = self.saved(model)
            if found is not None:
                out["saved"], history = found
                if out["saved"]["version"] != history_version:
                    out["history"] = history
            images = self.images(model)
            out["preview"], out["history_image"] = images["preview"], images["history"]
        if job is not None and training == model and model:
            live = self.live(job)
            start = line if job.id == job_id else 0
            out["live"] = {"job": job.id, "next": live.parsed, "points": live.since(start),
                           "status": live.status, "saved": live.saved}
        return out

    def _mtime(self, name: str) -> float:
        try:
            return (self.folder / f"{name}_state.json").stat().st_mtime
        except OSError:
            return 0.0

    @staticmethod
    def _ready(job: Job) -> bool:
        """Whether the job's process takes the requests now (its handlers are set)."""
        caught = catches(job.pid, signal.SIGUSR1)
        if caught is not None:
            return caught
        return any(STATUS.match(t) for t in job.lines[-50:])  # no /proc: training has begun

    def request(self, what: Any) -> dict[str, Any]:
        """Send the running training job a save-now or preview-now request."""
        if not isinstance(what, str) or what not in REQUESTS:
            raise FacelabError(f"Ask for one of {', '.join(REQUESTS)}.")
        job = self.ctx.jobs.current()
        if job is None or not job.running or job_model(job) is None:
            raise FacelabError("No training is running: start one first.")
        if job.cancelling:
            raise FacelabError("Training is stopping: it saves on its way out.")
        if not self._ready(job):
            raise FacelabError("Training is still starting: ask again once its first "
                               "iterations show.")
        if not job.alive():
            raise FacelabError("No training is running: start one first.")
        try:  # the training process alone: its sample workers keep the default action
            os.kill(job.pid, getattr(signal, REQUESTS[what]))
        except ProcessLookupError:
            raise FacelabError("No training is running: start one first.") from None
        return {"sent": what, "job": job.id}


def _int(request: Request, key: str) -> int:
    value = request.query_params.get(key, "")
    return int(value) if value.isdigit() and len(value) < 16 else 0


def routes(ctx: StudioContext) -> list[BaseRoute]:
    train = Train(ctx)

    async def state(request: Request) -> Response:
        q = request.query_params
        model, version = q.get("model", ""), q.get("history", "")
        return ok(await run_in_threadpool(train.state, model[:200], version[:40],
                                          _int(request, "from"), _int(request, "job")))

    async def send(request: Request) -> Response:
        data = await body(request)
        return ok(await run_in_threadpool(train.request, data.get("request")))

    return [Route("/api/train/state", state), Route("/api/train/request", send,
                                                    methods=["POST"])]
