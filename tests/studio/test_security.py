"""The studio's doors, against the real server on 127.0.0.1: the token, the cookie, the
header on changing requests, the Host, and every way of asking for a file outside the
workspace."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.studio.security import PathMissing, PathRefused, is_loopback, workspace_path
from facelab.workspace import Workspace
from tests.conftest import ROOT, Result, assert_one_line_error
from tests.studio.conftest import Studio, studio_argv, studio_server

SECRET = "the secret outside the workspace"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a file inside, a secret beside it, symlinks in and out."""
    root = tmp_path_factory.mktemp("security")
    (root / "secret.txt").write_text(SECRET)
    (root / "outside").mkdir()
    (root / "outside" / "secret.txt").write_text(SECRET)
    ws = root / "ws"
    (ws / "data_src" / "aligned").mkdir(parents=True)
    (ws / "inside.txt").write_text("inside")
    (ws / ".locks").mkdir()
    (ws / ".locks" / "merge.lock").write_text("{}")
    os.symlink(root / "secret.txt", ws / "link_out")
    os.symlink(root / "outside", ws / "dir_out")
    os.symlink(ws / "inside.txt", ws / "link_in")
    os.symlink("../../secret.txt", ws / "data_src" / "rel_out")
    face = cv2.imencode(".jpg", np.full((64, 64, 3), 200, np.uint8))[1].tobytes()
    (root / "outside" / "face.jpg").write_bytes(face)  # an image: it would thumbnail
    os.symlink(root / "outside" / "face.jpg", ws / "data_src" / "aligned" / "evil.jpg")
    return ws


@pytest.fixture(scope="module")
def studio(tree: Path) -> Iterator[Studio]:
    with studio_server(tree) as s:
        yield s


def test_every_request_needs_the_token(studio: Studio) -> None:
    for path in ("/", "/api/pages", "/ws/inside.txt", "/static/app.js", "/api/workspace"):
        status, _, body = studio.request("GET", path, token=False)
        assert status == 401, path
        assert b"inside" not in body
    status, _, _ = studio.request("GET", "/api/pages", token=False,
                                  headers={"Cookie": "facelab_studio=wrong"})
    assert status == 401
    status, _, _ = studio.request("GET", "/api/pages?token=wrong", token=False)
    assert status == 401
    status, _, body = studio.request("GET", "/ws/inside.txt")
    assert (status, body) == (200, b"inside")


def test_the_first_visit_sets_a_strict_cookie_and_drops_the_token(studio: Studio) -> None:
    status, headers, _ = studio.request("GET", f"/?token={studio.token}", token=False)
    assert status == 303
    assert headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"facelab_studio={studio.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, headers, body = studio.request("GET", "/")
    assert status == 200 and b"facelab studio" in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_changing_requests_need_the_page_header(studio: Studio) -> None:
    for kw in ({"header": False}, {"header": False, "token": False}):
        status, _, _ = studio.request("POST", "/api/jobs", body={"stage": "extract"}, **kw)
        assert status in (401, 403)
    status, _, body = studio.request("POST", f"/api/jobs?token={studio.token}", token=False,
                                     header=False, body={"stage": "extract"})
    assert status == 403, body
    status, _, body = studio.request("POST", "/api/jobs/current/cancel")
    assert status == 400 and b"No job is running" in body  # the header lets it through


def test_a_rebound_host_name_is_refused(studio: Studio) -> None:
    status, _, _ = studio.request("GET", "/api/pages", headers={"Host": "evil.example:80"})
    assert status == 403
    status, _, _ = studio.request("GET", "/api/pages", headers={"Host": "localhost"})
    assert status == 200


