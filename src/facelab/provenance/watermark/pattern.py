"""The keyed pattern: a TILE×TILE tile of ±1 cells, repeated over the frame, each cell
CELLS_PER_HEIGHT-th of the frame's height, so that resizing keeps it in place relative to
the picture and a crop only shifts it (a cyclic shift of the tile, which detection searches).

There are two such patterns, A and B, from the same key: orthogonal (independent chips and
layouts), carrying the same payload. Where the picture is textured a frame carries
A·A_WEIGHT + s·B·B_WEIGHT, where it is flat A alone (embed.py); the sign s of a video's
frame alternates in runs (`frame_sign`); a still has s = +1.

Cells are either pilot cells (a fixed keyed ±1 chip: what detection synchronises on and
scores) or data cells (a keyed chip times one coded payload bit). Which is which, the chips,
and the bit each data cell carries all come from the key.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from facelab.provenance.watermark import code

TILE = 32  # cells per tile side
PILOT_CELLS = TILE * TILE - 2 * code.CODED_BITS  # 640 pilot, 384 data (each coded bit twice)
CELLS_PER_HEIGHT = 45  # 8-px cells at 360p
SAMPLES = 2  # detection samples per cell (per axis)
DEFAULT_KEY = b"facelab-watermark-v1"  # public on purpose: anyone may verify


def key_bytes(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


@dataclass(frozen=True)
class Layout:
    chips: np.ndarray  # TILE×TILE float32 ±1
    pilot: np.ndarray  # TILE×TILE bool
    bit: np.ndarray  # TILE×TILE int: coded bit a data cell carries, −1 on pilot cells


PATTERNS = 2  # A and B


@lru_cache(maxsize=8)
def layout(key: bytes, which: int = 0) -> Layout:
    """Pattern A's (`which` 0) or B's (1) cells."""
    salt = b"facelab-wm-layout\0" + (b"" if which == 0 else b"B%d\0" % which)
    seed = int.from_bytes(hashlib.sha256(salt + key).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    order = rng.permutation(TILE * TILE)
    bit = np.full(TILE * TILE, -1, np.int64)
    bit[order[PILOT_CELLS:]] = np.arange(TILE * TILE - PILOT_CELLS) % code.CODED_BITS
    chips = rng.choice(np.array([-1.0, 1.0], np.float32), TILE * TILE)
    return Layout(chips.reshape(TILE, TILE), (bit < 0).reshape(TILE, TILE),
                  bit.reshape(TILE, TILE))


def tile_values(lay: Layout, payload: int) -> np.ndarray:
    """The TILE×TILE cell values (±1) carrying `payload`."""
    coded = code.encode(payload)
    return np.where(lay.pilot, 1.0, coded[np.maximum(lay.bit, 0)]).astype(np.float32) * lay.chips


def cell_size(height: int) -> float:
    return height / CELLS_PER_HEIGHT


def render(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """The tile `values` repeated over a height×width frame, cubic-interpolated between cell
    centres (a smooth pattern: no cell edges to see), RMS 1, float32."""
    c = cell_size(height)
    ny, nx = math.ceil(height / c) + 3, math.ceil(width / c) + 3
    grid = np.tile(values, (ny // TILE + 1, nx // TILE + 1))[:ny, :nx]
    off = 0.5 / c - 0.5  # pixel centre (y + 0.5) sits at cell coordinate (y + 0.5) / c − 0.5
    m = np.float32([[1 / c, 0, off], [0, 1 / c, off]])
    out = cv2.warpAffine(grid, m, (width, height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT)
    return out / np.float32(np.sqrt(np.mean(out * out)))


def tile_template(values: np.ndarray) -> np.ndarray:
    """What one tile of `values` looks like on the detection grid (SAMPLES per cell), as
    rendered at 8 px per cell and averaged down: the matched filter before high-pass."""
    fine = render_periodic(values, 8)
    n = TILE * SAMPLES
    return cv2.resize(fine, (n, n), interpolation=cv2.INTER_AREA)


def render_periodic(values: np.ndarray, px: int) -> np.ndarray:
    """One period of the pattern at `px` pixels per cell (exactly periodic: wraps at its edges)."""
    big = np.tile(values, (3, 3))
    n = TILE * px
    off = 0.5 / px - 0.5
    m = np.float32([[1 / px, 0, off + TILE], [0, 1 / px, off + TILE]])
    return cv2.warpAffine(big, m, (n, n), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)


A_WEIGHT = 0.8  # the constant part: what a single frame is found by …
B_WEIGHT = 0.6  # … and the part whose sign alternates: what a clip's temporal sum finds
FLIP_FRAMES = 25  # frames per sign run in a video: B's sign flips every 25 frames …
PERIOD = 2 * FLIP_FRAMES  # … so the sequence repeats every 50 (the offsets searched)
RAMP = 6  # … gradually, over the last 6 frames of a run: no one-frame jump to flicker


def frame_sign(index: int | None) -> float:
    """The sign of B on frame `index` of a video (+1 for a still: index None): +1 for 19
    frames, a ramp through 0 over 6, −1 for 19, a ramp back over 6.

    Why a sign at all: summed over a clip with these signs as weights, anything static
    (GRID's wall and still head, any fixed structure of a real video that happens to
    resemble the pattern, and A) cancels while B adds. Why not all of the mark: after a
    flip, an encoder at a low bitrate leaves static areas unrefreshed until its next key
    frame, still carrying the old sign; a single frame there holds a mix of both signs that
    cancels. The constant A (64 % of the energy) persists through that and keeps single
    frames readable (measured with the whole mark flipping, with A and B alternating, and
    with this split: docs/WATERMARK.md). Runs of 25 frames (1 s at 25 fps) so every clip over
    a second has a flip; the ramp spreads a flip's change (up to 2 × 0.6 of the mark) over
    6 frames."""
    if index is None:
        return 1.0
    p = index % PERIOD
    run, k = divmod(p, FLIP_FRAMES)
    start = FLIP_FRAMES - RAMP
    level = 1.0 if k < start else 1.0 - 2.0 * (k - start + 1) / (RAMP + 1)
    return level if run == 0 else -level
