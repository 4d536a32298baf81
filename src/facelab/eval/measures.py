"""The measures of `facelab eval` over a scanned clip, and the summary and rows they give.

Per-frame values are arrays over the compared frames (NaN where not measured), since the
measures over time (jitter, flicker, expression following) need them as series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from facelab.eval import background, expression, identity, pose, temporal
from facelab.eval.scan import Scan, identity_on
from facelab.faces.record import Landmarks
from facelab.progress import NULL, Reporter

if TYPE_CHECKING:
    from facelab.eval.run import Reference


@dataclass
class Identity:
    """Distances of each result face to each identity, and what they say of it."""

    names: list[str]  # "src", "dst", then gallery names
    dist: dict[str, np.ndarray]
    measured: np.ndarray  # frames whose descriptor was taken (dst has a face there)
    have: np.ndarray  # frames with both a src and a dst distance
    closer: np.ndarray  # nearer src than dst
    recognised: np.ndarray  # ... and within the recogniser's threshold
    top1: np.ndarray  # src nearest of all identities


@dataclass
class Measures:
    dst_faces: list[Landmarks | None]
    res_faces: list[Landmarks | None]
    ident: Identity
    pose_diff: np.ndarray  # N×3 signed result − dst (yaw, pitch, roll)
    expr: np.ndarray
    mouth: tuple[np.ndarray, np.ndarray]  # openings (dst, result)
    eyes: tuple[np.ndarray, np.ndarray]
    detail: tuple[np.ndarray, np.ndarray]
    jitter: tuple[np.ndarray, np.ndarray]  # of the landmarks, frame to frame
    flicker: tuple[np.ndarray, np.ndarray]  # of the face's mean colour
    psnr: np.ndarray
    fidelity: tuple[np.ndarray, np.ndarray]  # face PSNR (dB) and SSIM against dst

    @property
    def pose_err(self) -> np.ndarray:
        return np.abs(self.pose_diff).mean(1)  # a row is NaN as a whole or not at all


def measure(sc: Scan, ref: Reference, every: int, reporter: Reporter = NULL) -> Measures:
    """Every per-frame measure of a scan (identity descriptors are computed here)."""
    recs = sc.frames
    n = len(recs)
    dst_faces = [r.dst_face for r in recs]
    res_faces = [r.result_face for r in recs]
    color_d, color_r = np.full((n, 3), np.nan), np.full((n, 3), np.nan)
    for i, r in enumerate(recs):
        if r.color_dst is not None and r.color_result is not None:
            color_d[i], color_r[i] = r.color_dst, r.color_result
    mouth_d, eyes_d = expression.openings(dst_faces)
    mouth_r, eyes_r = expression.openings(res_faces)
    return Measures(
        dst_faces, res_faces,
        _identity(sc, ref, max(1, every), dst_faces, reporter),
        pose.pose_differences(dst_faces, res_faces),
        np.array([expression.expression_error(a.points68, b.points68) if a and b else np.nan
                  for a, b in zip(dst_faces, res_faces, strict=True)]),
        (mouth_d, mouth_r), (eyes_d, eyes_r),
        (np.array([r.detail_dst for r in recs]), np.array([r.detail_result for r in recs])),
        (temporal.landmark_jitter(dst_faces), temporal.landmark_jitter(res_faces)),
        (temporal.flicker(color_d), temporal.flicker(color_r)),
        np.array([r.background_psnr for r in recs], np.float64),
        (np.array([r.face_psnr for r in recs], np.float64),
         np.array([r.face_ssim for r in recs], np.float64)),
    )


def _identity(sc: Scan, ref: Reference, every: int, dst_faces: list[Landmarks | None],
              reporter: Reporter) -> Identity:
    n = len(dst_faces)
    dist: dict[str, np.ndarray] = {k: np.full(n, np.nan) for k in ref.identities}
    measured = np.zeros(n, bool)
    if identity_on(ref):
        assert ref.recognizer is not None
        measured[::every] = True
        measured &= np.array([f is not None for f in dst_faces])
        idx = sorted(sc.chips)
        with reporter.task("identity", None):
            desc = ref.recognizer.describe([sc.chips[i] for i in idx])
        for name, ident in ref.identities.items():
            if idx:
                dist[name][idx] = identity.distances(desc, ident)
    names = list(ref.identities)
    ds, dd = dist.get("src", np.full(n, np.nan)), dist.get("dst", np.full(n, np.nan))
    have = np.isfinite(ds) & np.isfinite(dd)
    closer = have & (ds < dd)
    recognised = closer & (ds < identity.THRESHOLD)
    top1 = np.zeros(n, bool)
    if names and have.any():
        stack = np.stack([dist[k] for k in names], 1)
        top1[have] = np.nanargmin(stack[have], 1) == names.index("src")
    return Identity(names, dist, measured, have, closer, recognised, top1)


def num(v: float | None, digits: int = 4) -> float | None:
    """JSON's number: rounded, None for missing or not finite."""
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def _mean(a: np.ndarray) -> float | None:
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _ratio_of_means(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any() or b[ok].sum() <= 0:
        return None
    return float(a[ok].sum() / b[ok].sum())


def summary(m: Measures, sc: Scan, ref: Reference) -> dict[str, Any]:
    """The clip's numbers (SUMMARY_KEYS first, then more detail)."""
    idn = m.ident
    n = len(m.dst_faces)
    nan = np.full(n, np.nan)
    ds, dd = idn.dist.get("src", nan), idn.dist.get("dst", nan)
    perr = np.abs(m.pose_diff)
    pose_offset, pose_follow = pose.offset_and_following(m.pose_diff)
    mouth_corr, mouth_on = expression.following(*m.mouth, "mouth")
    eyes_corr, eyes_on = expression.following(*m.eyes, "eyes")
    counted = [c for c, on in ((mouth_corr, mouth_on), (eyes_corr, eyes_on))
               if on and c is not None]
    if not counted:  # dst keeps still: use whatever is known
        counted = [c for c in (mouth_corr, eyes_corr) if c is not None]
    (jit_d, jit_r), (fl_d, fl_r) = m.jitter, m.flicker
    dst_found = np.array([f is not None for f in m.dst_faces])
    res_found = np.array([f is not None for f in m.res_faces])
    ident_n = int(idn.measured.sum())

    def share(flags: np.ndarray) -> float | None:
        return num(float((flags & idn.measured).sum()) / ident_n) if ident_n else None

    return {
        "identity_recognised_as_src": share(idn.recognised),
        "identity_closer_to_src": share(idn.closer),
        "identity_top1": share(idn.top1),
        "identity_dist_src": num(_mean(ds)),
        "identity_dist_dst": num(_mean(dd)),
        "sharpness_ratio": num(_ratio_of_means(m.detail[1], m.detail[0])),
        "pose_error_deg": num(_mean(m.pose_err), 3),
        "expression_error": num(_mean(m.expr)),
        "expression_corr": num(float(np.mean(counted)) if counted else None),
        "jitter_ratio": num(temporal.ratio(jit_r, jit_d)),
        "background_psnr_db": num(background.psnr(sc.background_sse, sc.background_count), 2),
        "face_psnr_vs_dst_db": num(_mean(m.fidelity[0]), 2),
        "face_ssim_vs_dst": num(_mean(m.fidelity[1])),
        "face_found_share": num(float((res_found & dst_found).sum() / dst_found.sum())
                                if dst_found.any() else None),
        "frames": n,
        # more detail
        "identity_threshold": identity.THRESHOLD,
        "identity_recogniser": ref.recognizer.name if ref.recognizer else None,
        "identity_frames": ident_n,
        "identities": idn.names,
        "pose_error_yaw_pitch_roll_deg": [num(_mean(perr[:, k]), 3) for k in range(3)],
        "pose_offset_yaw_pitch_roll_deg": [num(float(v), 3) for v in pose_offset],
        "pose_error_offset_removed_deg": num(_mean(pose_follow.mean(1)), 3),
        "expression_corr_mouth": num(mouth_corr),
        "expression_corr_eyes": num(eyes_corr),
        "expression_channels": [k for k, on in (("mouth", mouth_on), ("eyes", eyes_on)) if on],
        "flicker_ratio": num(temporal.ratio(fl_r, fl_d, temporal.FLICKER_FLOOR)),
        "dst_face_share": num(float(dst_found.mean()) if n else None),
        "frames_dst": len(ref.faces),
        "frames_result": sc.result_frames,
    }


def rows(m: Measures) -> list[dict[str, Any]]:
    """One JSON row per compared frame."""
    idn = m.ident
    (jit_d, jit_r), (fl_d, fl_r) = m.jitter, m.flicker
    det_d, det_r = m.detail
    sharp = det_r / np.where(det_d > 0, det_d, np.nan)
    pose_err = m.pose_err
    out = []
    for i, (fd, fr) in enumerate(zip(m.dst_faces, m.res_faces, strict=True)):
        have = bool(idn.have[i])
        out.append({
            "frame": i, "dst_face": fd is not None, "result_face": fr is not None,
            **{f"dist_{k}": num(idn.dist[k][i]) for k in idn.names},
            "recognised_as_src": bool(idn.recognised[i]) if have else None,
            "closer_to_src": bool(idn.closer[i]) if have else None,
            "top1_src": bool(idn.top1[i]) if have else None,
            "pose_error_deg": num(pose_err[i], 3),
            "yaw_dst": num(fd.yaw, 2) if fd else None,
            "yaw_result": num(fr.yaw, 2) if fr else None,
            "expression_error": num(m.expr[i]),
            "mouth_dst": num(m.mouth[0][i]), "mouth_result": num(m.mouth[1][i]),
            "eyes_dst": num(m.eyes[0][i]), "eyes_result": num(m.eyes[1][i]),
            "jitter_dst": num(jit_d[i]), "jitter_result": num(jit_r[i]),
            "flicker_dst": num(fl_d[i], 3), "flicker_result": num(fl_r[i], 3),
            "sharpness_ratio": num(sharp[i]),
            "background_psnr_db": num(m.psnr[i], 2),
            "face_psnr_vs_dst_db": num(m.fidelity[0][i], 2),
            "face_ssim_vs_dst": num(m.fidelity[1][i]),
        })
    return out
