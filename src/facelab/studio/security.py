"""What keeps the studio local to its user: a one-time token, a header on changing
requests, the Host checked, and paths confined to the open workspace.

- The token (printed with the URL) is asked of every request, as `?token=` or, after the
  first visit, as an HttpOnly SameSite=Strict cookie: another user of the machine or a
  web page cannot read the workspace without it.
- POST/PUT/PATCH/DELETE also need `X-Facelab-Studio: 1`. A cross-site form cannot set a
  header and a cross-site `fetch` that sets one needs a CORS preflight the studio never
  allows, so no other site can start a job (the cookie is SameSite=Strict besides).
- Bound to 127.0.0.1, requests must name a loopback Host: a DNS-rebound name is refused.
- `workspace_path` is the one door from a request to a file: no `..`, no absolute path,
  no NUL or control character, nothing still percent-encoded after the server's one
  decoding (`%252e%252e`), and what the path resolves to (symlinks followed) must stay
  inside the workspace.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from http.cookies import CookieError, SimpleCookie
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, unquote, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facelab.errors import FacelabError
from facelab.workspace import Workspace

COOKIE = "facelab_studio"
HEADER = "x-facelab-studio"
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self'; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
MAX_PATH = 1024


class PathRefused(FacelabError):
    """A requested path that is not a file of the open workspace."""


class PathMissing(PathRefused):
    """A path inside the workspace that names nothing."""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the studio on this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def workspace_path(ws: Workspace, rel: str, *, hidden: bool = False,
                   must_exist: bool = True) -> Path:
    """The file `rel` (a path relative to the workspace, as a request gave it) or
    `PathRefused`. `hidden`: allow names starting with a dot (facelab's own folders)."""
    if not isinstance(rel, str) or not rel or len(rel) > MAX_PATH:
        raise PathRefused("Give a path inside the workspace.")
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        raise PathRefused("A path with control characters is refused.")
    if "\\" in rel:
        raise PathRefused("Use / between folder names.")
    if unquote(rel) != rel:  # what is still encoded after the server's one decoding
        raise PathRefused("A percent-encoded path is refused.")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or rel.startswith("/"):
        raise PathRefused("Absolute paths are refused: give one inside the workspace.")
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            raise PathRefused(f"{rel!r} is refused: no empty, '.' or '..' parts.")
        if part.startswith(".") and not hidden:
            raise PathRefused(f"{rel!r} is refused: facelab's hidden folders are not served.")
    root = ws.root.resolve()
    target = (root / pure).resolve()  # symlinks followed: where it really is
    if not target.is_relative_to(root):
        raise PathRefused(f"{rel!r} leads out of the workspace.")
    if must_exist and not target.exists():
        raise PathMissing(f"{rel} does not exist in the workspace.")
    return target


def plain_name(name: str) -> str:
    """A file name alone (no folder), as a face's name in a request must be."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or name.startswith(".") or len(name) > 255
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise PathRefused(f"{name!r} is not a plain file name.")
    return name


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class SecurityMiddleware:
    """The token, the changing-request header and the Host, checked before any route."""

    def __init__(self, app: ASGIApp, token: str, allow_remote: bool = False) -> None:
        self.app, self.token, self.allow_remote = app, token, allow_remote

    def _same(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = (_header(scope, b"host") or "").rsplit(":", 1)[0]
        if not self.allow_remote and host not in LOOPBACK_NAMES:
            await _plain(send, 403, "facelab studio: this Host is not served.")
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        by_query = self._same((query.get("token") or [None])[0])
        cookie = SimpleCookie()
        try:
            cookie.load(_header(scope, b"cookie") or "")
        except CookieError:  # a malformed cookie header is no token
            cookie = SimpleCookie()
        by_cookie = COOKIE in cookie and self._same(cookie[COOKIE].value)
        if not (by_query or by_cookie):
            await _plain(send, 401, "facelab studio: open the URL `facelab studio` printed "
                         "(it carries the token).")
            return
        method = scope["method"]
        if method in CHANGING and _header(scope, HEADER.encode()) != "1":
            await _plain(send, 403, "facelab studio: changing requests come from the "
                         "studio's page only.")
            return
        if by_query and method == "GET" and not scope["path"].startswith("/api/"):
            # the page: keep the token in a cookie and out of the address bar and history
            rest = {k: v for k, v in query.items() if k != "token"}
            location = quote(scope["path"]) + ("?" + urlencode(rest, doseq=True) if rest else "")
            await _redirect(send, location, self.token)
            return
        await self.app(scope, receive, _with_headers(send))


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += [(b"content-security-policy", CSP.encode()),
                        (b"x-content-type-options", b"nosniff"),
                        (b"x-frame-options", b"DENY"),
                        (b"referrer-policy", b"no-referrer"),
                        (b"cross-origin-resource-policy", b"same-origin")]
            message = {**message, "headers": headers}
        await send(message)
    return wrapped


async def _plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str, token: str) -> None:
    cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")),
                            (b"set-cookie", cookie.encode()),
                            (b"cache-control", b"no-store"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
