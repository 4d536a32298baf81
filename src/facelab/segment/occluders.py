"""Synthetic occluders pasted on aligned faces, their coverage subtracted from the label.

No face-parsing data set is reachable here, so the segmenter learns what is not face from
drawn occluders: hands and fingers lying on the face (segment/hands.py), bare or sleeved
arms, hair locks and strands, glasses frames, phones, microphones and cups, in front of
real faces. Each kind is a small function registered by name (faceswap's plugin idea), so
a training recipe or an ablation switches kinds on and off by name:

    @register("cup")
    def cup(rng, scene) -> Layer: ...

A kind draws a `Layer`: a colour image and its coverage (alpha) at the crop's size, placed
from the face's 68 landmarks (`Scene`) so it lies over the face; most hands take the
face's own skin and light, half the bare arms its tone, so colour alone never tells face
from hand. `occlude` pastes layers with what makes them look real (anti-aliased polygons, a
slight edge blur, a soft cast shadow or a thin contact shadow on the face, shading gradients
and texture noise, brightness matched to the face's) and returns the image, the total
occluder alpha and the label × (1 − alpha).
Everything comes from the `numpy.random.Generator` it is given: one seed, one result.

Glasses: the frames (and the temples) are occluders; clear lenses are not: the eyes behind
them are the face's, and a swap must replace them (DeepFaceLab's XSeg users label glasses
the same way). A clear lens is drawn as a faint tint and reflection (a `veil`) that changes
the image but not the label. Sunglasses (dark lenses, about one pair in four) are
occluders, lenses included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from facelab.segment.draw import (
    Rng,
    bezier,
    capsule,
    ellipse,
    fill,
    lines,
    rounded_rect,
    soften,
    surface,
)

#: Skin tones, light to dark (BGR): a tone is drawn between two neighbours.
SKIN = np.array([[196, 224, 255], [150, 190, 238], [125, 172, 226], [105, 150, 205],
                 [66, 110, 170], [45, 80, 130], [32, 52, 88]], np.float32)
HAIR = np.array([[20, 20, 25], [25, 40, 70], [40, 70, 120], [90, 150, 200], [150, 160, 170],
                 [30, 60, 150]], np.float32)  # black, dark/mid brown, blond, grey, red
CLOTH = np.array([[40, 40, 40], [200, 200, 200], [120, 60, 30], [40, 40, 140],
                  [60, 120, 60], [150, 110, 90], [30, 30, 90]], np.float32)
PLASTIC = np.array([[25, 25, 25], [235, 235, 235], [170, 170, 175], [60, 60, 160],
                    [150, 90, 40], [80, 160, 200]], np.float32)


@dataclass
class Layer:
    """One occluder: `colour` H×W×3 float32 (0–255, BGR), `alpha` H×W float32 in [0, 1];
    `veil` (colour, alpha): a see-through film (a lens) that is not an occluder."""

    colour: np.ndarray
    alpha: np.ndarray
    veil: tuple[np.ndarray, np.ndarray] | None = None
    contact: float = 0.0  # a thin shadow along the edge: a body lying on the face
    lit: bool = False  # colour already in the scene's light (taken from the face)


@dataclass
class Occlusion:
    """A face with occluders: `image` uint8, `occluder` its total alpha, `label` the face
    label with the occluders removed (float32 in [0, 1]), `kinds` what was pasted."""

    image: np.ndarray
    occluder: np.ndarray
    label: np.ndarray
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class Scene:
    """What a kind draws against: the crop's side, the face's 68 points in it, the face's
    own skin tone (BGR) and, when known, the image (float32) and face label, so a hand can
    match the face it covers in tone and light (the hard case, segment/hands.py)."""

    size: int
    lm: np.ndarray
    skin: np.ndarray
    image: np.ndarray | None = None
    face: np.ndarray | None = None


Occluder = Callable[[Rng, Scene], Layer]
OCCLUDERS: dict[str, Occluder] = {}


def register(name: str) -> Callable[[Occluder], Occluder]:
    """Register an occluder kind under `name` (one small function per kind)."""
    def add(fn: Occluder) -> Occluder:
        OCCLUDERS[name] = fn
        return fn
    return add


def _tone(rng: Rng, palette: np.ndarray, jitter: float = 12.0) -> np.ndarray:
    i = rng.integers(0, len(palette) - 1)
    t = rng.random()
    return (palette[i] * (1 - t) + palette[i + 1] * t + rng.normal(0, jitter, 3)).clip(0, 255)


def _pick(rng: Rng, palette: np.ndarray, jitter: float = 10.0) -> np.ndarray:
    return (palette[rng.integers(len(palette))] + rng.normal(0, jitter, 3)).clip(0, 255)


def _skin(rng: Rng, scene: Scene) -> np.ndarray:
    """Half the time the face's own tone (one's own hand), else any tone of the palette."""
    if rng.random() < 0.5:
        return (scene.skin * rng.uniform(0.85, 1.15) + rng.normal(0, 6, 3)).clip(0, 255)
    return _tone(rng, SKIN)


def rounded(alpha: np.ndarray, size: int, depth: float = 0.3) -> np.ndarray:
    """Shading of a rounded body (a finger, an arm): darker toward its silhouette."""
    inner = cv2.GaussianBlur(alpha, (0, 0), 0.03 * size)
    return (1 - depth + depth * np.clip(2 * inner, 0, 1))[..., None]


def _geometry(lm: np.ndarray) -> tuple[float, float]:
    """The face's scale (outer eye corners' distance) and roll angle."""
    d = lm[45] - lm[36]
    return float(np.hypot(*d)), float(np.arctan2(d[1], d[0]))


def _unit(a: float) -> np.ndarray:
    return np.array([np.cos(a), np.sin(a)])


# --- kinds ------------------------------------------------------------------------------

@register("arm")
def arm(rng: Rng, scene: Scene) -> Layer:
    """A forearm, bare or sleeved, across the lower face or reaching up to the mouth."""
    size, lm = scene.size, scene.lm
    s, roll = _geometry(lm)
    target = lm[rng.choice([8, 57, 33, 5, 11])] + rng.normal(0, 0.1 * s, 2)
    a = roll + rng.choice([0.0, np.pi]) + rng.uniform(-0.7, 0.7)
    p0, p1 = target - _unit(a) * size * 1.5, target + _unit(a) * s * rng.uniform(0, 0.5)
    w = s * rng.uniform(0.28, 0.4)
    alpha = soften(fill(size, [capsule(p0, p1, w * 1.2, w)]), rng)
    bare = rng.random() < 0.6
    colour = surface(rng, size, _skin(rng, scene) if bare else _pick(rng, CLOTH, 25),
                     grain=3.0 if bare else 7.0)
    return Layer(colour * rounded(alpha, size, rng.uniform(0.1, 0.4)), alpha)


@register("hair")
def hair(rng: Rng, scene: Scene) -> Layer:
    """Locks and loose strands falling from above the brow over the forehead, an eye or
    a cheek."""
    size, lm = scene.size, scene.lm
    s, roll = _geometry(lm)
    down = _unit(roll + np.pi / 2)
    side = _unit(roll)
    top = lm[17:27].mean(0) - down * s * 0.6
    x0 = rng.uniform(-0.7, 0.7) * s
    sway = rng.uniform(-0.6, 0.6) * s
    length = s * rng.uniform(0.5, 1.5)
    base = top + side * x0
    spine = bezier(np.array([base - down * s, base + down * length * 0.3,
                             base + down * length * 0.7 + side * sway,
                             base + down * length + side * sway * 1.2]))
    polys = []
    if rng.random() < 0.8:  # a lock: a band tapering to its end
        width = s * rng.uniform(0.06, 0.22)
        t = np.linspace(1, 0.15, len(spine))[:, None]
        normal = np.gradient(spine, axis=0)[:, ::-1] * [1, -1]
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
        polys.append(np.vstack([spine + normal * width * t, (spine - normal * width * t)[::-1]]))
    alpha = fill(size, polys) if polys else np.zeros((size, size), np.float32)
    strands = []
    for _ in range(int(rng.integers(3, 25))):
        ends = (0.35, 0.7, rng.uniform(0.8, 1.3))
        ctrl = [base + side * rng.normal(0, 0.15 * s) - down * s]
        ctrl += [base + down * length * f + side * (sway * f + rng.normal(0, 0.12 * s))
                 for f in ends]
        strands.append(bezier(np.array(ctrl)))
    alpha = np.maximum(alpha, lines(size, strands, size / 128) * rng.uniform(0.6, 1.0))
    colour = surface(rng, size, _tone(rng, HAIR, 8), grain=10.0)
    sheen = lines(size, strands, size / 128)  # light catching single strands
    colour += (rng.uniform(0, 40) * sheen)[..., None]
    return Layer(colour, soften(alpha, rng, 0.3, 0.6))


@register("glasses")
def glasses(rng: Rng, scene: Scene) -> Layer:
    """Frames round each eye with a bridge and temples (occluders); clear lenses as a veil
    (not occluders), or dark sunglass lenses (occluders)."""
    size, lm = scene.size, scene.lm
    s, roll = _geometry(lm)
    eyes = [lm[36:42].mean(0), lm[42:48].mean(0)]
    w, h = s * rng.uniform(0.19, 0.25), s * rng.uniform(0.13, 0.19)
    drop = _unit(roll + np.pi / 2) * h * rng.uniform(0.0, 0.35)
    round_ = rng.random() < 0.35
    lenses = [ellipse(e + drop, (w, h), roll) if round_ else
              rounded_rect(e + drop, 2 * w, 2 * h, h * rng.uniform(0.3, 0.9), roll)
              for e in eyes]
    thick = max(1.0, size / 128 * rng.uniform(1.0, 3.5))
    bridge = np.array([lenses[0][np.argmax(lenses[0] @ _unit(roll))],
                       lenses[1][np.argmin(lenses[1] @ _unit(roll))]])
    bridge = bezier(np.array([bridge[0], bridge[0] - drop * 0.8, bridge[1] - drop * 0.8,
                              bridge[1]]), 8)
    temples = [np.array([lenses[0][np.argmin(lenses[0] @ _unit(roll))], lm[0] + drop]),
               np.array([lenses[1][np.argmax(lenses[1] @ _unit(roll))], lm[16] + drop])]
    alpha = lines(size, [np.vstack([p, p[:1]]) for p in lenses] + [bridge] + temples, thick)
    colour = surface(rng, size, _pick(rng, PLASTIC, 15), grain=3.0)
    lens = fill(size, lenses)
    if rng.random() < 0.25:  # sunglasses: the lenses hide the eyes
        colour = colour * (1 - lens[..., None]) + lens[..., None] * surface(
            rng, size, rng.uniform(10, 60, 3).astype(np.float32), grain=2.0)
        return Layer(colour, soften(np.maximum(alpha, lens), rng, 0.3, 0.6))
    tint = surface(rng, size, rng.uniform(150, 255, 3).astype(np.float32), grain=1.0)
    return Layer(colour, soften(alpha, rng, 0.3, 0.6), (tint, lens * rng.uniform(0.03, 0.2)))


@register("phone")
def phone(rng: Rng, scene: Scene) -> Layer:
    """A phone held to the ear and cheek, or in front of the lower face."""
    size, lm = scene.size, scene.lm
    s, roll = _geometry(lm)
    at_ear = rng.random() < 0.6
    at = (lm[rng.choice([1, 2, 15, 14])] if at_ear else lm[rng.choice([57, 8, 33])]) \
        + rng.normal(0, 0.1 * s, 2)
    a = roll + np.pi / 2 + rng.uniform(-0.9, 0.9)
    length, width = s * rng.uniform(1.3, 1.8), s * rng.uniform(0.65, 0.85)
    body = rounded_rect(at, length, width, width * rng.uniform(0.08, 0.2), a)
    alpha = soften(fill(size, [body]), rng)
    colour = surface(rng, size, _pick(rng, PLASTIC, 10), grain=2.0)
    if rng.random() < 0.5:  # the screen side: dark glass with a reflection
        screen = fill(size, [rounded_rect(at, length * 0.9, width * 0.88, width * 0.05, a)])
        colour = colour * (1 - screen[..., None]) + screen[..., None] * surface(
            rng, size, rng.uniform(5, 40, 3).astype(np.float32), grain=1.0)
    rim = lines(size, [np.vstack([body, body[:1]])], size / 128)
    colour += (rng.uniform(20, 70) * rim)[..., None]
    return Layer(colour, alpha)


@register("microphone")
def microphone(rng: Rng, scene: Scene) -> Layer:
    """A handheld microphone: a grille ball before the mouth or chin and a handle leaving
    the crop downward."""
    size, lm = scene.size, scene.lm
    s, roll = _geometry(lm)
    head_at = lm[rng.choice([57, 62, 8, 48, 54])] + rng.normal(0, 0.15 * s, 2)
    r = s * rng.uniform(0.17, 0.3)
    a = roll + np.pi / 2 + rng.uniform(-0.8, 0.8)  # the handle points down, give or take
    ball = ellipse(head_at, (r, r * rng.uniform(0.9, 1.15)), a)
    handle = capsule(head_at + _unit(a) * r * 0.8, head_at + _unit(a) * s * 2.5,
                     r * rng.uniform(0.45, 0.6), r * rng.uniform(0.35, 0.5))
    grille = fill(size, [ball])
    alpha = soften(fill(size, [handle], grille), rng)
    colour = surface(rng, size, _pick(rng, PLASTIC[:3], 10), grain=3.0)
    pitch = max(2, int(r / rng.uniform(2.5, 5)))
    mesh = np.zeros((size, size), np.float32)
    mesh[::pitch, :] = mesh[:, ::pitch] = 1
    mesh = cv2.GaussianBlur(mesh, (0, 0), 0.5) * grille
    metal = surface(rng, size, rng.uniform(60, 190, 1).repeat(3).astype(np.float32), 4.0)
    colour = colour * (1 - grille[..., None]) + grille[..., None] * metal
    colour *= (1 - 0.5 * mesh)[..., None]
    return Layer(colour, alpha)


@register("cup")
def cup(rng: Rng, scene: Scene) -> Layer:
    """A cup or mug raised to the mouth: a tapered body, its rim, maybe a handle."""
    size, lm = scene.size, scene.lm
    s, roll = _geometry(lm)
    at = lm[rng.choice([57, 8, 62])] + rng.normal(0, 0.12 * s, 2)
    tilt = roll + rng.uniform(-0.5, 0.5)
    up, side = _unit(tilt - np.pi / 2), _unit(tilt)
    w, h = s * rng.uniform(0.35, 0.5), s * rng.uniform(0.9, 1.4)
    top, bottom = at + up * h * 0.25, at - up * h * 0.75
    taper = rng.uniform(0.75, 1.0)
    body = np.array([top - side * w, top + side * w, bottom + side * w * taper,
                     bottom - side * w * taper])
    rim = ellipse(top, (w, w * 0.25), tilt)
    base = ellipse(bottom, (w * taper, w * taper * 0.25), tilt, 20, (0, np.pi))
    alpha = fill(size, [body, rim, base])
    if rng.random() < 0.6:
        hx = side * w * (1 if rng.random() < 0.5 else -1)
        ring = ellipse(at - up * h * 0.25 + hx * 1.25, (w * 0.35, h * 0.25), tilt)
        alpha = np.maximum(alpha, lines(size, [np.vstack([ring, ring[:1]])], w * 0.15))
    colour = surface(rng, size, _pick(rng, PLASTIC, 20), grain=2.0)
    inner = fill(size, [ellipse(top, (w * 0.9, w * 0.2), tilt)])
    colour *= (1 - 0.45 * inner)[..., None]
    return Layer(colour, soften(alpha, rng))


# --- pasting ----------------------------------------------------------------------------

def paste(image: np.ndarray, layer: Layer, rng: Rng, shadow: bool = True) -> np.ndarray:
    """`layer` over `image` (float32 BGR): a soft cast shadow on what lies behind, the
    occluder's brightness pulled toward the scene's, its colour blended by alpha, then any
    veil."""
    out = image
    size = image.shape[0]
    if shadow and rng.random() < 0.7:
        shift = rng.normal(0, 0.04 * size, 2)
        mat = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        cast = cv2.warpAffine(layer.alpha, mat, (size, size))
        cast = cv2.GaussianBlur(cast, (0, 0), rng.uniform(0.02, 0.06) * size)
        out = out * (1 - rng.uniform(0.15, 0.5) * cast)[..., None]
    if layer.contact:
        halo = cv2.GaussianBlur(layer.alpha, (0, 0), 0.012 * size)
        out = out * (1 - layer.contact * halo)[..., None]
    scene = float(image.mean()) / 128
    colour = layer.colour if layer.lit else layer.colour * (0.55 + 0.45 * min(scene, 1.5))
    a = layer.alpha[..., None]
    out = out * (1 - a) + colour * a
    if layer.veil is not None:
        tint, va = layer.veil
        out = out * (1 - va[..., None]) + tint * va[..., None]
    return out


def occlude(image: np.ndarray, label: np.ndarray, landmarks: np.ndarray, rng: Rng,
            kinds: Sequence[str] | None = None, count: int = 1) -> Occlusion:
    """`count` occluders of the given kinds (default: all registered), drawn at random,
    pasted on a square BGR uint8 face whose 68 landmarks are in its pixels."""
    names = sorted(OCCLUDERS) if kinds is None else list(kinds)
    unknown = [k for k in names if k not in OCCLUDERS]
    if unknown or not names:
        raise ValueError(f"unknown occluder kinds {unknown}; known: {sorted(OCCLUDERS)}")
    size = image.shape[0]
    lm = np.asarray(landmarks, np.float64)
    out = image.astype(np.float32)
    clear = np.ones((size, size), np.float32)  # where nothing covers the face
    inside = np.asarray(label) > 0.5
    skin = np.median(image[inside], axis=0) if inside.any() else np.median(image, axis=(0, 1))
    scene = Scene(size, lm, np.asarray(skin, np.float32), out, np.asarray(label, np.float32))
    chosen = tuple(names[int(rng.integers(len(names)))] for _ in range(count))
    for name in chosen:
        layer = OCCLUDERS[name](rng, scene)
        out = paste(out, layer, rng)
        clear *= 1 - layer.alpha
    occluder = 1 - clear
    return Occlusion(out.round().clip(0, 255).astype(np.uint8), occluder,
                     (np.asarray(label, np.float32) * clear).astype(np.float32), chosen)


from facelab.segment import hands  # noqa: E402, F401  (registers "hand" and "fingers")
