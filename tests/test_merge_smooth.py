"""Landmark smoothing for the merger: tracks, identity at 0, noise removed, motion followed,
real GRID jitter reduced with the mouth intact."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.faces.facetype import MEAN_FACE_68, face_transform
from facelab.merge.jobs import dst_face_refs
from facelab.merge.smooth import (
    DEFAULT_SMOOTH,
    FaceRef,
    build_tracks,
    decompose,
    smooth_landmarks,
)
from facelab.workspace import Workspace


def face(frame: int, cx: float, cy: float, size: float = 100.0, angle: float = 0.0,
         index: int = 0, noise: np.ndarray | None = None) -> FaceRef:
    """The mean face at a given centre, size (px) and angle (radians)."""
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lm = (MEAN_FACE_68 - 0.5) @ rot.T * size + [cx, cy]
    if noise is not None:
        lm = lm + noise
    return FaceRef(frame, index, lm, (cx - size / 2, cy - size / 2, cx + size / 2,
                                      cy + size / 2))


def path(n: int, rng: np.random.Generator, sigma: float) -> tuple[list[FaceRef], np.ndarray]:
    """A head drifting and turning smoothly (truth) and its noisy landmarks."""
    t = np.arange(n) / 25
    cx, cy = 200 + 40 * np.sin(1.3 * t), 150 + 15 * np.cos(0.9 * t)
    ang = 0.1 * np.sin(0.7 * t)
    truth = np.stack([face(i, cx[i], cy[i], angle=ang[i]).landmarks for i in range(n)])
    # detector noise: a shared shift of the whole face plus each point's own
    shift = rng.normal(0, sigma, (n, 1, 2))
    faces = [face(i, cx[i], cy[i], angle=ang[i], noise=shift[i] + rng.normal(0, sigma, (68, 2)))
             for i in range(n)]
    return faces, truth


def stack(out: dict, faces: list[FaceRef]) -> np.ndarray:
    return np.stack([out[f.key] for f in faces])


def test_strength_zero_is_the_identity():
    faces, _ = path(30, np.random.default_rng(1), 1.0)
    out = smooth_landmarks(faces, 0)
    assert set(out) == {f.key for f in faces}
    for f in faces:
        assert np.array_equal(out[f.key], f.landmarks)
        assert out[f.key] is not f.landmarks  # a copy: the caller may change it


@pytest.mark.slow
def test_noisy_smooth_path_comes_closer_to_the_truth():
    faces, truth = path(120, np.random.default_rng(2), 1.0)
    noisy = np.stack([f.landmarks for f in faces])
    err_raw = np.linalg.norm(noisy - truth, axis=-1).mean()
    for k in (1, DEFAULT_SMOOTH, 10):
        err = np.linalg.norm(stack(smooth_landmarks(faces, k), faces) - truth, axis=-1).mean()
        assert err < 0.75 * err_raw, (k, err, err_raw)
    # the placement the merger uses (face_transform) is steadier than the raw one
    sm = stack(smooth_landmarks(faces, DEFAULT_SMOOTH), faces)

    def placement_error(lms: np.ndarray) -> float:
        return float(np.mean([np.abs(face_transform(a, "full", 256) - face_transform(b, "full",
                                                                                    256)).max()
                              for a, b in zip(lms, truth, strict=True)]))

    assert placement_error(sm) < 0.7 * placement_error(noisy)


def test_a_fast_move_is_followed_within_a_few_frames():
    rng = np.random.default_rng(3)
    xs = np.where(np.arange(60) < 30, 200.0, 300.0)  # a jump of one face size at frame 30
    faces = [face(i, xs[i], 150, noise=rng.normal(0, 0.3, (68, 2))) for i in range(60)]
    centre = decompose(stack(smooth_landmarks(faces, DEFAULT_SMOOTH), faces))[0].real
    truth = decompose(np.stack([face(i, xs[i], 150).landmarks for i in range(60)]))[0].real
    err = np.abs(centre - truth)
    assert err[:27].max() < 2 and err[33:].max() < 2, err.round(1)  # 2 % of the face size
    assert err[26:34].max() < 50


def test_two_faces_in_the_same_frames_stay_apart():
    faces = []
    for i in range(40):
        left, right = face(i, 100 + i, 150), face(i, 400 - i, 160, size=90)
        # the detector's order (face index) swaps from frame to frame
        order = (left, right) if i % 3 else (right, left)
        faces += [FaceRef(i, j, f.landmarks, f.rect) for j, f in enumerate(order)]
    tracks = build_tracks(faces)
    assert len(tracks) == 2
    for t in tracks:
        assert t.frames == list(range(40))
        xs = [f.rect[0] for f in t.faces]
        assert np.all(np.abs(np.diff(xs)) < 2)  # each track keeps one person
    out = smooth_landmarks(faces, DEFAULT_SMOOTH)
    for f in faces:
        assert np.abs(out[f.key] - f.landmarks).max() < 1.0


def test_a_short_gap_is_bridged_and_a_long_one_breaks_the_track():
    short = [face(i, 200 + i, 150) for i in range(30) if i not in (10, 11, 12)]
    assert [len(t) for t in build_tracks(short)] == [27]
    long = [face(i, 200 + i, 150) for i in range(30) if not 10 <= i < 15]
    assert [len(t) for t in build_tracks(long)] == [10, 15]
    far = [face(i, 200 if i < 10 else 500, 150) for i in range(20)]  # someone else
    assert [len(t) for t in build_tracks(far)] == [10, 10]


def test_real_grid_jitter_falls_and_the_mouth_still_moves(aligned_faces):
    # dst keeps every frame (video extract ignores --fps for dst): GRID A's 75 frames
    refs = dst_face_refs(Workspace(aligned_faces))  # as the merger numbers and smooths them
    tracks = build_tracks(refs)
    assert len(refs) >= 70 and len(tracks) == 1 and len(tracks[0]) == len(refs)
    raw = np.stack([f.landmarks for f in tracks[0].faces])
    sm = stack(smooth_landmarks(refs, DEFAULT_SMOOTH), tracks[0].faces)

    def jitter(lm: np.ndarray) -> float:
        centre, a, _ = decompose(lm)
        return float(np.abs(np.diff(centre, 2)).mean() / np.median(np.abs(a)))

    def mouth(lm: np.ndarray) -> np.ndarray:
        return np.linalg.norm(lm[:, 66] - lm[:, 62], axis=-1)

    assert jitter(sm) < jitter(raw) / 3, (jitter(raw), jitter(sm))
    assert np.corrcoef(mouth(raw), mouth(sm))[0, 1] > 0.9
    size = np.median(np.abs(decompose(raw)[1]))
    assert np.linalg.norm(sm - raw, axis=-1).mean() < 0.02 * size  # no drift


@pytest.mark.parametrize("strength", [-1])
def test_negative_strength_is_refused(strength):
    with pytest.raises(ValueError):
        smooth_landmarks([], strength)
