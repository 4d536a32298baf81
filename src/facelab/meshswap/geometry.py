"""The target shape of a swapped face: src's own face carrying dst's pose and expression.

Warping a src face onto dst's mesh as it is would give src's skin dst's face shape (jaw,
nose, eye spacing: much of what makes a face recognisable). So the target is built from
each person's *neutral* mesh (mouth closed, eyes open, pose removed):

    target = P_dst( S(src_neutral) + [P_dst⁻¹(dst_mesh) − dst_neutral] )

where P_dst is the 3-D similarity (rotation, scale, shift) that puts dst's neutral mesh on
this dst face, fitted on `RIGID_POINTS` only, and S the similarity that brings src's neutral
onto dst's (same size and frame). The bracket is dst's expression alone, in dst's neutral
frame; src's identity shape takes it, then P_dst puts the result in dst's pose and place in
the crop. Similarities keep every shape ratio, so src's proportions survive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelab.meshswap.descriptors import FEATURES, describe

#: Points that barely move with speech and blinks: the 63 of 478 with the smallest spread
#: after Procrustes alignment over two GRID clips (75 frames each, blinks and speech),
#: lid contours excluded. They sit on the nose, the nose bridge and the upper cheeks.
RIGID_POINTS = (
    3, 6, 8, 36, 47, 56, 100, 101, 114, 120, 121, 122, 126, 128, 142, 168, 174, 188, 189,
    190, 193, 196, 197, 198, 203, 209, 217, 221, 222, 231, 232, 233, 236, 244, 245, 253, 254,
    266, 277, 286, 329, 339, 343, 348, 349, 350, 351, 355, 357, 371, 399, 412, 419, 420, 429,
    437, 441, 442, 449, 450, 451, 456, 465)

#: A face counts as neutral when its mouth ratio is at most this and both eyes are open to
#: at least this fraction of the faceset's median.
NEUTRAL_MOUTH = 0.05
NEUTRAL_EYES = 0.85
#: Fewer neutral faces than this: take the least expressive quarter instead.
MIN_NEUTRAL = 3

_MOUTH, _EYES = FEATURES.index("mouth"), [FEATURES.index("eye_left"), FEATURES.index("eye_right")]


@dataclass(frozen=True)
class Similarity:
    """x ↦ scale·R·x + shift, for one mesh or a stack (leading dimensions broadcast)."""

    scale: np.ndarray  # …
    rot: np.ndarray  # …×3×3
    shift: np.ndarray  # …×3

    def apply(self, points: np.ndarray) -> np.ndarray:
        m = self.scale[..., None, None] * self.rot
        return points @ np.swapaxes(m, -1, -2) + self.shift[..., None, :]

    def invert(self, points: np.ndarray) -> np.ndarray:
        return (points - self.shift[..., None, :]) @ self.rot / self.scale[..., None, None]


def similarity(src: np.ndarray, dst: np.ndarray,
               points: tuple[int, ...] | None = RIGID_POINTS) -> Similarity:
    """The least-squares 3-D similarity taking src's `points` onto dst's (Umeyama 1991, no
    reflection); src and dst are …×N×3 and broadcast against each other."""
    s = np.asarray(src, np.float64)
    d = np.asarray(dst, np.float64)
    if points is not None:
        s, d = s[..., points, :], d[..., points, :]
    s, d = np.broadcast_arrays(s, d)
    mu_s, mu_d = s.mean(-2), d.mean(-2)
    s0, d0 = s - mu_s[..., None, :], d - mu_d[..., None, :]
    u, sig, vt = np.linalg.svd(np.swapaxes(d0, -1, -2) @ s0)
    sign = np.sign(np.linalg.det(u @ vt))
    fix = np.ones(sig.shape)
    fix[..., 2] = np.where(sign == 0, 1.0, sign)
    rot = (u * fix[..., None, :]) @ vt
    var = (s0**2).sum((-1, -2))
    scale = (sig * fix).sum(-1) / np.maximum(var, 1e-12)
    shift = mu_d - np.einsum("...ij,...j->...i", scale[..., None, None] * rot, mu_s)
    return Similarity(scale, rot, shift)


def normalise(meshes: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Meshes (K×N×3) with pose, place and size removed: each fitted on the rigid points to
    their common median (generalised Procrustes), which is centred on its rigid points'
    centroid with unit RMS radius there."""
    m = np.asarray(meshes, np.float64)
    ref = m.mean(0)
    for _ in range(iterations):
        aligned = similarity(m, ref).apply(m)
        ref = np.median(aligned, 0)
        rigid = ref[list(RIGID_POINTS)]
        centre = rigid.mean(0)
        ref = (ref - centre) / np.sqrt(((rigid - centre) ** 2).sum(-1).mean())
    return similarity(m, ref).apply(m)


def neutral_mask(descriptors: np.ndarray) -> np.ndarray:
    """Which faces (K×F descriptors) are neutral: mouth closed, both eyes open."""
    d = np.asarray(descriptors)
    eyes = d[:, _EYES].min(1)
    ok = (d[:, _MOUTH] <= NEUTRAL_MOUTH) & (eyes >= NEUTRAL_EYES * np.median(eyes))
    if ok.sum() >= MIN_NEUTRAL:
        return ok
    # No face with a closed mouth (a speaker throughout): the least expressive quarter.
    score = d[:, _MOUTH] + np.maximum(np.median(eyes) - eyes, 0)
    return score <= np.quantile(score, 0.25)


def neutral_mesh(meshes: np.ndarray, descriptors: np.ndarray | None = None) -> np.ndarray:
    """A person's neutral face shape (N×3, the normalised frame of `normalise`): the median of
    their neutral faces with pose removed, so that a blink or a word in a few frames does not
    leak into the shape every target is built on."""
    m = np.asarray(meshes, np.float64)
    if m.ndim != 3 or not len(m):
        raise ValueError(f"meshes must be K×N×3 with K ≥ 1, not {m.shape}")
    d = describe(m, 0.0, 0.0) if descriptors is None else descriptors
    return np.median(normalise(m[neutral_mask(d)]), 0)


def target_mesh(src_neutral: np.ndarray, dst_mesh: np.ndarray,
                dst_neutral: np.ndarray) -> np.ndarray:
    """Where src's face should be in dst's crop: src's neutral shape with dst's expression
    (its mesh's departure from dst's neutral), in dst's pose, place and size. dst_mesh is
    N×3 or K×N×3 (aligned-face coordinates); the result has its shape."""
    dst = np.asarray(dst_mesh, np.float64)
    pose = similarity(dst_neutral, dst)  # dst's neutral frame → this dst face
    expression = pose.invert(dst) - dst_neutral
    src_in_dst = similarity(src_neutral, dst_neutral).apply(np.asarray(src_neutral, np.float64))
    return pose.apply(src_in_dst + expression)
