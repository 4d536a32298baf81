"""The manual extraction page in Debian's chromium against the real server: a face placed
by hand with the mouse on frames whose faces the detector "missed" is saved in exactly the
automatic format and leaves aligned_missing.txt; each documented key and the wheel do what
the help says; the API refuses bad input in one sentence and traversals outright; frames
come from a dst kept in its video as well."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facelab.faces.faceimage import read_meta
from facelab.fsutil import read_json, write_json
from tests.conftest import copy_workspace, data_file, put_video, run_facelab
from tests.studio.conftest import Studio, screenshot, studio_server, wait_until

MISSING = ("00040.png", "00041.png", "00042.png")  # their faces "missed" by the detector
BOX = "document.querySelector('#manual').dataset.box"


@pytest.fixture(scope="module")
def studio(aligned_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """A copy of the session's GRID workspace where extraction found no face in MISSING:
    their faces moved to reference/ (the automatic format to compare with), 0 faces in
    faces.json, the frames listed in aligned_missing.txt, as `facelab extract` leaves it."""
    ws = copy_workspace(aligned_faces, tmp_path_factory.mktemp("manual_page") / "ws")
    dst = ws / "data_dst"
    (ws / "reference").mkdir()
    state = read_json(dst / "faces.json")
    for frame in MISSING:
        shutil.move(dst / "aligned" / f"{Path(frame).stem}_0.jpg", ws / "reference")
        state["frames"][frame] = 0
    write_json(dst / "faces.json", state)
    (dst / "aligned_missing.txt").write_text("".join(f"{f}\n" for f in MISSING))
    with studio_server(ws) as s:
        yield s


def _state(page: Any) -> dict[str, Any]:
    d = page.evaluate("({...document.querySelector('#manual').dataset})")
    for key in ("box", "points"):
        d[key] = json.loads(d[key]) if d.get(key) else None
    return d  # type: ignore[no-any-return]


def _until(page: Any, condition: str) -> None:
    """Wait until `condition` (JavaScript on `d`, the page's state) holds."""
    wait_until(page, f"(d => Boolean(d && ({condition})))"
                     "(document.querySelector('#manual')?.dataset)")


def _settled(page: Any) -> dict[str, Any]:
    """The page once its frame is shown and no landmark request is waiting."""
    _until(page, "d.loaded === '1' && d.pending === '0'")
    return _state(page)


def _screen(page: Any) -> Any:
    """Frame pixels → page pixels on the canvas."""
    bb = page.locator("#manual-canvas").bounding_box()
    w = float(page.evaluate("document.querySelector('#manual').dataset.size.split(',')[0]"))
    s = bb["width"] / w
    return lambda x, y: (bb["x"] + x * s, bb["y"] + y * s)


def _drag(page: Any, at: Any, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*at(*a))
    page.mouse.down()
    page.mouse.move(*at(*b), steps=6)
    page.mouse.up()


def _mean_error(a: Any, b: Any) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1).mean())


def _shape(v: object) -> object:
    return np.shape(v) if isinstance(v, list) else type(v).__name__


