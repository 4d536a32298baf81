"""Merging with a meshswap model on real GRID frames: the dst meshes reach the model in the
right coordinates, every frame is written and marked, and every mask, colour and blend mode
runs as for SAE.

The saves are built by the index step alone (`meshswap.model.build`, no refiner training):
"warp" is the warp-only model (src's own pixels), "ref" carries a refiner after three
training steps, so the refiner's path and its precision run too.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelab.faces.faceimage import read_meta, update_meta
from facelab.faces.facetype import face_transform, transform_points
from facelab.faces.landmarks import mesh_to_68
from facelab.merge.jobs import dst_faces, dst_frames, face_jobs
from facelab.merge.merger import merge
from facelab.merge.options import COLORS, MASK_MODES, MODES, MergeOptions
from facelab.merge.predictor import load_predictor, model_info
from facelab.progress import NullReporter
from facelab.provenance.mark import TRAINED_ALGORITHMIC_MEDIA
from facelab.provenance.png import png_mark
from facelab.provenance.watermark import mark_frame
from facelab.provenance.watermark.embed import MAX_AMP
from facelab.provenance.watermark.pattern import cell_size
from facelab.workspace import Workspace
from tests.conftest import assert_one_line_error, copy_workspace, run_facelab

#: Small and quick; "full" because the session's faces are extracted with the default type.
TINY = {"resolution": 64, "face_type": "full", "refiner_dims": 8, "refiner": True}


def _save(ws: Workspace, name: str, steps: int = 0, **over: object) -> None:
    """A meshswap save as the trainer writes one, after `steps` refiner steps."""
    from facelab.meshswap.model import build
    from facelab.meshswap.options import ARCH, FAMILY, MeshSwapOptions, fixed_of
    from facelab.train import checkpoint
    from facelab.train.data import Faceset

    opts = MeshSwapOptions(**{**TINY, **over})
    src = Faceset(ws.aligned_dir("src"), opts.resolution, opts.face_type)
    model = build(src, [m for ms in dst_faces(ws).values() for m in ms], opts)
    if model.refiner is not None:  # a few real steps: the refiner's last layer starts at 0
        torch.manual_seed(0)
        optim = torch.optim.Adam(model.refiner.parameters(), lr=1e-3)
        rng = np.random.default_rng(0)
        for _ in range(steps):
            optim.zero_grad()
            model.loss(model.train_batch(rng, 4)).backward()
            optim.step()
    state = {"family": FAMILY, "iteration": steps, "options": dataclasses.asdict(opts)}
    checkpoint.save(ws.model_dir, name, model, None, state=state, arch=ARCH,
                    fixed_options={**fixed_of(opts), **model.counts()})


@pytest.fixture(scope="module")
def ws(tmp_path_factory, full_src_faces: Path) -> Workspace:
    """The session's GRID workspace (A's faces as dst) with B's faces as src at the
    full 25 fps (at 8 fps a blink shows in one frame, and retrieval needs two; conftest's,
    copied), and the two saves."""
    w = Workspace(copy_workspace(full_src_faces, tmp_path_factory.mktemp("meshswap") / "ws"))
    _save(w, "warp", refiner=False)
    _save(w, "ref", steps=3)
    return w


def _merged(ws: Workspace, frame: Path) -> np.ndarray:
    return cv2.imread(str(ws.merged_dir / f"{frame.stem}.png"), cv2.IMREAD_UNCHANGED)


def test_frame_meshes_map_back_onto_the_aligned_meshes(aligned_faces: Path):
    """The jobs' meshes are the stored ones in frame pixels; smoothing keeps each in place in
    its (smoothed) crop and steadies it along the clip."""
    ws = Workspace(aligned_faces)
    frames, by_frame = dst_frames(ws), dst_faces(ws)
    assert all(j.mesh is None for js in face_jobs(frames, by_frame, 0, 25).values() for j in js)
    raw = face_jobs(frames, by_frame, 0, 25, meshes=True)
    smooth = face_jobs(frames, by_frame, 4, 25, meshes=True)
    moved = []
    for name, metas in by_frame.items():
        for meta, job, sm in zip(metas, raw[name], smooth[name], strict=True):
            assert job.mesh is not None and sm.mesh is not None and meta.mesh is not None
            m = meta.frame_to_face
            scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
            back = np.c_[transform_points(job.mesh[:, :2], m), job.mesh[:, 2] * scale]
            assert np.abs(back - meta.mesh).max() < 1e-6
            # the 68 points were made from the frame mesh at extraction: they come back
            assert np.abs(mesh_to_68(job.mesh) - meta.source_landmarks).max() < 1e-3
            assert (job.yaw, job.pitch) == (meta.yaw, meta.pitch)
            # smoothed: still in place in its crop, which the smoothed landmarks cut
            crop = lambda j: transform_points(  # noqa: E731
                j.mesh[:, :2], face_transform(j.landmarks, "full", 256, j.yaw))
            assert np.abs(crop(sm) - crop(job)).max() < 0.03 * 256
            moved.append(np.abs(sm.mesh - job.mesh).max())
    assert max(moved) > 0.05  # smoothing did move the meshes
    # ... and steadied them: less frame-to-frame acceleration of the mesh in its crop
    order = [p.name for p in frames if len(by_frame.get(p.name, [])) == 1]

    def shake(jobs: dict) -> float:
        pts = np.stack([transform_points(jobs[n][0].mesh[:, :2], face_transform(
            jobs[n][0].landmarks, "full", 256, jobs[n][0].yaw)) for n in order])
        return float(np.abs(np.diff(pts, 2, axis=0)).mean())

    assert shake(smooth) < 0.8 * shake(raw)


@pytest.mark.slow
def test_merge_writes_every_frame_marked_with_src_pixels(ws: Workspace):
    shutil.rmtree(ws.merged_dir, ignore_errors=True)
    info = model_info(ws.model_dir, "ref")
    assert info.family == "meshswap" and info.needs_mesh and info.resolution == 64
    rep = merge(ws, "ref", MergeOptions(export_alpha=True), NullReporter(), workers=2)
    frames = dst_frames(ws)
    assert rep.frames == len(frames) == rep.merged_now and rep.faces >= len(frames) - 2
    assert sorted(p.stem for p in ws.merged_dir.glob("*.png")) == [p.stem for p in frames]
    path = ws.merged_dir / f"{frames[0].stem}.png"
    with open(path, "rb") as f:
        mark = png_mark(f, path.stat().st_size, "frame")
    assert mark is not None and mark.source_type == TRAINED_ALGORITHMIC_MEDIA
    assert mark.model_id.startswith("ref@3:")
    for frame in frames[::6]:
        merged, src = _merged(ws, frame), cv2.imread(str(frame))
        alpha = merged[..., 3]
        marked = mark_frame(src, mark, index=int(frame.stem))
        # outside the mask: the frame's own pixels plus the watermark, whose strength follows
        # the texture (blurred over about 3 cells), so next to the new face it may differ more
        r = int(np.ceil(3 * cell_size(alpha.shape[0])))
        near = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((2 * r + 1,) * 2)) > 0
        diff = np.abs(merged[..., :3].astype(int) - marked)
        assert diff[~near].max() <= 1 and (diff[~near] > 0).mean() < 0.02
        assert diff[near & (alpha == 0)].max() <= MAX_AMP
        inside = alpha > 128
        assert inside.sum() > 500
        assert np.abs(merged[..., :3][inside].astype(int) - src[inside]).mean() > 2


@pytest.mark.slow
def test_the_model_mask_sits_on_the_dst_face(ws: Workspace):
    """The warp-only model's mask is the hull of its target mesh, built from dst's mesh in
    the crop: it must cover dst's face where the landmark hull does (a mesh in the wrong
    coordinates would put it elsewhere or nowhere)."""
    frames = dst_frames(ws)

    def alpha(mask: str) -> np.ndarray:
        merge(ws, "warp", MergeOptions(mode="overlay", mask=mask, export_alpha=True, blur=-1,
                                       color="none", smooth=0),
              NullReporter(), frames_spec="5-6", workers=1)
        return np.stack([_merged(ws, f)[..., 3] > 0 for f in frames[4:6]])

    model, hull = alpha("learned"), alpha("dst")
    iou = (model & hull).sum() / (model | hull).sum()
    assert iou > 0.6, iou
    # the warped face is src's: inside the hull it differs from dst's own pixels
    merged, src = _merged(ws, frames[5]), cv2.imread(str(frames[5]))
    inside = merged[..., 3] == 255
    assert np.abs(merged[..., :3][inside].astype(int) - src[inside]).mean() > 3


@pytest.mark.slow
def test_bf16_prediction_is_close_to_fp32(ws: Workspace):
    faces, meshes, poses = _batch(ws)
    exact, mask = load_predictor(ws.model_dir, "ref", "cpu").predict(faces, meshes, poses)
    fast, fast_mask = load_predictor(ws.model_dir, "ref", "cpu", "bf16").predict(
        faces, meshes, poses)
    assert exact.shape == fast.shape == faces.shape and exact.dtype == np.float32
    assert 0 < np.abs(fast - exact).max() < 0.1 and cv2.PSNR(fast, exact, 1.0) > 35
    assert mask is not None and fast_mask is not None and np.array_equal(mask, fast_mask)


def _batch(ws: Workspace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two dst faces as the merger hands them to the model: crops, crop meshes, poses."""
    frames, by_frame = dst_frames(ws)[:2], dst_faces(ws)
    jobs = face_jobs(frames, by_frame, 0, 25, meshes=True)
    crops, meshes, poses = [], [], []
    for p in frames:
        job = jobs[p.name][0]
        assert job.mesh is not None
        m = face_transform(job.landmarks, "full", 64, job.yaw)
        crops.append(cv2.warpAffine(cv2.imread(str(p)), m, (64, 64), flags=cv2.INTER_CUBIC))
        s = np.sqrt(abs(np.linalg.det(m[:, :2])))
        meshes.append(np.c_[transform_points(job.mesh[:, :2], m), job.mesh[:, 2] * s])
        poses.append((job.yaw, job.pitch))
    return (np.stack(crops).astype(np.float32) / 255, np.stack(meshes).astype(np.float32),
            np.array(poses, np.float32))


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "mask", "color"),
                         [(m, "learned*dst", "rct") for m in MODES]
                         + [("overlay", k, "none") for k in MASK_MODES]
                         + [("seamless", "learned*dst", c) for c in COLORS])
