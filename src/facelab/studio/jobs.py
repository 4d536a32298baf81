"""Long stages run as the real CLI in a subprocess: `python -m facelab -w WS <args>`, so the
CLI's resume, stage locks and one-line refusals are the studio's, with nothing
re-implemented.

The job writes its output (stdout and stderr; piped, the CLI logs a progress line every
FACELAB_PROGRESS_EVERY seconds, 0.5 here, instead of drawing bars; COLUMNS=1000, so Rich
wraps no line) to a log file in the workspace's `.studio/jobs/`, which a thread follows
into memory for the pages, and a page opening later replays. The job is in its own
session and its output goes to a file, not a pipe: a killed server does not kill it, and
a studio started again adopts it (from `.studio/jobs/current.json`) while it runs.

Cancel is the terminal's Ctrl-C: SIGINT to the job's process group (training saves, a
stage stops where its rerun resumes), then SIGTERM and SIGKILL after a grace each. One job
at a time per studio; a CLI run holding the stage's lock makes the job fail with the CLI's
own sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.fsutil import pid_alive, read_json, timestamp, write_json
from facelab.workspace import Workspace

JOBS_DIR = Path(".studio") / "jobs"  # in the workspace
RECORD = "current.json"
KEEP_LOGS = 20
KEEP_LINES = 20000
POLL_S = 0.05
PROGRESS = re.compile(r"^(?P<what>.+): (?P<done>\d+)(?:/(?P<total>\d+))? \((?P<rate>[\d,.]+)/s"
                      r"(?:, ETA (?P<eta>\d+:\d\d))?\)$")


class JobBusy(FacelabError):
    """A job is already running in this studio."""


@dataclass
class Job:
    id: int
    stage: str
    args: list[str]
    started: float
    pid: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None  # None: adopted from an earlier studio
    lines: list[str] = field(default_factory=list)
    dropped: int = 0  # lines dropped from the front (a very long log)
    progress: dict[str, Any] | None = None
    state: str = "running"  # running, done, partial (exit 3), failed, cancelled, ended
    rc: int | None = None
    ended: float | None = None
    cancelling: bool = False

    @property
    def command(self) -> str:
        return "facelab " + " ".join(self.args)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def alive(self) -> bool:
        """Whether its process still runs (an adopted one: by pid, checked to be ours)."""
        if self.proc is not None:
            return self.proc.poll() is None
        return pid_alive(self.pid) and _is_job(self.pid)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "stage": self.stage, "command": self.command,
                "state": self.state, "rc": self.rc, "started": self.started,
                "ended": self.ended, "lines": self.dropped + len(self.lines),
                "progress": self.progress, "cancelling": self.cancelling,
                "pid": self.pid, "adopted": self.proc is None}


def _is_job(pid: int) -> bool:
    """A process that is a facelab run leading its own group (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return os.getpgid(pid) == pid and b"facelab" in cmdline
    except OSError:
        return False


class JobRunner:
    """One job at a time for one workspace; see the module docstring."""

    def __init__(self, ws: Workspace, grace: float = 10.0,
                 env: dict[str, str] | None = None) -> None:
        self.ws, self.grace = ws, grace
        self.folder = ws.root / JOBS_DIR
        self.env = {**os.environ, "FACELAB_PROGRESS_EVERY": "0.5", "COLUMNS": "1000",
                    "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._ids = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._adopt()

    def current(self) -> Job | None:
        """The running job, else the last one (kept for a page that opens later)."""
        return self._job

    def start(self, args: list[str], stage: str = "") -> Job:
        with self._lock:
            running = self._job
            if running is not None and running.running:
                since = time.strftime("%H:%M:%S", time.localtime(running.started))
                raise JobBusy(f"A job is running ({running.command}, since {since}): wait "
                              "for it to end or cancel it first.")
            self.folder.mkdir(parents=True, exist_ok=True)
            self._prune()
            self._ids += 1
            log = self.folder / f"{timestamp()}-{self._ids}.log"
            argv = [sys.executable, "-m", "facelab", "-w", str(self.ws.root.resolve()),
                    *map(str, args)]
            with open(log, "wb") as out:  # a file, not a pipe: the job outlives the server
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=self.env,
                                        start_new_session=True)  # its own group: Ctrl-C
            job = Job(self._ids, stage, argv[5:], time.time(), proc.pid, log, proc)
            write_json(self.folder / RECORD, {"id": job.id, "stage": stage, "args": job.args,
                                              "started": job.started, "pid": job.pid,
                                              "log": log.name})
            self._job = job
        threading.Thread(target=self._follow, args=(job,), daemon=True,
                         name=f"job-{job.id}").start()
        return job

    def _adopt(self) -> None:
        """Take up the job an earlier studio started on this workspace, if it still runs."""
        try:
            rec = read_json(self.folder / RECORD)
            pid, log = int(rec["pid"]), self.folder / str(rec["log"])
            job = Job(int(rec["id"]), str(rec["stage"]), [str(a) for a in rec["args"]],
                      float(rec["started"]), pid, log)
        except (OSError, ValueError, KeyError, TypeError):
            return
        if log.parent != self.folder or not log.is_file() or not job.alive():
            return
        self._job, self._ids = job, job.id
        threading.Thread(target=self._follow, args=(job,), daemon=True,
                         name=f"job-{job.id}").start()

    def _prune(self) -> None:
        logs = sorted(self.folder.glob("*.log"))
        for old in logs[:max(0, len(logs) - KEEP_LOGS + 1)]:
            with contextlib.suppress(OSError):
                old.unlink()

    def _follow(self, job: Job) -> None:
        """Read the job's log as it grows until the job has ended and all is read."""
        rest = b""
        with open(job.log, "rb") as f:
            while True:
                chunk = f.read(1 << 16)
                if chunk:
                    *complete, rest = (rest + chunk).replace(b"\r", b"\n").split(b"\n")
                    self._add(job, complete)
                    continue
                if not job.alive():
                    chunk = f.read()  # what it wrote last, before it ended
                    self._add(job, (rest + chunk).replace(b"\r", b"\n").split(b"\n"))
                    break
                time.sleep(POLL_S)
        rc = job.proc.wait() if job.proc is not None else None
        with self._lock:
            job.rc, job.ended = rc, time.time()
            job.state = ("cancelled" if job.cancelling else "ended" if rc is None
                         else "done" if rc == 0 else "partial" if rc == 3 else "failed")
        self._notify()

    def _add(self, job: Job, raw: list[bytes]) -> None:
        texts = [t for t in (r.decode("utf-8", "replace").rstrip() for r in raw) if t.strip()]
        if not texts:
            return
        with self._lock:
            job.lines += texts
            if len(job.lines) > KEEP_LINES:
                cut = len(job.lines) - KEEP_LINES // 2
                del job.lines[:cut]
                job.dropped += cut
            for text in reversed(texts):
                if m := PROGRESS.match(text):
                    job.progress = {"what": m["what"], "done": int(m["done"]),
                                    "total": int(m["total"]) if m["total"] else None,
                                    "rate": m["rate"], "eta": m["eta"]}
                    break
        self._notify()

    def cancel(self) -> Job:
        """Ctrl-C the running job; SIGTERM then SIGKILL follow if it does not end."""
        with self._lock:
            job = self._job
            if job is None or not job.running:
                raise FacelabError("No job is running.")
            job.cancelling = True
        self._signal(job, signal.SIGINT)
        threading.Thread(target=self._escalate, args=(job,), daemon=True).start()
        return job

    def _escalate(self, job: Job) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.wait(job, self.grace):
                return
            self._signal(job, sig)

    @staticmethod
    def _signal(job: Job, sig: int) -> None:
        if job.alive():  # its group is its pid (a session of its own)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, sig)

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        """Whether `job` ended within `timeout` (its output read to the end)."""
        end = None if timeout is None else time.monotonic() + timeout
        while job.running:
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(POLL_S)
        return True

    def shutdown(self) -> None:
        """The studio is stopping: a running job is cancelled the CLI way and waited for."""
        job = self._job
        if job is not None and job.running:
            self.cancel()
            self.wait(job, 3 * self.grace)

    # -- following a job from an event loop (server-sent events) --------------------------

    def _notify(self) -> None:
        for loop, event in list(self._waiters):
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    async def follow(self, job: Job, start: int = 0) -> AsyncIterator[tuple[str, Any]]:
        """("line", {"n", "text"}) for each line from number `start`, ("progress", summary)
        after new lines, then ("end", summary); ("ping", {}) while it is quiet."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        self._waiters.add(waiter)
        try:
            n = max(start, 0)
            while True:
                event.clear()
                with self._lock:
                    first = max(n, job.dropped)
                    new = job.lines[first - job.dropped:]
                    running = job.running
                for k, text in enumerate(new):
                    yield "line", {"n": first + k, "text": text}
                n = first + len(new)
                if new:
                    yield "progress", job.summary()
                if not running:
                    if not new:
                        yield "end", job.summary()
                        return
                    continue
                try:
                    await asyncio.wait_for(event.wait(), 15)
                except TimeoutError:
                    yield "ping", {}
        finally:
            self._waiters.discard(waiter)
