"""`facelab eval`: measure a swap's result against dst's video and src's faces.

dst's side (its faces, the src/dst/gallery identities) is a `Reference`, prepared once and
reusable for several results: the quality bench and the tests score many results of one
dst. Each frame of the result is matched to dst's frame of the same number; the face
compared is the result face nearest dst's (the largest dst face is the one swapped). Frames
are streamed, two at a time (dst's are decoded again for each result): a long video never
sits in memory.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.eval import background, expression, identity, pose, sharpness, temporal
from facelab.eval.sources import (
    UnreadableInput,
    faceset_images,
    is_video,
    load_frames,
    read_frames,
)
from facelab.faces.record import Landmarks
from facelab.fsutil import read_json
from facelab.progress import NULL, Reporter
from facelab.workspace import Workspace

SUMMARY_KEYS = (
    "identity_recognised_as_src", "identity_closer_to_src", "identity_top1",
    "identity_dist_src", "identity_dist_dst", "sharpness_ratio", "pose_error_deg",
    "expression_error", "expression_corr", "jitter_ratio", "background_psnr_db",
    "face_found_share", "frames",
)
SAMPLES = 6  # frames shown dst | result in the report


@dataclass
class EvalOptions:
    identity_every: int = 1  # descriptor of every n-th result frame (≈ 0.2 s each on a CPU)
    src_faces: int = 32  # faces of src's faceset that make its identity
    dst_faces: int = 32  # dst frames that make dst's identity
    max_frames: int | None = None  # only the first n frames
    detector: str = "accurate"
    gallery: Path | None = None  # more people: each video / image folder in it is one
    identity: bool = True  # False: skip the descriptors (the slow part)


@dataclass
class Reference:
    """dst's faces (one entry per frame), and the identities a result face is compared
    with."""

    dst: Path
    faces: list[Landmarks | None]
    identities: dict[str, np.ndarray]  # "src", "dst", then gallery names
    recognizer: identity.Recognizer | None
    extractor: Any


@dataclass
class Evaluation:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    inputs: dict[str, str]
    samples: list[np.ndarray] = field(default_factory=list)  # dst | result strips, BGR

    def to_json(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "summary": self.summary, "frames": self.rows}


def make_extractor(detector: str = "accurate") -> Any:
    from facelab.faces.extractor import Extractor, ExtractorOptions

    return Extractor(ExtractorOptions(detector=detector))


def _largest(faces: list[Any]) -> Landmarks | None:
    if not faces:
        return None
    return max(faces, key=lambda f: float(np.ptp(f.landmarks.points68[:, 0]))).landmarks


def _nearest(faces: list[Any], to: Landmarks | None) -> Landmarks | None:
    if not faces or to is None:
        return _largest(faces)
    c = to.points68.mean(0)
    return min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.points68.mean(0) - c))
               ).landmarks


def _spread(n: int, k: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()}) if n else []


def _faces_of(path: Path, ex: Any, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, 68 points) of up to `limit` faces of a person: a video (frames spread over
    it), or a folder of aligned faces or other images."""
    if is_video(path):
        from facelab.video.probe import probe

        count = probe(path).frame_count or limit
        step = max(1, count // limit)
        items: list[tuple[np.ndarray, np.ndarray | None]] = [
            (f, None) for i, f in enumerate(read_frames(path)) if i % step == 0][:limit]
    elif path.is_dir():
        items = faceset_images(path, limit)
    else:
        raise UnreadableInput(f"{path} is neither a video nor a folder of faces.")
    out = []
    for image, points in items:
        if points is None:
            lm = _largest(ex.run(image))
            if lm is None:
                continue
            points = lm.points68
        out.append((image, points))
    if not out:
        raise FacelabError(f"No face found in {path}.")
    return out


def prepare(dst: Path, src: Path | None, opts: EvalOptions | None = None,
            reporter: Reporter = NULL) -> Reference:
    """Read dst, find its faces, build the identities (src from `src`, a faceset folder or
    a video; dst from its own frames; one per gallery entry)."""
    opts = opts or EvalOptions()
    ex = make_extractor(opts.detector)
    faces: list[Landmarks | None] = []
    with reporter.task("dst faces", None) as task:
        for f in read_frames(dst, opts.max_frames):
            faces.append(_largest(ex.run(f)))
            task.advance()
    rec = identity.Recognizer() if opts.identity and identity.available() else None
    ids: dict[str, np.ndarray] = {}
    if rec is not None:
        with reporter.task("identities", None):
            if src is not None:
                ids["src"] = identity.identity_of(rec.embed(_faces_of(src, ex, opts.src_faces)))
            found = [i for i, f in enumerate(faces) if f is not None]
            pick = {found[i] for i in _spread(len(found), opts.dst_faces)}
            if pick:
                ids["dst"] = identity.identity_of(rec.embed(
                    [(f, faces[i].points68)  # type: ignore[union-attr]
                     for i, f in enumerate(read_frames(dst, opts.max_frames)) if i in pick]))
            if opts.gallery is not None:
                for entry in _gallery(opts.gallery):
                    ids.setdefault(entry.stem, identity.identity_of(
                        rec.embed(_faces_of(entry, ex, opts.src_faces))))
    elif opts.identity:
        reporter.warn("Identity is not measured: it needs pip install 'facelab[dlib]'.")
    return Reference(dst, faces, ids, rec, ex)


def _gallery(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UnreadableInput(f"Gallery {folder} is not a folder.")
    entries = sorted(p for p in folder.iterdir()
                     if not p.name.startswith(".") and (p.is_dir() or is_video(p)))
    if not entries:
        raise UnreadableInput(f"Gallery {folder} holds no video or folder of faces.")
    return entries


def _num(v: float | None, digits: int = 4) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


def _mean(a: np.ndarray) -> float | None:
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def evaluate(result: Path, ref: Reference, opts: EvalOptions | None = None,
             reporter: Reporter = NULL) -> Evaluation:
    """Score `result` (a video, or a folder of frames) against `ref`."""
    opts = opts or EvalOptions()
    total = len(ref.faces)
    identity_on = (ref.recognizer is not None and "src" in ref.identities
                   and "dst" in ref.identities)
    every = max(1, opts.identity_every)
    show = set(_spread(total, SAMPLES))
    res_faces: list[Landmarks | None] = []
    det_d, det_r = np.full(total, np.nan), np.full(total, np.nan)
    col_d, col_r = np.full((total, 3), np.nan), np.full((total, 3), np.nan)
    psnr_f = np.full(total, np.nan)
    sse_all, count_all = 0.0, 0
    chips: dict[int, np.ndarray] = {}
    samples: list[np.ndarray] = []
    n = res_count = 0
    res_iter = read_frames(result, opts.max_frames)
    dst_iter = read_frames(ref.dst, opts.max_frames)
    with reporter.task("result faces", total) as task:
        for i, r in enumerate(res_iter):
            res_count = i + 1
            d = next(dst_iter, None) if i < total else None
            if d is None:
                continue  # the result is longer than dst: count its frames, compare none
            if r.shape != d.shape:
                raise FacelabError(f"{result.name} is {r.shape[1]}×{r.shape[0]} but dst is "
                                   f"{d.shape[1]}×{d.shape[0]}: eval compares frames pixel "
                                   "by pixel.")
            n = i + 1
            fd = ref.faces[i]
            fr = _nearest(ref.extractor.run(r), fd) if fd is not None else _largest(
                ref.extractor.run(r))
            res_faces.append(fr)
            if identity_on and fd is not None and fr is not None and i % every == 0:
                chips[i] = ref.recognizer.chip(r, fr.points68)  # type: ignore[union-attr]
            if i in show:
                samples.append(_pair(d, r))
            if fd is not None:
                mask = sharpness.face_mask(fd.points68, d.shape)
                eye = sharpness.eye_distance(fd.points68)
                det_d[i], det_r[i] = sharpness.detail(d, mask, eye), sharpness.detail(r, mask, eye)
                col_d[i], col_r[i] = sharpness.mean_color(d, mask), sharpness.mean_color(r, mask)
            keep = background.background_mask(fd.points68 if fd else None, d.shape,
                                               fd.yaw if fd else 0.0)
            sse, cnt = background.squared_error(d, r, keep)
            sse_all, count_all = sse_all + sse, count_all + cnt
            psnr_f[i] = background.psnr(sse, cnt) or np.nan
            task.advance()
    if n == 0:
        raise UnreadableInput(f"{result} has no frame to compare.")
    det_d, det_r, col_d, col_r, psnr_f = (a[:n] for a in (det_d, det_r, col_d, col_r, psnr_f))
    dst_faces = ref.faces[:n]

    # identity
    dist: dict[str, np.ndarray] = {k: np.full(n, np.nan) for k in ref.identities}
    measured = np.zeros(n, bool)
    if identity_on:
        assert ref.recognizer is not None
        measured[::every] = True
        measured &= np.array([f is not None for f in dst_faces])
        idx = sorted(chips)
        with reporter.task("identity", None):
            desc = ref.recognizer.describe([chips[i] for i in idx])
        for name, ident in ref.identities.items():
            if idx:
                dist[name][idx] = identity.distances(desc, ident)
    names = list(ref.identities)
    thr = identity.THRESHOLD
    ds, dd = dist.get("src", np.full(n, np.nan)), dist.get("dst", np.full(n, np.nan))
    have = np.isfinite(ds) & np.isfinite(dd)
    closer = have & (ds < dd)
    recognised = closer & (ds < thr)
    top1 = np.zeros(n, bool)
    if names and have.any():
        stack = np.stack([dist[k] for k in names], 1)
        top1[have] = np.nanargmin(stack[have], 1) == names.index("src")

    # pose, expression, temporal
    pdiff = pose.pose_differences(dst_faces, res_faces)
    perr = np.abs(pdiff)
    pose_err = perr.mean(1)  # a row is NaN as a whole or not at all
    pose_offset, pose_follow = pose.offset_and_following(pdiff)
    expr = np.array([expression.expression_error(a.points68, b.points68) if a and b else np.nan
                     for a, b in zip(dst_faces, res_faces, strict=True)])
    mouth_d, eyes_d = expression.openings(dst_faces)
    mouth_r, eyes_r = expression.openings(res_faces)
    mouth_corr, mouth_on = expression.following(mouth_d, mouth_r, "mouth")
    eyes_corr, eyes_on = expression.following(eyes_d, eyes_r, "eyes")
    counted = [c for c, on in ((mouth_corr, mouth_on), (eyes_corr, eyes_on))
               if on and c is not None]
    if not counted:  # dst keeps still: use whatever is known
        counted = [c for c in (mouth_corr, eyes_corr) if c is not None]
    jit_d, jit_r = temporal.landmark_jitter(dst_faces), temporal.landmark_jitter(res_faces)
    fl_d, fl_r = temporal.flicker(col_d), temporal.flicker(col_r)
    sharp = det_r / np.where(det_d > 0, det_d, np.nan)

    dst_found = np.array([f is not None for f in dst_faces])
    res_found = np.array([f is not None for f in res_faces])
    ident_n = int(measured.sum())

    def share(flags: np.ndarray) -> float | None:
        return _num(float((flags & measured).sum()) / ident_n) if ident_n else None

    summary: dict[str, Any] = {
        "identity_recognised_as_src": share(recognised),
        "identity_closer_to_src": share(closer),
        "identity_top1": share(top1),
        "identity_dist_src": _num(_mean(ds)),
        "identity_dist_dst": _num(_mean(dd)),
        "sharpness_ratio": _num(_ratio_of_means(det_r, det_d)),
        "pose_error_deg": _num(_mean(pose_err), 3),
        "expression_error": _num(_mean(expr)),
        "expression_corr": _num(float(np.mean(counted)) if counted else None),
        "jitter_ratio": _num(temporal.ratio(jit_r, jit_d)),
        "background_psnr_db": _num(background.psnr(sse_all, count_all), 2),
        "face_found_share": _num(float((res_found & dst_found).sum() / dst_found.sum())
                                 if dst_found.any() else None),
        "frames": n,
        # more detail
        "identity_threshold": thr,
        "identity_recogniser": ref.recognizer.name if ref.recognizer else None,
        "identity_frames": ident_n,
        "identities": names,
        "pose_error_yaw_pitch_roll_deg": [_num(_mean(perr[:, k]), 3) for k in range(3)],
        "pose_offset_yaw_pitch_roll_deg": [_num(float(v), 3) for v in pose_offset],
        "pose_error_offset_removed_deg": _num(_mean(pose_follow.mean(1)), 3),
        "expression_corr_mouth": _num(mouth_corr),
        "expression_corr_eyes": _num(eyes_corr),
        "expression_channels": [k for k, on in (("mouth", mouth_on), ("eyes", eyes_on)) if on],
        "flicker_ratio": _num(temporal.ratio(fl_r, fl_d, temporal.FLICKER_FLOOR)),
        "dst_face_share": _num(float(dst_found.mean()) if n else None),
        "frames_dst": total,
        "frames_result": res_count,
    }
    rows = []
    for i in range(n):
        rows.append({
            "frame": i, "dst_face": bool(dst_found[i]), "result_face": bool(res_found[i]),
            **{f"dist_{k}": _num(dist[k][i]) for k in names},
            "recognised_as_src": bool(recognised[i]) if have[i] else None,
            "closer_to_src": bool(closer[i]) if have[i] else None,
            "top1_src": bool(top1[i]) if have[i] else None,
            "pose_error_deg": _num(pose_err[i], 3),
            "yaw_dst": _num(dst_faces[i].yaw, 2) if dst_faces[i] else None,
            "yaw_result": _num(res_faces[i].yaw, 2) if res_faces[i] else None,
            "expression_error": _num(expr[i]),
            "mouth_dst": _num(mouth_d[i]), "mouth_result": _num(mouth_r[i]),
            "eyes_dst": _num(eyes_d[i]), "eyes_result": _num(eyes_r[i]),
            "jitter_dst": _num(jit_d[i]), "jitter_result": _num(jit_r[i]),
            "flicker_dst": _num(fl_d[i], 3), "flicker_result": _num(fl_r[i], 3),
            "sharpness_ratio": _num(sharp[i]),
            "background_psnr_db": _num(psnr_f[i], 2),
        })
    inputs = {"dst": str(ref.dst), "result": str(result)}
    return Evaluation(rows, summary, inputs, samples)


def _ratio_of_means(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any() or b[ok].sum() <= 0:
        return None
    return float(a[ok].sum() / b[ok].sum())


def _pair(dst: np.ndarray, res: np.ndarray) -> np.ndarray:
    """dst | result side by side, at most 720 px wide (for the report)."""
    pair = np.hstack([dst, res])
    scale = min(1.0, 720 / pair.shape[1])
    if scale < 1:
        pair = cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return pair


def workspace_facts(ws: Workspace) -> dict[str, Any]:
    """What the workspace says of the work behind its result: training minutes (swap.json),
    the model's iteration and preset, the merge options (merged/merge.json). Missing files
    leave None: the stages can be run by hand."""
    facts: dict[str, Any] = {"train_minutes": None, "train_iteration": None,
                             "model_preset": None, "merge_options": None}
    bad = (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError)
    with contextlib.suppress(*bad):
        seconds = float(read_json(ws.root / "swap.json")["train_seconds"])
        facts["train_minutes"] = round(seconds / 60, 2)
    states = sorted(ws.model_dir.glob("*_state.json")) if ws.model_dir.is_dir() else []
    with contextlib.suppress(*bad):
        st = read_json(states[0])["state"]
        facts["train_iteration"] = int(st["iteration"])
        facts["model_preset"] = st["options"].get("preset")
    with contextlib.suppress(*bad):
        facts["merge_options"] = read_json(ws.merged_dir / "merge.json")["options"]
    return facts


@dataclass
class EvalInputs:
    """What to compare; None takes the workspace's own (result.*, data_src/aligned,
    data_dst.*)."""

    result: Path | None = None
    src: Path | None = None
    dst: Path | None = None
    out: Path | None = None  # eval.json (default: in the workspace, else beside the result)
    report: Path | None = None  # eval.html (likewise)


def resolve(ws: Workspace, inp: EvalInputs) -> EvalInputs:
    """Fill what was not given from the workspace; a missing input is one clear line."""
    result, src, dst = inp.result, inp.src, inp.dst
    if result is None:
        found = sorted(p for p in ws.root.glob("result.*") if is_video(p))
        if not found:
            raise UnreadableInput(f"No result.* video in {ws.root}: run `facelab swap` or "
                                  "`facelab video assemble`, or pass --result FILE.")
        result = found[0]
    if src is None:
        src = ws.aligned_dir("src")
        if not src.is_dir():
            raise UnreadableInput(f"No {src}: pass --src DIR (src's aligned faces).")
    if dst is None:
        try:
            dst = ws.find_video("dst")
        except FacelabError as e:
            raise UnreadableInput(str(e).replace("--input FILE", "--dst FILE")) from None
    for p in (result, src, dst):
        if not p.exists():
            raise UnreadableInput(f"{p} does not exist.")
    base = ws.root if ws.root.is_dir() and inp.result is None else result.parent
    return EvalInputs(result, src, dst, inp.out or base / "eval.json",
                      inp.report or base / "eval.html")


def run_eval(ws: Workspace, inp: EvalInputs, opts: EvalOptions | None = None,
             reporter: Reporter = NULL) -> tuple[Evaluation, EvalInputs]:
    """Score the result, write eval.json and the HTML report (each atomically)."""
    from facelab.eval.report import write_report
    from facelab.fsutil import write_json

    opts = opts or EvalOptions()
    inp = resolve(ws, inp)
    assert inp.result and inp.dst and inp.out and inp.report
    load_frames(inp.result, 1)  # an unreadable result fails before the slow part
    ref = prepare(inp.dst, inp.src, opts, reporter)
    ev = evaluate(inp.result, ref, opts, reporter)
    ev.inputs["src"] = str(inp.src)
    if inp.result.parent == ws.root or inp.result == ws.merged_dir:
        ev.summary.update(workspace_facts(ws))
    write_json(inp.out, ev.to_json())
    write_report(inp.report, ev)
    return ev, inp