def test_every_mode_mask_and_colour_runs(ws: Workspace, mode: str, mask: str, color: str):
    frame = dst_frames(ws)[2]
    merge(ws, "ref", MergeOptions(mode=mode, mask=mask, color=color, export_alpha=True),
          NullReporter(), frames_spec=frame.stem, workers=1)
    merged, src = _merged(ws, frame), cv2.imread(str(frame))
    alpha = merged[..., 3]
    assert 500 < (alpha > 0).sum() < alpha.size / 2
    if mode == "raw":  # the face alone on black (plus the faint watermark)
        assert merged[0, 0, 3] == 0 and merged[0, 0, :3].max() <= 4
    else:
        assert 0 < np.abs(merged[..., :3].astype(int) - src).mean() < 40


@pytest.mark.slow
def test_a_dst_face_without_a_mesh_is_one_line(ws: Workspace, tmp_path: Path):
    bare = Workspace(copy_workspace(ws.root, tmp_path / "bare"))
    path = sorted(bare.aligned_dir("dst").glob("*.jpg"))[3]
    meta = read_meta(path)
    meta.mesh = None  # as the dlib landmarker or a DeepFaceLab import leaves it
    update_meta(path, meta)
    assert_one_line_error(
        run_facelab("-w", bare.root, "merge", "--model-name", "warp"),
        f"face {meta.face_index} of frame {meta.source_filename}", "mesh landmarker")
    # a model that does not need meshes is not concerned: SAE merges as before (checked in
    # test_merge.py); this frame range without the face merges with meshswap too
    others = [p for p in dst_frames(bare) if p.name != meta.source_filename]
    rep = merge(bare, "warp", MergeOptions(), NullReporter(), frames_spec=others[0].stem,
                workers=1)
    assert rep.merged_now == 1