@pytest.mark.slow
def test_face_placed_by_hand_and_the_keys(studio: Studio, page: Any) -> None:
    ws = studio.ws
    ref = read_meta(ws / "reference" / "00040_0.jpg")  # what extraction made of 00040
    page.goto(f"{studio.url}#/manual?side=dst")
    st = _settled(page)
    assert (st["mode"], st["k"], st["n"], st["frame"]) == ("missing", "1", "3", MISSING[0])
    assert page.inner_text("#manual-pos").startswith("frame 1 of 3 · 00040.png")
    assert page.inner_text("#manual-faces") == "no face"

    page.keyboard.press("h")  # H hides the help overlay and shows it again
    assert page.is_hidden("#manual-help") and _state(page)["help"] == "hidden"
    page.keyboard.press("H")
    assert page.is_visible("#manual-help") and "Enter" in page.inner_text("#manual-help")

    at = _screen(page)
    x0, y0, x1, y1 = ref.source_rect
    _drag(page, at, (x0 - 5, y0 + 4), (x1 - 5, y1 + 4))  # a box drawn by hand, a bit off
    st = _settled(page)
    assert st["model"] == "mesh"  # the landmarker ran in the box
    assert np.allclose(st["box"], [x0 - 5, y0 + 4, x1 - 5, y1 + 4], atol=1.5)
    assert _mean_error(st["points"], ref.source_landmarks) < 3

    box = np.array(st["box"])  # the wheel resizes the box around its centre
    page.mouse.move(*at((x0 + x1) / 2, (y0 + y1) / 2))
    before = page.evaluate(BOX)
    page.mouse.wheel(0, -100)  # a wheel event may reach the page after wheel() returns
    _until(page, f"d.box !== {json.dumps(before)}")
    grown = np.array(_settled(page)["box"])
    assert grown[2] - grown[0] > 1.05 * (box[2] - box[0])
    assert np.allclose((grown[:2] + grown[2:]) / 2, (box[:2] + box[2:]) / 2, atol=0.2)
    before = page.evaluate(BOX)
    page.mouse.wheel(0, 100)
    _until(page, f"d.box !== {json.dumps(before)}")
    assert np.allclose(_settled(page)["box"], box, atol=0.3)

    corner = (box[0] + 3, box[1] + 3)  # inside the box, far from any point: moves the box
    _drag(page, at, corner, (corner[0] + 12, corner[1] + 6))
    moved = _settled(page)
    assert np.allclose(moved["box"], box + np.array([12, 6, 12, 6]), atol=1)
    assert _mean_error(moved["points"], ref.source_landmarks) < 3  # still on the face
    _drag(page, at, (corner[0] + 12, corner[1] + 6), corner)
    st = _settled(page)

    chin = st["points"][8]  # one point dragged 5 px down; the others stay
    _drag(page, at, tuple(chin), (chin[0], chin[1] + 5))
    dragged = _settled(page)
    assert abs(dragged["points"][8][1] - chin[1] - 5) < 0.6
    assert dragged["points"][:8] == st["points"][:8] and dragged["model"] == "mesh"
    screenshot(page, "studio_manual.png")

    page.keyboard.press("Enter")  # accept: saved, and the next frame
    _until(page, "d.k === '2' && d.saved === '1' && d.loaded === '1'")
    path = ws / "data_dst" / "aligned" / "00040_0.jpg"
    meta = read_meta(path)
    assert (meta.detector, meta.source_filename, meta.face_index) == ("manual", MISSING[0], 0)
    assert np.allclose(meta.source_landmarks, dragged["points"], atol=0.01)
    auto, man = ref.to_json(), meta.to_json()  # the automatic format exactly
    assert list(man) == list(auto)
    assert {k: _shape(v) for k, v in man.items()} == {k: _shape(v) for k, v in auto.items()}
    assert abs(meta.yaw - ref.yaw) < 3 and _mean_error(meta.landmarks, ref.landmarks) < 3
    missing = (ws / "data_dst" / "aligned_missing.txt").read_text().split()
    assert missing == list(MISSING[1:])
    assert read_json(ws / "data_dst" / "faces.json")["frames"][MISSING[0]] == 1
    assert "saved 1" in page.inner_text("#manual-saved")

    faces_before = sorted(p.name for p in (ws / "data_dst" / "aligned").iterdir())
    for key, k in ((" ", "3"), (",", "2"), (".", "3"), ("ArrowLeft", "2"), ("ArrowRight", "3"),
                   ("ArrowLeft", "2"), (",", "1"), ("Shift+ArrowRight", "3"),
                   ("Shift+ArrowLeft", "1")):  # Shift: ten frames (here: to the ends)
        page.keyboard.press("Space" if key == " " else key)
        _until(page, f"d.k === '{k}' && d.loaded === '1'")
    assert sorted(p.name for p in (ws / "data_dst" / "aligned").iterdir()) == faces_before
    assert _state(page)["frame"] == MISSING[0]  # back on the frame: the saved face is drawn
    assert page.inner_text("#manual-faces").startswith("face 0 · manual · yaw ")

    x0, y0 = meta.source_rect[:2]  # a click on a face picks it up: Enter would replace it
    page.mouse.click(*_screen(page)(x0 + 3, y0 + 3))
    _until(page, "d.replace === '0'")
    assert "Enter replaces face 0" in page.inner_text("#manual-status")
    assert np.allclose(_state(page)["points"], meta.source_landmarks, atol=0.01)
    page.keyboard.press("Escape")  # and Esc lets it go
    assert (_state(page)["replace"], _state(page)["box"]) == ("", None)


@pytest.mark.slow
@pytest.mark.parametrize("path, sent, words", [
    ("/api/manual/both/frames", None, "Unknown side 'both'"),
    ("/api/manual/dst/frame/00999.png", None, "has no frame 00999.png"),
    ("/api/manual/dst/landmarks", {"frame": "00040.png", "box": [1, 2, 3]}, "list of 4 numbers"),
    ("/api/manual/dst/landmarks", {"frame": "00040.png", "box": ["1", 2, 90, 90]}, "4 numbers"),
    ("/api/manual/dst/landmarks", {"frame": "00040.png", "box": [1, 2, float("nan"), 9]},
     "finite"),
    ("/api/manual/dst/landmarks", {"frame": "00040.png", "box": [1, 2, 1e309, 9]}, "finite"),
    ("/api/manual/dst/landmarks", {"frame": "00040.png", "box": [-900, -900, -500, -500]},
     "outside the 360×288 frame"),
    ("/api/manual/dst/landmarks", {"frame": "00040.png", "box": [10, 10, 15, 90]},
     "at least 20×20"),
    ("/api/manual/dst/landmarks", {"box": [10, 10, 90, 90]}, "Name the frame"),
    ("/api/manual/dst/save", {"frame": "00041.png"}, "68 points"),
    ("/api/manual/dst/save", {"frame": "00041.png", "points": [[1, 2]] * 67}, "68 [x, y]"),
    ("/api/manual/dst/save", {"frame": "00041.png", "points": [[1, 2, 3]] * 68}, "list of 2"),
    ("/api/manual/dst/save", {"frame": "00041.png", "points": [[5e3, 2]] * 68}, "far outside"),
    ("/api/manual/dst/save", {"frame": "00041.png", "points": [[100, 100]] * 68},
     "at least 20×20"),
    ("/api/manual/dst/save", {"frame": "00041.png", "box": [120, 80, 240, 250],
                              "replace": True}, "`replace`"),
    ("/api/manual/dst/save", {"frame": "00041.png", "box": [120, 80, 240, 250],
                              "replace": 4}, "has no face 4"),
])
def test_bad_input_is_one_sentence(studio: Studio, path: str, sent: Any, words: str) -> None:
    before = (studio.ws / "data_dst" / "aligned_missing.txt").read_text()
    status, _, raw = studio.request("POST" if sent is not None else "GET", path, body=sent)
    msg = json.loads(raw)["error"]
    assert status == 400, (status, msg)
    assert words in msg and "\n" not in msg and msg.endswith("."), msg
    assert (studio.ws / "data_dst" / "aligned_missing.txt").read_text() == before


