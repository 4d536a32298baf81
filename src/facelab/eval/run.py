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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import FacelabError
from facelab.eval import identity
from facelab.eval.measures import measure, rows, summary
from facelab.eval.scan import largest, scan, spread
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
    "face_psnr_vs_dst_db", "face_ssim_vs_dst", "face_found_share", "frames",
)


@dataclass
class EvalOptions:
    identity_every: int = 1  # descriptor of every n-th result frame (≈ 0.2 s each on a CPU)
    src_faces: int = 32  # faces of src's faceset that make its identity
    dst_faces: int = 32  # dst frames that make dst's identity
    max_frames: int | None = None  # only the first n frames
    detector: str = "accurate"
    gallery: Path | None = None  # more people: each video / image folder in it is one
    identity: bool = True  # False: skip the descriptors (the slow part)
    #: occluder regions of some dst frames (`eval/occlusion.py`): measure that they stay
    occluders: Path | None = None


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
            lm = largest(ex.run(image))
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
            faces.append(largest(ex.run(f)))
            task.advance()
    rec = identity.Recognizer() if opts.identity and identity.available() else None
    ids: dict[str, np.ndarray] = {}
    if rec is not None:
        with reporter.task("identities", None):
            if src is not None:
                ids["src"] = identity.identity_of(rec.embed(_faces_of(src, ex, opts.src_faces)))
            found = [i for i, f in enumerate(faces) if f is not None]
            pick = {found[i] for i in spread(len(found), opts.dst_faces)}
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


def evaluate(result: Path, ref: Reference, opts: EvalOptions | None = None,
             reporter: Reporter = NULL) -> Evaluation:
    """Score `result` (a video, or a folder of frames) against `ref`: scan the frames, take
    the measures over them, sum them up."""
    opts = opts or EvalOptions()
    sc = scan(result, ref, opts, reporter)
    m = measure(sc, ref, opts.identity_every, reporter)
    inputs = {"dst": str(ref.dst), "result": str(result)}
    ev = Evaluation(rows(m), summary(m, sc, ref), inputs, sc.samples)
    if opts.occluders is not None:
        ev.summary.update(occluders_kept(result, ref, opts.occluders))
        ev.inputs["occluders"] = str(opts.occluders)
    return ev


def occluders_kept(result: Path, ref: Reference, path: Path) -> dict[str, Any]:
    """The occlusion measure (`eval/occlusion.py`) of `result` over the frames `path`
    labels, their polygons placed by the dst faces eval found."""
    from facelab.eval import occlusion

    first = next(read_frames(ref.dst, 1))
    faces = {i: (f.points68, f.yaw) for i, f in enumerate(ref.faces) if f is not None}
    masks = occlusion.occluder_masks(path, first.shape, faces)
    last = max(masks) + 1
    found = occlusion.measure(read_frames(ref.dst, last), read_frames(result, last), masks)
    found.pop("occlusion_per_frame")
    return found


def workspace_facts(ws: Workspace) -> dict[str, Any]:
    """What the workspace says of the work behind its result: training minutes (swap.json),
    the model's iteration and preset, the merge options (merge.json of merged/ or
    merged_video/). Missing files
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
    records = [d / "merge.json" for d in (ws.merged_dir, ws.frames_dir("dst") / "merged_video")]
    records = [r for r in records if r.is_file()]
    with contextlib.suppress(*bad):  # the newest merge's: to frames or straight to video
        newest = max(records, key=lambda r: r.stat().st_mtime_ns)
        facts["merge_options"] = read_json(newest)["options"]
    return facts


def workspace_result(ws: Workspace) -> Path:
    """The workspace's newest result: its result.* videos and the output the last `swap`
    recorded in swap.json (it may lie outside, `swap -o OUT`)."""
    from facelab.swap import recorded_output

    found = [p for p in ws.root.glob("result.*") if is_video(p)]
    swapped = recorded_output(ws)
    if swapped is not None and swapped.is_file():
        found.append(swapped)
    if not found:
        raise UnreadableInput(f"No result.* video in {ws.root} and no output recorded by "
                              "`facelab swap`: run `facelab swap` or `facelab video "
                              "assemble`, or pass --result FILE.")
    return max(found, key=lambda p: (p.stat().st_mtime_ns, str(p)))


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
        result = workspace_result(ws)
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
    own = inp.result is None  # the workspace's result: its facts describe the work behind it
    inp = resolve(ws, inp)
    assert inp.result and inp.dst and inp.out and inp.report
    load_frames(inp.result, 1)  # an unreadable result fails before the slow part
    if opts.occluders is not None:
        from facelab.eval.occlusion import check

        check(opts.occluders)
    ref = prepare(inp.dst, inp.src, opts, reporter)
    ev = evaluate(inp.result, ref, opts, reporter)
    ev.inputs["src"] = str(inp.src)
    if own or inp.result.parent == ws.root or inp.result == ws.merged_dir:
        ev.summary.update(workspace_facts(ws))
    write_json(inp.out, ev.to_json())
    write_report(inp.report, ev)
    return ev, inp
