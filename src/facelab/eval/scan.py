"""The frame scan of `facelab eval`: one pass over result and dst frames side by side.

Everything that needs the pixels is taken here, frame by frame (faces, identity chips,
sharpness and colour inside dst's face, the face's PSNR and SSIM against dst, the
background error, the report's samples), so
no frame is kept: the measures over time (eval/measures.py) work on the records alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.eval import background, fidelity, sharpness
from facelab.eval.sources import UnreadableInput, read_frames
from facelab.faces.record import Landmarks
from facelab.progress import NULL, Reporter

if TYPE_CHECKING:
    from facelab.eval.run import EvalOptions, Reference

SAMPLES = 6  # frames shown dst | result in the report


@dataclass
class FrameRecord:
    """One compared frame: its faces and what was measured on its pixels (NaN where dst
    has no face)."""

    dst_face: Landmarks | None
    result_face: Landmarks | None
    detail_dst: float = math.nan  # sharpness inside dst's face, in dst and in the result
    detail_result: float = math.nan
    color_dst: np.ndarray | None = None  # mean BGR inside dst's face
    color_result: np.ndarray | None = None
    background_psnr: float = math.nan  # outside the region a merge may touch
    face_psnr: float = math.nan  # inside dst's face hull, result against dst (fidelity.py)
    face_ssim: float = math.nan


@dataclass
class Scan:
    frames: list[FrameRecord]  # frame i of dst against frame i of the result
    chips: dict[int, np.ndarray] = field(default_factory=dict)  # identity chips by frame
    samples: list[np.ndarray] = field(default_factory=list)  # dst | result strips, BGR
    background_sse: float = 0.0  # over every compared frame, for one PSNR
    background_count: int = 0
    result_frames: int = 0  # all of them, also those beyond dst's end


def largest(faces: list[Any]) -> Landmarks | None:
    if not faces:
        return None
    return max(faces, key=lambda f: float(np.ptp(f.landmarks.points68[:, 0]))).landmarks


def nearest(faces: list[Any], to: Landmarks | None) -> Landmarks | None:
    if not faces or to is None:
        return largest(faces)
    c = to.points68.mean(0)
    return min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.points68.mean(0) - c))
               ).landmarks


def spread(n: int, k: int) -> list[int]:
    """Up to k indices spread evenly over range(n)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()}) if n else []


def identity_on(ref: Reference) -> bool:
    """Whether identity is measured: a recogniser and both src's and dst's identities."""
    return (ref.recognizer is not None and "src" in ref.identities
            and "dst" in ref.identities)


def scan(result: Path, ref: Reference, opts: EvalOptions, reporter: Reporter = NULL) -> Scan:
    """Read `result` and dst frame by frame and take what each frame pair gives."""
    total = len(ref.faces)
    chips_wanted = identity_on(ref)
    every = max(1, opts.identity_every)
    show = set(spread(total, SAMPLES))
    out = Scan([])
    dst_iter = read_frames(ref.dst, opts.max_frames)
    with reporter.task("result faces", total) as task:
        for i, r in enumerate(read_frames(result, opts.max_frames)):
            out.result_frames = i + 1
            d = next(dst_iter, None) if i < total else None
            if d is None:
                continue  # the result is longer than dst: count its frames, compare none
            if r.shape != d.shape:
                raise FacelabError(f"{result.name} is {r.shape[1]}×{r.shape[0]} but dst is "
                                   f"{d.shape[1]}×{d.shape[0]}: eval compares frames pixel "
                                   "by pixel.")
            fd = ref.faces[i]
            faces = ref.extractor.run(r)
            rec = FrameRecord(fd, nearest(faces, fd) if fd is not None else largest(faces))
            fr = rec.result_face
            if chips_wanted and fd is not None and fr is not None and i % every == 0:
                out.chips[i] = ref.recognizer.chip(r, fr.points68)  # type: ignore[union-attr]
            if i in show:
                out.samples.append(_pair(d, r))
            if fd is not None:
                mask = sharpness.face_mask(fd.points68, d.shape)
                eye = sharpness.eye_distance(fd.points68)
                rec.detail_dst = sharpness.detail(d, mask, eye)
                rec.detail_result = sharpness.detail(r, mask, eye)
                rec.color_dst = sharpness.mean_color(d, mask)
                rec.color_result = sharpness.mean_color(r, mask)
                rec.face_psnr, rec.face_ssim = fidelity.face_fidelity(d, r, fd.points68)
            keep = background.background_mask(fd.points68 if fd else None, d.shape,
                                               fd.yaw if fd else 0.0)
            sse, cnt = background.squared_error(d, r, keep)
            out.background_sse += sse
            out.background_count += cnt
            rec.background_psnr = background.psnr(sse, cnt) or math.nan
            out.frames.append(rec)
            task.advance()
    if not out.frames:
        raise UnreadableInput(f"{result} has no frame to compare.")
    return out


def _pair(dst: np.ndarray, res: np.ndarray) -> np.ndarray:
    """dst | result side by side, at most 720 px wide (for the report)."""
    pair = np.hstack([dst, res])
    scale = min(1.0, 720 / pair.shape[1])
    if scale < 1:
        pair = cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return pair
