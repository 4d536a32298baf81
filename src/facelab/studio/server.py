"""`serve`: the studio on a local port (uvicorn), its URL with the token printed first.

The socket is bound before uvicorn starts, so `--port 0` prints the port the system chose
and a script (the tests) can read the URL from the first line of stdout. Access logs stay
off: the first request's URL carries the token.
"""

from __future__ import annotations

import socket
import sys
import threading
import webbrowser

import uvicorn

from facelab.errors import FacelabError
from facelab.studio.app import create_app
from facelab.studio.security import is_loopback, new_token
from facelab.workspace import Workspace


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise FacelabError(f"Cannot listen on {host}:{port} ({e.strerror or e}): choose "
                           "another --port.") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str, token: str) -> str:
    port = sock.getsockname()[1]
    shown = {"localhost": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={token}"


def serve(ws: Workspace, host: str = "127.0.0.1", port: int = 0,
          open_browser: bool = False, allow_remote: bool = False) -> None:
    """Serve the studio for `ws` until interrupted (Ctrl-C: a running job is stopped the
    CLI's way first, so it saves and its rerun resumes)."""
    ws.require()
    if not is_loopback(host) and not allow_remote:
        raise FacelabError(f"--host {host} lets other machines reach the studio (and the "
                           "workspace's files with the token): add --allow-remote to mean it.")
    if not 0 <= port <= 65535:
        raise FacelabError(f"--port must be from 0 to 65535, not {port}.")
    token = new_token()
    sock = bind(host, port)
    app = create_app(ws, token, allow_remote=allow_remote)
    url = url_of(sock, host, token)
    if not is_loopback(host):
        print(f"warning: the studio listens on {host}, reachable from other machines; "
              "anyone with the URL below can read and change this workspace, over plain "
              "HTTP.", file=sys.stderr, flush=True)
    print(f"facelab studio: {url}", flush=True)
    print(f"Serving {ws.root.resolve()}; Ctrl-C stops it.", flush=True)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
