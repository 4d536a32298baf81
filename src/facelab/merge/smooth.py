"""Temporal smoothing of dst landmarks, so the merged face does not jitter.

The merger places each predicted face through `face_transform` of the dst face's 68
landmarks; the landmarker's frame-to-frame noise (σ of the fitted centre ≈ 0.15 % of the
face size on GRID's still heads, 0.4 % on the Pexels clip; rotation 0.1–0.3°) moves that
placement and the swapped face shimmers. DeepFaceLab and faceswap paste each frame on its
own; we have the whole clip offline, so we smooth along time.

Faces are first linked into tracks (`build_tracks`): per frame, the open tracks' last faces
and the frame's faces are paired greedily by centre distance relative to the box size (a
few faces per frame: greedy on the sorted cost list gives the optimal pairing in every
realistic case, without scipy). A track *bridges* a gap of up to `MAX_GAP` frames without a
face (a missed detection, a hand over the face) when the face comes back near where it left;
the filter works in time, so across a gap it simply trusts the new measurement more.

Each track's landmarks are split into a pose, the least-squares similarity (centre, scale,
rotation) of the points `face_transform` fits (`FIT_POINTS`), and a shape, the landmarks in
that pose's unit frame. The pose carries the placement jitter and is smoothed strongly; the
shape carries the expression (mouth opening changes within 2–3 frames in speech) and is
smoothed lightly. Because the smoothed shape still fits the mean face by the identity, the
merger's `face_transform` of the result is exactly the smoothed pose.

Filter, chosen by measurement (bench/smooth.py, semi-synthetic tracks with a known truth:
Pexels head motion plus GRID- or Pexels-level noise; RMSE after/before, lower is better):

| filter (pose)                       | GRID noise: moving | still | Pexels noise: moving | still |
|-------------------------------------|--------------------|-------|----------------------|-------|
| One-Euro as published, 0.5 Hz, β 10 | 0.71               | 0.31  | 0.55                 | 0.39  |
| Savitzky–Golay, 9 frames            | 0.51               | 0.48  | 0.51                 | 0.51  |
| Savitzky–Golay, 15 frames           | 0.63               | 0.38  | 0.44                 | 0.39  |
| ours, strength 4                    | 0.69               | 0.20  | 0.51                 | 0.27  |

Savitzky–Golay is fixed: a window short enough to follow a head turn leaves half the noise
on a still head, where jitter shows most. The published One-Euro adapts, but its speed is
the frame difference, so noise itself raises the cutoff (on a still head it keeps 0.31 of
GRID-level noise but 0.39 of Pexels-level noise). Ours is One-Euro's exponential filter with
cutoff min_cutoff + β·speed, the speed taken from a 9-frame local quadratic fit
(Savitzky–Golay slope: zero phase, noise-robust), run forward then backward over the result
(filtfilt: zero phase). Strength k sets the pose's minimum cutoff to 2/k Hz (β 40 per face
size/s) and the shape's to 16/k Hz (β 100). On real faces at the default strength 4: GRID
(still heads, speech) centre jitter ÷5–8, rotation jitter ÷15–25, mouth-opening correlation
≥ 0.986; Pexels (turns) centre jitter ÷2.1, rotation ÷4, smoothed↔raw 0.35 % of the face
size on moving frames, mouth r 0.999. Strengths above 4 barely steady the pose further but
start to flatten the mouth (GRID r 0.977 at 10): 4 is the default.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from facelab.faces.facetype import FIT_POINTS, MEAN_FACE_68

DEFAULT_SMOOTH = 4
MAX_SMOOTH = 10  # the CLI's bound: beyond it nothing steadies further (see above)
#: Frames without a face that a track bridges (4 missing frames start a new track).
MAX_GAP = 3
#: A face links to a track whose last face's centre is within this many box sizes
#: (times √(frames apart)); the box sizes must also agree within this ratio.
LINK_DISTANCE = 0.5
LINK_SIZE_RATIO = 1.5
#: One-Euro settings at strength 1 (cutoffs in Hz, speeds in face sizes per second);
#: strength k divides the minimum cutoff by k. See the module docstring for the choice.
POSE_MIN_CUTOFF = 2.0
POSE_BETA = 40.0
SHAPE_MIN_CUTOFF = 16.0
SHAPE_BETA = 100.0
#: Samples of the local quadratic fit that estimates the speed.
SPEED_WINDOW = 9

_MEAN = MEAN_FACE_68[:, 0] + 1j * MEAN_FACE_68[:, 1]
_MEAN_FIT = _MEAN[FIT_POINTS] - _MEAN[FIT_POINTS].mean()
_MEAN_REF = _MEAN[FIT_POINTS].mean()


@dataclass(frozen=True, eq=False)
class FaceRef:
    """One dst face: where it is (the frame's position in the clip, the face's index as in
    `<frame>_<face>.jpg`), its 68 landmarks (frame pixels) and its detection box (x0, y0,
    x1, y1). The merge's job list makes them (`jobs.face_refs`)."""

    frame: int
    face: int
    landmarks: np.ndarray
    rect: tuple[float, float, float, float]

    @property
    def key(self) -> tuple[int, int]:
        return self.frame, self.face

    @property
    def centre(self) -> np.ndarray:
        x0, y0, x1, y1 = self.rect
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2])

    @property
    def size(self) -> float:
        x0, y0, x1, y1 = self.rect
        return math.sqrt(max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6))