@pytest.mark.slow
def test_traversal_is_refused(studio: Studio) -> None:
    for path in ("/api/manual/dst/frame/../../data_src/00001.png",
                 "/api/manual/dst/frame/..%2F..%2Fdata_src%2F00001.png",
                 "/api/manual/dst/faces/..", "/api/manual/dst/frame/%2Fetc%2Fpasswd",
                 "/api/manual/dst/frame/.hidden"):
        status, _, raw = studio.request("GET", path)
        assert status == 403 and "not a plain file name" in json.loads(raw)["error"], path
    for frame in ("../data_src/00001.png", "/etc/passwd", "a\\b.png"):
        status, _, raw = studio.request("POST", "/api/manual/dst/landmarks",
                                        body={"frame": frame, "box": [120, 80, 240, 250]})
        assert status == 403, (frame, raw)
    status, _, raw = studio.request("GET", "/api/manual/dst/frame/faces.json")  # not a frame
    assert status == 400 and "has no frame faces.json" in json.loads(raw)["error"]
    status, _, _ = studio.request("POST", "/api/manual/dst/save", header=False,
                                  body={"frame": "00041.png", "box": [120, 80, 240, 250]})
    assert status == 403  # without the studio's header: not from its page


@pytest.mark.slow
def test_save_by_box_then_replace(studio: Studio) -> None:
    """A box alone is saved with its landmarks; `replace` puts a face in the place of one
    the frame has, which goes to aligned_trash/."""
    frame, aligned = MISSING[2], studio.ws / "data_dst" / "aligned"
    box = list(read_meta(studio.ws / "reference" / "00042_0.jpg").source_rect)
    first = studio.json("POST", "/api/manual/dst/save", {"frame": frame, "box": box})
    assert (first["file"], first["face"]["detector"]) == ("00042_0.jpg", "manual")
    old = (aligned / "00042_0.jpg").read_bytes()
    points = np.add(first["face"]["points"], [3.0, 0.0]).tolist()
    second = studio.json("POST", "/api/manual/dst/save",
                         {"frame": frame, "points": points, "replace": 0})
    assert second["file"] == "00042_0.jpg" and [f["index"] for f in second["faces"]] == [0]
    assert (studio.ws / "data_dst" / "aligned_trash" / "00042_0.jpg").read_bytes() == old
    assert np.allclose(read_meta(aligned / "00042_0.jpg").source_landmarks, points)
    assert frame not in (studio.ws / "data_dst" / "aligned_missing.txt").read_text()


@pytest.mark.slow
def test_frames_of_a_dst_kept_in_its_video(aligned_faces: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    put_video(ws, "dst", data_file("grid/speaker_a_1.mpg"))
    res = run_facelab("-w", ws, "video", "extract", "dst")  # the index only: no PNG
    assert res.rc == 0, res.err
    with studio_server(ws) as s:
        listed = s.json("GET", "/api/manual/dst/frames")
        assert len(listed["frames"]) == 75 and listed["missing"] == []
        for frame in ("00040.png", "00041.png"):
            status, headers, raw = s.request("GET", f"/api/manual/dst/frame/{frame}")
            assert status == 200 and headers["content-type"] == "image/jpeg"
            shown = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
            png = cv2.imread(str(aligned_faces / "data_dst" / frame))
            assert np.abs(shown.astype(int) - png).mean() < 2.5  # the same frame, as JPEG
        ref = read_meta(aligned_faces / "data_dst" / "aligned" / "00041_0.jpg")
        got = s.json("POST", "/api/manual/dst/landmarks",
                     {"frame": "00041.png", "box": list(ref.source_rect)})
        assert got["model"] == "mesh"
        assert _mean_error(got["points"], ref.source_landmarks) < 1.5
        assert s.json("GET", "/api/manual/dst/faces/00041.png")["faces"] == []
