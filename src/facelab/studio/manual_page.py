"""The manual extraction page: DeepFaceLab's manual extractor in the browser, over
`facelab.faces.manual`.

The page walks a side's frames (those in `aligned_missing.txt` by default), shows the
faces already on each, and sends the box the user draws; the landmarker runs inside it and
the 68 points come back to be drawn and, when needed, dragged. Saving makes the aligned
face exactly as extraction does (the library's `face_from_points`), as the frame's next
face or in the place of a wrong one.

Everything a request names is data: the side is src or dst, a frame is a plain name that
the side's frame list holds, a box four finite numbers around a face in the frame, points
68 pairs of finite numbers. The library serialises its landmarker, its frame sources and
its writes; saves also take the studio's edit lock, so a trash on the faces page and a save
here never meet inside the `faces-<side>` lock from two threads. A decoded frame is kept
(a few, by the side's folder time), so the image, its faces and every landmark request of
one frame decode it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from facelab.errors import FacelabError
from facelab.faces import manual
from facelab.faces.extractor import ExtractorOptions
from facelab.faces.facemeta import FaceMeta
from facelab.faces.landmarks import box_from_points
from facelab.studio.app import body, ok
from facelab.studio.context import StudioContext
from facelab.studio.security import plain_name
from facelab.workspace import SIDES, Side

TITLE = "Manual faces"
FRAMES_KEPT = 4  # decoded frames kept: the one on screen and its neighbours
JPEG_QUALITY = 90
MAX_FACE_INDEX = 10_000


class _Frames:
    """The last few decoded frames, by (side, name, the side folder's mtime): anything
    facelab writes there (a frame, the video's index, faces.json) is a rename that moves
    the folder's time, so a changed frame is never served from here."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.lock = ws, threading.Lock()
        self.kept: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()

    def get(self, side: Side, name: str) -> np.ndarray:
        folder = self.ws.frames_dir(side)
        key = (side, name, folder.stat().st_mtime_ns if folder.is_dir() else 0)
        with self.lock:
            if key in self.kept:
                self.kept.move_to_end(key)
                return self.kept[key]
        frame = manual.load_frame(self.ws, side, name)
        with self.lock:
            self.kept[key] = frame
            while len(self.kept) > FRAMES_KEPT:
                self.kept.popitem(last=False)
        return frame


def _side(value: Any) -> Side:
    if value not in SIDES:
        raise FacelabError(f"Unknown side {value!r}: use src or dst.")
    return value  # type: ignore[no-any-return]


def _frame_name(value: Any) -> str:
    """A frame's plain name (a folder or '..' in it is refused as a traversal: 403)."""
    if not isinstance(value, str):
        raise FacelabError("Name the frame (a file name such as 00001.png).")
    return plain_name(value)


def _numbers(value: Any, count: int, what: str) -> list[float]:
    """`count` finite JSON numbers (not strings, not booleans), or one sentence."""
    if (not isinstance(value, list) or len(value) != count
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise FacelabError(f"{what} must be a list of {count} numbers.")
    if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
        raise FacelabError(f"{what} must hold finite numbers only.")
    return [float(v) for v in value]


def _points(value: Any) -> np.ndarray:
    if not isinstance(value, list) or len(value) != 68:
        raise FacelabError("The face's points must be a list of 68 [x, y] pairs.")
    return np.array([_numbers(p, 2, "Each of the 68 points") for p in value])


def _face_index(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_FACE_INDEX:
        raise FacelabError("`replace` must be the index of a face of this frame, or null.")
    return value


def _inside(points: np.ndarray, shape: tuple[int, ...]) -> None:
    """Points a little past the frame's edge are a face cut by it; far out is no face."""
    h, w = shape[:2]
    margin = 0.5 * max(w, h)
    if ((points < -margin) | (points > [w + margin, h + margin])).any():
        raise FacelabError(f"Some of the 68 points lie far outside the {w}×{h} frame: place "
                           "them on the face.")


def _rounded(a: Any) -> list[Any]:
    return np.round(np.asarray(a, dtype=np.float64), 2).tolist()  # type: ignore[no-any-return]


def _face_json(meta: FaceMeta) -> dict[str, Any]:
    return {"index": meta.face_index, "box": [int(v) for v in meta.source_rect],
            "points": _rounded(meta.source_landmarks), "detector": meta.detector,
            "yaw": round(meta.yaw, 1), "pitch": round(meta.pitch, 1)}


def routes(ctx: StudioContext) -> list[BaseRoute]:
    ws = ctx.ws
    frames = _Frames(ws)
    options_kept: dict[Side, tuple[Any, ExtractorOptions]] = {}
    warmed: set[Side] = set()

    def extractor(side: Side) -> ExtractorOptions:
        """The side's extraction options (faces.json), read again only when it changes."""
        path = ws.frames_dir(side) / manual.STATE
        st = path.stat() if path.exists() else None
        stamp = (st.st_mtime_ns, st.st_size) if st else None
        hit = options_kept.get(side)
        if hit is None or hit[0] != stamp:
            hit = options_kept[side] = (stamp, manual.workspace_options(ws, side).extractor)
        return hit[1]

    def warm(side: Side) -> None:
        """Read the side's face headers and load the landmarker while the user looks at
        the first frame: the first box then gets its points in tens of milliseconds."""
        try:
            manual.warm(ws, side)
            blank = np.zeros((64, 64, 3), np.uint8)
            manual.landmarks_in_box(blank, (0, 0, 64, 64), extractor(side))
        except (FacelabError, OSError):
            pass  # the requests that need them will say what is wrong

    def list_frames(request: Request) -> Response:
        side = _side(request.path_params["side"])
        names = manual.frame_names(ws, side)
        have = set(names)
        missing = [n for n in manual.missing_frames(ws, side) if n in have]
        if side not in warmed:
            warmed.add(side)
            threading.Thread(target=warm, args=(side,), daemon=True,
                             name=f"manual-warm-{side}").start()
        return ok({"side": side, "frames": names, "missing": missing,
                   "extracted": (ws.frames_dir(side) / manual.STATE).is_file(),
                   "min_box": manual.MIN_BOX})

    def frame_image(request: Request) -> Response:
        side = _side(request.path_params["side"])
        image = frames.get(side, _frame_name(request.path_params["name"]))
        done, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not done:
            raise FacelabError("The frame could not be encoded as JPEG.")
        return Response(buf.tobytes(), media_type="image/jpeg",
                        headers={"cache-control": "no-store"})

    def frame_faces(request: Request) -> Response:
        side = _side(request.path_params["side"])
        name = _frame_name(request.path_params["name"])
        h, w = frames.get(side, name).shape[:2]
        faces = manual.frame_faces(ws, side, name)
        return ok({"side": side, "frame": name, "width": w, "height": h,
                   "faces": [_face_json(m) for m in faces]})

    def landmarks(side: Side, data: dict[str, Any]) -> dict[str, Any]:
        name = _frame_name(data.get("frame"))
        box = _numbers(data.get("box"), 4, "The face box")
        lm = manual.landmarks_in_box(frames.get(side, name), tuple(box),  # type: ignore[arg-type]
                                     extractor(side))
        return {"frame": name, "box": box, "points": _rounded(lm.points68), "model": lm.model,
                "yaw": round(lm.yaw, 1), "pitch": round(lm.pitch, 1), "roll": round(lm.roll, 1)}

    def save(side: Side, data: dict[str, Any]) -> dict[str, Any]:
        name = _frame_name(data.get("frame"))
        old = _face_index(data.get("replace"))
        image = frames.get(side, name)
        opts = extractor(side)
        if data.get("points") is not None:
            points = _points(data["points"])
            _inside(points, image.shape)
        elif data.get("box") is not None:  # a box alone: its landmarks as they come
            box = _numbers(data["box"], 4, "The face box")
            points = manual.landmarks_in_box(image, tuple(box), opts).points68  # type: ignore[arg-type]
        else:
            raise FacelabError("Send the face's 68 points (or its box) to save it.")
        face = manual.face_from_points(image, points, name, side, opts)
        with ctx.edit_lock:
            path = (manual.save_manual_face(ws, side, name, face) if old is None
                    else manual.replace_face(ws, side, name, old, face))
            meta = manual.frame_face_files(ws, side, name)
            missing = manual.missing_frames(ws, side)
        saved = next((m for p, m in meta if p == path), None)
        return {"file": path.name, "frame": name, "replaced": old,
                "box": [round(v, 1) for v in box_from_points(points)],
                "face": _face_json(saved) if saved else None,
                "faces": [_face_json(m) for _, m in meta], "missing": len(missing)}

    async def post_landmarks(request: Request) -> Response:
        side = _side(request.path_params["side"])
        return ok(await run_in_threadpool(landmarks, side, await body(request)))

    async def post_save(request: Request) -> Response:
        side = _side(request.path_params["side"])
        return ok(await run_in_threadpool(save, side, await body(request)))

    base = "/api/manual/{side}"
    return [  # plain functions: Starlette runs them in its thread pool
        Route(base + "/frames", list_frames),
        Route(base + "/frame/{name:path}", frame_image),  # :path, so '../x' reaches the check
        Route(base + "/faces/{name:path}", frame_faces),
        Route(base + "/landmarks", post_landmarks, methods=["POST"]),
        Route(base + "/save", post_save, methods=["POST"]),
    ]


def shutdown(ctx: StudioContext) -> None:
    """The landmarker and the open frame sources, let go as the studio stops."""
    manual.release()