TRAVERSALS = [
    "/ws/../secret.txt", "/ws/../../etc/passwd", "/ws/..%2fsecret.txt",
    "/ws/%2e%2e/secret.txt", "/ws/%2e%2e%2fsecret.txt", "/ws/%252e%252e/secret.txt",
    "/ws/%252e%252e%252fsecret.txt", "/ws/data_src/%2e%2e/%2e%2e/secret.txt",
    "/ws//etc/passwd", "/ws/%2fetc%2fpasswd", "/ws/data_src/..%5c..%5csecret.txt",
    "/ws/inside.txt%00.png", "/ws/link_out", "/ws/dir_out/secret.txt", "/ws/data_src/rel_out",
    "/ws/.locks/merge.lock", "/ws/./inside.txt/../../secret.txt",
    "/static/../secret.txt", "/static/..%2f..%2f..%2fsecret.txt",
    "/api/workspace/verify?file=../secret.txt", "/api/workspace/verify?file=/etc/passwd",
    "/api/workspace/verify?file=link_out", "/api/workspace/verify?file=%2e%2e/secret.txt",
    "/api/faces/src/meta/..%2f..%2f..%2fsecret.txt", "/api/faces/src/image/%2e%2e",
    "/api/faces/src/thumb/rel_out", "/api/faces/../../secret.txt",
    "/api/faces/src/image/..%252f..%252fsecret.txt", "/api/faces/src/image/evil.jpg",
    "/api/faces/src/thumb/evil.jpg", "/api/faces/src/meta/evil.jpg",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_path_leads_out_of_the_workspace(studio: Studio, path: str) -> None:
    status, _, body = studio.request("GET", path)
    assert status in (400, 403, 404), (path, status, body)
    assert SECRET.encode() not in body and b"root:" not in body


def test_links_inside_the_workspace_are_served(studio: Studio) -> None:
    assert studio.request("GET", "/ws/link_in")[2] == b"inside"


def test_trash_refuses_names_that_are_not_faces(studio: Studio) -> None:
    for names in (["../../secret.txt"], ["../inside.txt"], ["rel_out"], [".facelab-journal"],
                  ["evil.jpg"],
                  "x", [], [1]):
        status, _, body = studio.request("POST", "/api/faces/src/trash", body={"names": names})
        assert status in (400, 403, 404), (names, body)
    assert (studio.ws.parent / "secret.txt").read_text() == SECRET
    assert not (studio.ws / "data_src" / "aligned_trash").exists()


def test_workspace_path(tmp_path: Path, tree: Path) -> None:
    ws = Workspace(tree)
    assert workspace_path(ws, "inside.txt") == (tree / "inside.txt").resolve()
    assert workspace_path(ws, "new/file.mp4", must_exist=False) == tree.resolve() / "new/file.mp4"
    for bad in ("", "..", "../secret.txt", "/etc/passwd", "a/../../secret.txt", "%2e%2e",
                "%252e%252e/x", "a\\..\\b", "inside.txt\x00", "link_out", "dir_out/secret.txt",
                "data_src/rel_out", ".locks/merge.lock", "a//b", "./inside.txt", "x" * 2000):
        with pytest.raises(PathRefused):
            workspace_path(ws, bad)
    with pytest.raises(PathMissing):
        workspace_path(ws, "nothing.txt")
    assert workspace_path(ws, ".locks/merge.lock", hidden=True).name == "merge.lock"


def test_another_host_needs_allow_remote(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    proc = subprocess.run(studio_argv(tmp_path, "--host", "0.0.0.0"), capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert_one_line_error(Result(proc.returncode, proc.stdout, proc.stderr), "--allow-remote")


def test_a_batch_of_thumbnails_names_faces_only(studio: Studio) -> None:
    names = ["../../secret.txt", "..%2f..%2fsecret.txt", "evil.jpg", "%2e%2e", "/etc/passwd",
             ".facelab-journal", "..", "a\\b"]
    status, _, body = studio.request("GET", "/api/faces/src/thumbs?names=" + "/".join(
        n.replace("%", "%25") for n in names))
    assert status == 200
    found = json.loads(body)
    assert found and all(v is None for v in found.values()), found  # every one refused
    assert SECRET.encode() not in body
