"""Synthetic hands as they lie on a face in footage: the segmenter's hardest occluder.

A real hand over a face is lit by the same light and is usually the same person's skin, so
its edge against the cheek shows little contrast; fingertips lie flat on the cheek, mouth or
chin with a thin contact shadow along their sides; the palm and wrist are often off the face
or out of the crop (a hand entering from the frame's edge). Two kinds (registered in
`occluders.OCCLUDERS`): `hand`, a whole hand (a palm over the mouth, a hand on a cheek or an
eye), and `fingers`, one to four fingers laid on the lower face from a hand beside it. Most
of the time both take their colour from the face under them (`face_skin`: the face's own
tone and light, smoothly extended past its edge), so neither colour nor shading tells hand
from face and the network has to learn the fingers' shape and their faint edges.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelab.segment.draw import (
    Rng,
    capsule,
    cylinders,
    ellipse,
    fill,
    lines,
    rounded_rect,
    soften,
    surface,
)
from facelab.segment.occluders import Layer, Scene, _geometry, _skin, _unit, register, rounded

OWN_SKIN_P = 0.7  # how often a hand takes the skin and light of the face it covers


def face_skin(rng: Rng, scene: Scene) -> np.ndarray:
    """The face's own skin and light as a size²×3 field: face pixels blurred and extended
    past the face's edge (normalised convolution), times a slight gain and a faint texture,
    so the hand is another surface of the same tone under the same light."""
    size = scene.size
    if scene.image is None or scene.face is None or not (scene.face > 0.5).any():
        return surface(rng, size, scene.skin, grain=3.0)
    m = (scene.face > 0.5).astype(np.float32)
    sigma = size * rng.uniform(0.07, 0.14)
    num = cv2.GaussianBlur(scene.image * m[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)[..., None]
    w = np.clip(den / 0.2, 0, 1)
    field = w * num / np.maximum(den, 1e-4) + (1 - w) * scene.skin
    gain = rng.uniform(0.9, 1.1) * rng.normal(1, 0.025, 3)
    texture = 1 + (surface(rng, size, np.ones(3, np.float32), 0.015) - 1) * rng.uniform(0.2, 0.6)
    return (field * gain * texture).astype(np.float32)


def _colour(rng: Rng, scene: Scene) -> tuple[np.ndarray, bool]:
    """A hand's colour field and whether it is already in the scene's light."""
    if rng.random() < OWN_SKIN_P:
        return face_skin(rng, scene), True
    return surface(rng, scene.size, _skin(rng, scene), grain=3.0), False


Body = tuple[np.ndarray, np.ndarray, float, float]  # a capsule: p0, p1, r0, r1


def _body(polys: list[np.ndarray], bodies: list[Body], p0: np.ndarray, p1: np.ndarray,
          r0: float, r1: float) -> np.ndarray:
    """A capsule added both as a polygon (coverage) and as a body (shading)."""
    polys.append(capsule(p0, p1, r0, r1))
    bodies.append((p0, p1, r0, r1))
    return polys[-1]


def _light(rng: Rng, lit: bool) -> tuple[np.ndarray, float]:
    """A light direction (unit 3-vector, mostly from the camera's side) and how strongly
    the fingers' roundness shows: milder for a hand already in the face's light."""
    phi, tilt = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.9)
    light = np.array([np.cos(phi) * np.sin(tilt), np.sin(phi) * np.sin(tilt), np.cos(tilt)])
    return light, rng.uniform(0.1, 0.35) if lit else rng.uniform(0.2, 0.5)


def _nails(rng: Rng, size: int, colour: np.ndarray,
           tips: list[tuple[np.ndarray, float, float]]) -> np.ndarray:
    """Nails at fingertips (tip, direction, radius): a paler, pinker, glossier patch."""
    nails = [ellipse(tip - _unit(a) * r * 0.65, (r * 0.6, r * 0.55), a) for tip, a, r in tips]
    nail = cv2.GaussianBlur(fill(size, nails), (0, 0), 0.5)[..., None]
    tint = colour * np.float32([1.0, 1.03, 1.12]) + rng.uniform(0, 25)
    return colour * (1 - 0.6 * nail) + 0.6 * nail * tint


def _hand_polys(rng: Rng, at: np.ndarray, s: float, a: float, forearm: bool
                ) -> tuple[list[np.ndarray], list[Body], list[tuple[np.ndarray, float, float]]]:
    """Palm, four fingers, thumb and a wrist (or forearm) pointing away from the fingers,
    `a` the fingers' direction; returns (polygons, the round bodies to shade, fingertips)."""
    up, side = _unit(a), _unit(a + np.pi / 2)
    pw, ph = s * rng.uniform(0.7, 0.95), s * rng.uniform(0.75, 1.0)
    polys: list[np.ndarray] = []
    bodies: list[Body] = []
    wrist_len = s * (3.0 if forearm else rng.uniform(0.5, 1.0))
    _body(polys, bodies, at, at - up * wrist_len, pw * 0.4, pw * (0.55 if forearm else 0.42))
    polys.append(rounded_rect(at, ph, pw, pw * 0.35, a))
    bodies.append((at - up * ph * 0.2, at + up * ph * 0.2, pw * 0.55, pw * 0.55))  # palm
    spread = rng.uniform(0.0, 0.12)
    curl = rng.uniform(0.4, 1.0)  # 1: straight fingers, less: curled (shorter)
    tips = []
    for k, (off, length) in enumerate(((-0.37, 0.85), (-0.12, 1.0), (0.13, 0.95),
                                       (0.36, 0.75))):
        base = at + up * ph * 0.42 + side * pw * off
        fa = a + (k - 1.5) * spread
        tip = base + _unit(fa) * s * length * rng.uniform(0.55, 0.75) * curl
        r = pw * rng.uniform(0.10, 0.13)
        _body(polys, bodies, base, tip, r, r * 0.85)
        tips.append((tip, fa, r * 0.85))
    thumb_base = at + side * pw * 0.45 * rng.choice([-1, 1]) - up * ph * 0.1
    ta = a + np.sign((thumb_base - at) @ side) * rng.uniform(0.5, 1.1)
    _body(polys, bodies, thumb_base, thumb_base + _unit(ta) * s * 0.6, pw * 0.15, pw * 0.11)
    return polys, bodies, tips


@register("hand")
def hand(rng: Rng, scene: Scene) -> Layer:
    """A hand over the mouth (palm on it), chin, cheek, nose or an eye, fingers up or
    sideways; a third of them enter from outside the face, fingers pointing in."""
    size, lm = scene.size, scene.lm
    s, roll = _geometry(lm)
    at = lm[rng.choice([57, 62, 8, 3, 13, 30, 33, 38, 44])] + rng.normal(0, 0.12 * s, 2)
    a = roll - np.pi / 2 + rng.uniform(-1.7, 1.7)  # fingers up or sideways
    if rng.random() < 0.33:  # from the frame's edge: the palm off the face, fingers in
        out = at - lm[27:36].mean(0)
        a = float(np.arctan2(out[1], out[0])) + rng.uniform(-0.6, 0.6)
        at = at + _unit(a) * s * rng.uniform(0.15, 0.5)
        a += np.pi
    polys, bodies, tips = _hand_polys(rng, at, s, a, forearm=rng.random() < 0.5)
    alpha = soften(fill(size, polys), rng, 0.3, 1.1)
    colour, lit = _colour(rng, scene)
    light, strength = _light(rng, lit)
    colour = colour * cylinders(size, bodies, light, strength)[..., None]
    if rng.random() < 0.5:  # the back of the hand faces the camera: nails
        colour = _nails(rng, size, colour, tips)
    depth = rng.uniform(0.03, 0.2) if lit else rng.uniform(0.1, 0.4)
    return Layer(colour * rounded(alpha, size, depth), alpha,
                 contact=rng.uniform(0.1, 0.4), lit=lit)


@register("fingers")
def fingers(rng: Rng, scene: Scene) -> Layer:
    """One to four fingers lying flat on a cheek, the mouth, chin or jaw, tips well inside
    the face, their hand beside it (often out of the crop): same tone, a thin contact
    shadow, soft low edges, each finger its own round body."""
    size, lm = scene.size, scene.lm
    s, _ = _geometry(lm)
    centre = lm[27:36].mean(0)
    rim = lm[rng.choice([2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 48, 54, 57])]
    tip_at = rim + (centre - rim) * rng.uniform(0.1, 0.6) + rng.normal(0, 0.08 * s, 2)
    out = tip_at - centre
    a = float(np.arctan2(out[1], out[0])) + rng.uniform(-0.8, 0.8) + np.pi  # pointing in
    side = _unit(a + np.pi / 2)
    n = int(rng.integers(1, 5))
    r = s * rng.uniform(0.075, 0.11)
    spread, bend = rng.uniform(-0.1, 0.1), rng.uniform(-0.35, 0.35)
    palm_w = max(n, 3) * 2 * r + s * 0.1
    back = tip_at - _unit(a) * s * 1.05
    polys: list[np.ndarray] = []
    bodies: list[Body] = []
    _body(polys, bodies, back, back - _unit(a) * s * rng.uniform(0.8, 2.5), palm_w * 0.4,
          palm_w * 0.45)
    polys.append(rounded_rect(back, s * rng.uniform(0.6, 0.9), palm_w, r * 1.5, a))
    bodies.append((back - _unit(a) * s * 0.2, back + _unit(a) * s * 0.2, palm_w * 0.55,
                   palm_w * 0.55))
    tips, knuckles = [], []
    for k in range(n):
        off = (k - (n - 1) / 2) * 2 * r * rng.uniform(1.0, 1.15)
        length = s * rng.uniform(0.7, 1.15)
        fa = a + spread * (k - (n - 1) / 2)
        base = tip_at + side * off - _unit(fa) * length
        knuckle = base + _unit(fa) * length * 0.55  # the outer phalanx bent by `bend`
        tip = knuckle + _unit(fa + bend) * length * 0.45
        _body(polys, bodies, base, knuckle, r, r * 0.95)
        _body(polys, bodies, knuckle, tip, r * 0.95, r * 0.82)
        knuckles.append(np.array([knuckle - side * r * 0.8, knuckle + side * r * 0.8]))
        tips.append((tip, fa + bend, r * 0.82))
    if rng.random() < 0.5:  # the thumb, along the jaw or curled under
        t0 = back + side * palm_w * 0.45 * rng.choice([-1, 1])
        _body(polys, bodies, t0, t0 + _unit(a + rng.uniform(-0.6, 0.6)) * s * 0.55,
              r * 1.3, r * 1.05)
    alpha = soften(fill(size, polys), rng, 0.4, 1.2)
    colour, lit = _colour(rng, scene)
    light, strength = _light(rng, lit)
    colour = colour * cylinders(size, bodies, light, strength)[..., None]
    crease = cv2.GaussianBlur(lines(size, knuckles, 1.0), (0, 0), 0.7)
    colour = colour * (1 - rng.uniform(0.05, 0.25) * crease)[..., None]
    if rng.random() < 0.5:  # the back of the hand faces the camera: nails
        colour = _nails(rng, size, colour, tips)
    depth = rng.uniform(0.02, 0.15) if lit else rng.uniform(0.1, 0.3)
    return Layer(colour * rounded(alpha, size, depth), alpha,
                 contact=rng.uniform(0.15, 0.5), lit=lit)