@dataclass
class Track:
    """One person's faces over time: at most one per frame, in frame order."""

    faces: list[FaceRef] = field(default_factory=list)

    @property
    def frames(self) -> list[int]:
        return [f.frame for f in self.faces]

    def __len__(self) -> int:
        return len(self.faces)


def _link_cost(last: FaceRef, face: FaceRef) -> float:
    """Centre distance in box sizes, scaled to one frame apart; inf when they cannot link."""
    size = (last.size + face.size) / 2
    ratio = max(last.size, face.size) / min(last.size, face.size)
    apart = face.frame - last.frame
    dist = float(np.linalg.norm(face.centre - last.centre)) / size / math.sqrt(apart)
    return dist if dist <= LINK_DISTANCE and ratio <= LINK_SIZE_RATIO else math.inf


def build_tracks(faces: Sequence[FaceRef], max_gap: int = MAX_GAP) -> list[Track]:
    """Link faces of consecutive frames into tracks (see the module docstring)."""
    by_frame: dict[int, list[FaceRef]] = defaultdict(list)
    for f in faces:
        by_frame[f.frame].append(f)
    tracks: list[Track] = []
    live: list[Track] = []
    for frame in sorted(by_frame):
        here = sorted(by_frame[frame], key=lambda f: f.face)
        if len({f.face for f in here}) != len(here):
            raise ValueError(f"frame {frame} lists the same face index twice")
        live = [t for t in live if frame - t.faces[-1].frame <= max_gap + 1]
        pairs = sorted((c, i, j) for i, t in enumerate(live) for j, f in enumerate(here)
                       if (c := _link_cost(t.faces[-1], f)) < math.inf)
        taken_t: set[int] = set()
        taken_f: set[int] = set()
        for _, i, j in pairs:
            if i not in taken_t and j not in taken_f:
                live[i].faces.append(here[j])
                taken_t.add(i)
                taken_f.add(j)
        for j, f in enumerate(here):
            if j not in taken_f:
                track = Track([f])
                tracks.append(track)
                live.append(track)
    return tracks


