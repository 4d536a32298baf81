"""Histogram matching of the predicted face to the dst face: the `hist-match` and
`hist-match-bw` merge modes.

Unlike the moment-matching colour transfers (color.py), each channel's whole distribution is
matched, so the face takes on dst's exposure curve and contrast exactly, including its
clipped highlights, which is why DeepFaceLab adds a threshold that leaves dst's brightest
tail out.
"""

from __future__ import annotations

import cv2
import numpy as np

from facelab.merge.color import MIN_MASKED


def _match_channel(src: np.ndarray, ref: np.ndarray, sel: np.ndarray,
                   fraction: float) -> np.ndarray:
    """Map every value of src through F_ref⁻¹(fraction · F_src(v)), the CDFs estimated from
    the selected pixels (F_src counts values ≤ v, like a cumulative histogram)."""
    s_sorted, r_sorted = np.sort(src[sel]), np.sort(ref[sel])
    cdf = np.searchsorted(s_sorted, src, side="right") / s_sorted.size
    levels = np.arange(1, r_sorted.size + 1) / r_sorted.size
    return np.interp(cdf * fraction, levels, r_sorted).astype(np.float32)


def hist_match(face: np.ndarray, ref: np.ndarray, mask: np.ndarray, threshold: int = 255,
               bw: bool = False, masked: bool = True) -> np.ndarray:
    """Match each BGR channel's histogram of `face` (float32 H×W×3 in [0, 1]) to `ref`'s.

    masked: the histograms come from pixels where mask > 0.5 only (dst's hair and
    background must not set the face's tones); the whole crop when the mask holds fewer than
    MIN_MASKED pixels or masked is False. The mapping is applied to the whole crop.

    threshold (0…255, DeepFaceLab's "hist match threshold"): the face's cumulative histogram
    is scaled to end at threshold/255 instead of 1 before it is looked up in dst's, so a face
    pixel of quantile q takes dst's value at quantile q·threshold/255. At 255 this is plain
    histogram matching; lower values cut off dst's brightest (1 - threshold/255) tail, the
    specular highlights and blown-out pixels whose few extreme values otherwise appear as
    bright speckles on the face, and darken the result slightly as the price.

    bw: match the grayscale images instead and return the gray face in three channels
    (DeepFaceLab's hist-match-bw, for black-and-white footage).
    """
    if face.ndim != 3 or face.shape[2] != 3 or face.shape != ref.shape:
        raise ValueError(f"face {face.shape} and ref {ref.shape} must be equal H×W×3 shapes")
    if mask.shape != face.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match the face {face.shape[:2]}")
    if not 0 <= threshold <= 255:
        raise ValueError(f"threshold must be within 0…255, not {threshold}")
    sel = mask.reshape(-1) > 0.5
    if not masked or np.count_nonzero(sel) < MIN_MASKED:
        sel = np.ones_like(sel)
    fraction = threshold / 255.0
    if bw:
        gray = [cv2.cvtColor(im.astype(np.float32), cv2.COLOR_BGR2GRAY).reshape(-1)
                for im in (face, ref)]
        out = _match_channel(gray[0], gray[1], sel, fraction).reshape(face.shape[:2])
        return np.repeat(out[..., None], 3, axis=2)
    src, dst = (np.ascontiguousarray(im.reshape(-1, 3).T) for im in (face, ref))
    out = np.stack([_match_channel(s, d, sel, fraction) for s, d in zip(src, dst, strict=True)],
                   axis=1)
    return out.reshape(face.shape)
