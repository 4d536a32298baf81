"""The studio as a user runs it: the real server in a subprocess (`facelab studio --port
0`, its URL read from stdout) and Debian's chromium driven by Playwright.

Browser tests never skip silently: without /usr/bin/chromium they fail with a sentence
saying what to install, unless FACELAB_NO_BROWSER=1 says this machine has no browser.
Set FACELAB_SCREENSHOTS=DIR to keep a screenshot of each page the tests open.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")


def studio_argv(ws: Path, *extra: str) -> list[str]:
    """`facelab studio`, or its module alone while the CLI does not list it yet."""
    from facelab.cli import app as cli

    registered = any(c.name == "studio" for c in cli.app.registered_commands)
    head = ["-m", "facelab"] if registered else ["-m", "facelab.cli.studio_cmd"]
    return [sys.executable, *head, "studio", "-w", str(ws), "--port", "0", *extra]


@dataclass
class Studio:
    proc: subprocess.Popen[str]
    url: str  # with the token
    ws: Path

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]

    def request(self, method: str, path: str, *, token: bool = True, header: bool = True,
                body: Any = None, headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        """A raw request (the path sent as given: no client-side normalisation)."""
        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        sent = dict(headers or {})
        if token:
            sent.setdefault("Cookie", f"facelab_studio={self.token}")
        if header and method != "GET":
            sent.setdefault("X-Facelab-Studio", "1")
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=sent)
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = self.request(method, path, body=body)
        assert status < 300, (status, data)
        return json.loads(data)


@contextlib.contextmanager
def studio_server(ws: Path, *extra: str, timeout: float = 30) -> Iterator[Studio]:
    """The real studio on 127.0.0.1 for `ws` until the block ends (Ctrl-C, as a user)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(studio_argv(ws, *extra), cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        end = time.monotonic() + timeout
        line = ""
        while time.monotonic() < end and "facelab studio:" not in line:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    break
        if "facelab studio:" not in line:
            proc.kill()
            raise AssertionError(f"no URL from the studio: {proc.communicate()[1]}")
        yield Studio(proc, line.split("facelab studio:", 1)[1].strip(), ws)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def events(studio: Studio, start: int = 0) -> list[tuple[str, Any]]:
    """The job's server-sent events from line `start` until its end event."""
    status, _, raw = studio.request("GET", f"/api/jobs/current/events?from={start}")
    assert status == 200
    found = []
    for block in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def chromium_path() -> Path:
    if not CHROMIUM.is_file():
        if os.environ.get("FACELAB_NO_BROWSER") == "1":
            pytest.skip("FACELAB_NO_BROWSER=1: no browser on this machine")
        pytest.fail("The studio's browser tests need Debian's chromium at /usr/bin/chromium "
                    "(`apt-get install chromium`; `make test` installs it as root), or "
                    "FACELAB_NO_BROWSER=1 to skip them knowingly.")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright (the dev extra) is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(path), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"errors in the page: {errors}"


def wait_until(page: Any, expression: str, timeout: float = 30) -> None:
    """Poll a JavaScript expression until it is true. (`page.wait_for_function` evaluates
    its predicate with `eval`, which the studio's Content-Security-Policy forbids; this
    evaluates it through the DevTools protocol, which the policy does not govern.)"""
    end = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        time.sleep(0.05)


def screenshot(page: Any, name: str) -> None:
    """Keep a screenshot of the page when FACELAB_SCREENSHOTS names a folder."""
    folder = os.environ.get("FACELAB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))