def slope_speed(x: np.ndarray, t: np.ndarray, window: int = SPEED_WINDOW) -> np.ndarray:
    """|dx/dt| of x (T×G×D; speed = norm over D) from a local quadratic fit (Savitzky–Golay)
    over `window` samples at their true times: zero phase and robust to the noise, which
    the One-Euro filter's own frame-difference speed is not."""
    n = len(x)
    w = min(window, n)
    flat = x.reshape(n, -1)
    d = np.empty_like(flat)
    for i in range(n):
        lo = min(max(i - w // 2, 0), n - w)
        dt = t[lo:lo + w] - t[i]
        coef = np.linalg.pinv(np.vander(dt, min(3, w), increasing=True)) @ flat[lo:lo + w]
        d[i] = coef[1]
    return np.linalg.norm(d.reshape(x.shape), axis=-1, keepdims=True)


def adaptive_smooth(x: np.ndarray, t: np.ndarray, min_cutoff: float, beta: float
                    ) -> np.ndarray:
    """One-Euro-style smoothing of x (T×G×D) at times t (seconds): an exponential filter
    whose cutoff is min_cutoff + beta·speed (Hz; speed from `slope_speed`), run forward then
    backward (the second pass undoes the first's lag: zero phase)."""
    if len(x) < 3:
        return x.copy()
    cutoff = min_cutoff + beta * slope_speed(x, t)
    cutoff = (cutoff[1:] + cutoff[:-1]) / 2  # per step between two samples
    dt = np.diff(t)[:, None, None]
    alpha = 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))
    y = x.copy()
    for i in range(1, len(y)):  # forward; alpha[i] belongs to the step from i to i + 1
        y[i] = y[i - 1] + alpha[i - 1] * (y[i] - y[i - 1])
    for i in range(len(y) - 2, -1, -1):  # backward over the forward result
        y[i] = y[i + 1] + alpha[i] * (y[i] - y[i + 1])
    return y


def decompose(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T×68×2 landmarks → centre (T, complex px), pose a = scale·e^{i·angle} (T, complex),
    shape (T×68 complex, the mean face's unit frame), such that
    lm = (shape - ref)·a + centre. The similarity is `face_transform`'s fit, in closed form."""
    p = lm[..., 0] + 1j * lm[..., 1]
    centre = p[:, FIT_POINTS].mean(axis=1)
    pc = p[:, FIT_POINTS] - centre[:, None]
    to_unit = (np.conj(pc) * _MEAN_FIT).sum(axis=1) / (np.abs(pc) ** 2).sum(axis=1)
    shape = (p - centre[:, None]) * to_unit[:, None] + _MEAN_REF
    return centre, 1 / to_unit, shape


def compose(centre: np.ndarray, a: np.ndarray, shape: np.ndarray) -> np.ndarray:
    p = (shape - _MEAN_REF) * a[:, None] + centre[:, None]
    return np.stack([p.real, p.imag], axis=-1)


def _pairs(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


def smooth_track(lm: np.ndarray, frames: np.ndarray, strength: int, fps: float = 25.0
                 ) -> np.ndarray:
    """Smoothed T×68×2 landmarks of one track (frames: their frame numbers)."""
    if strength <= 0 or len(lm) < 3:
        return lm.copy()
    t = np.asarray(frames, np.float64) / fps
    centre, a, shape = decompose(lm)
    size = float(np.median(np.abs(a)))  # the unit square's side in pixels
    cut = POSE_MIN_CUTOFF / strength
    # centre (one 2-D signal), log scale, angle: each filtered with its own speed
    c = adaptive_smooth(_pairs(centre / size)[:, None], t, cut, POSE_BETA)[:, 0]
    s = adaptive_smooth(np.log(np.abs(a))[:, None, None], t, cut, POSE_BETA)[:, 0, 0]
    r = adaptive_smooth(np.unwrap(np.angle(a))[:, None, None], t, cut, POSE_BETA)[:, 0, 0]
    shp = adaptive_smooth(_pairs(shape), t, SHAPE_MIN_CUTOFF / strength, SHAPE_BETA)
    return compose((c[:, 0] + 1j * c[:, 1]) * size, np.exp(s + 1j * r),
                   shp[..., 0] + 1j * shp[..., 1])


def smooth_landmarks(faces: Iterable[FaceRef], strength: int, fps: float = 25.0
                     ) -> dict[tuple[int, int], np.ndarray]:
    """Each face's smoothed 68×2 landmarks, by (frame, face index): 0 returns copies of the
    landmarks unchanged, higher is smoother (`DEFAULT_SMOOTH`; see the module docstring).
    `fps` is the clip's rate: the filter's cutoffs are in Hz."""
    faces = list(faces)
    if strength < 0:
        raise ValueError("strength must be 0 or more")
    out = {f.key: np.array(f.landmarks, np.float64) for f in faces}
    if strength == 0:
        return out
    for track in build_tracks(faces):
        lm = np.stack([out[f.key] for f in track.faces])
        smoothed = smooth_track(lm, np.array(track.frames), strength, fps)
        for f, pts in zip(track.faces, smoothed, strict=True):
            out[f.key] = pts
    return out
