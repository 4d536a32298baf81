"""Resume after a crash or a kill: a merged frame counts as done only when its PNG is
complete and it was made with the settings asked for now.

Merged frames are renamed into place without a per-file fsync in the worker (the driver
syncs them afterwards), so a power cut can leave a frame empty or cut short under its final
name; the rerun must redo it rather than skip it. A re-merge with new settings that is
killed part-way leaves frames made with either settings; the rerun must finish the job.

The workspace here is synthetic and small (7 frames of 128×96, one face each at the mean
face's landmarks, a randomly initialised tiny SAE model saved by the real checkpoint code),
so a real CLI merge of it takes seconds."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.faces.faceimage import FaceMeta, write_face
from facelab.faces.facetype import MEAN_FACE_68
from facelab.locks import Busy
from facelab.merge.merger import merge
from facelab.merge.options import MergeOptions
from facelab.merge.resume import complete_png, frame_done
from facelab.progress import NullReporter
from facelab.provenance.mark import Mark
from facelab.provenance.png import png_bytes_with_mark
from facelab.workspace import Workspace
from tests.conftest import ROOT, lock_holder

FRAMES = 7  # fewer than 8: the CLI merges them in its own process (no pool to start)
A = MergeOptions()  # the settings of the first merge
# the re-merge's: visibly different; no temporal smoothing, so that a frame made in a pass
# over some frames (--frames) is the one a pass over all makes
B = MergeOptions(mode="overlay", mask="dst", erode=5, smooth=0)
B_FLAGS = ["--mode", "overlay", "--mask", "dst", "--erode", "5", "--smooth", "0"]


def tiny_merge_workspace(root: Path, frames: int = FRAMES) -> Workspace:
    """dst frames, their aligned faces (metadata only matters to merge) and a model `m`."""
    from facelab.train import checkpoint
    from facelab.train.models import build_model, preset
    from facelab.train.saved import fixed_of

    ws = Workspace(root)
    ws.init()
    w, h = 128, 96
    base = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8),
                            (0, 0), 3)
    for i in range(1, frames + 1):
        frame = np.roll(base, i, axis=1)
        cv2.imwrite(str(ws.frames_dir("dst") / f"{i:05d}.png"), frame)
        lm = MEAN_FACE_68 * 40 + (44 + i * 0.5, 25)
        meta = FaceMeta(face_type="whole-face", size=64, landmarks=lm, source_landmarks=lm,
                        frame_to_face=np.eye(2, 3), source_filename=f"{i:05d}.png",
                        source_rect=(40, 20, 90, 80), source_size=(w, h), face_index=0,
                        yaw=0.0, pitch=0.0, roll=0.0, detector="synthetic", score=0.9,
                        mask_polys=[], original_name=f"{i:05d}_0.jpg", extra={})
        write_face(ws.aligned_dir("dst") / f"{i:05d}_0.jpg", frame[:64, :64].copy(), meta)
    import torch

    torch.manual_seed(0)
    mo = preset("sae", ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=8, resolution=64)
    checkpoint.save(ws.model_dir, "m", build_model(mo), None,
                    {"iteration": 1, "options": asdict(mo), "family": "sae"},
                    arch=mo.arch, fixed_options=fixed_of(mo))
    return ws


def pixels(ws: Workspace) -> dict[str, np.ndarray]:
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.int16)
            for p in sorted(ws.merged_dir.glob("*.png"))}


def _merge(ws: Workspace, opts: MergeOptions, **kw: object):
    return merge(ws, "m", opts, NullReporter(), workers=1, precision="fp32", **kw)


@pytest.fixture(scope="module")
def merged(tmp_path_factory) -> tuple[Workspace, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A workspace merged with settings A, and every frame's pixels with A and with B."""
    root = tmp_path_factory.mktemp("resume")
    ws = tiny_merge_workspace(root / "ws")
    other = Workspace(shutil.copytree(ws.root, root / "other"))
    _merge(ws, A)
    _merge(other, B)
    ref_a, ref_b = pixels(ws), pixels(other)
    assert len(ref_a) == FRAMES and all((np.abs(ref_a[k] - ref_b[k]) > 3).sum() > 500
                                        for k in ref_a)
    return ws, ref_a, ref_b


def _dead_part(target: Path) -> Path:
    """A temporary file (fsutil.temp_sibling's name) left by a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    path = target.with_name(f".{target.stem}.part-{proc.pid}{target.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a png")
    return path


def _copy(merged, tmp_path: Path) -> Workspace:
    return Workspace(shutil.copytree(merged[0].root, tmp_path / "ws"))


def _all_made_with(ws: Workspace, ref: dict[str, np.ndarray]) -> None:
    now = pixels(ws)
    assert sorted(now) == sorted(ref)
    wrong = [k for k in ref if np.abs(now[k] - ref[k]).max() > 1]
    assert not wrong, f"frames not made with the settings asked for: {wrong}"


def test_only_a_complete_png_counts_as_done(tmp_path: Path):
    out = tmp_path / "merged"
    out.mkdir()
    frame = tmp_path / "00007.png"
    image = np.random.default_rng(0).integers(0, 255, (36, 64, 3), np.uint8)
    data = png_bytes_with_mark(cv2.imencode(".png", image)[1].tobytes(), Mark.synthetic("m@1:x"))
    merged = out / "00007.png"
    assert not frame_done(frame, out, None, None)  # missing
    merged.write_bytes(data)
    assert frame_done(frame, out, None, None)
    merged.write_bytes(data[:-40])  # cut short
    assert not frame_done(frame, out, None, None)
    merged.write_bytes(b"")  # empty, as delayed allocation leaves it
    assert not frame_done(frame, out, None, None)
    merged.write_bytes(data)
    masks = tmp_path / "merged_mask"
    masks.mkdir()
    assert not frame_done(frame, out, masks, None)  # its mask is missing
    (masks / "00007.png").write_bytes(cv2.imencode(".png", image[..., 0])[1].tobytes())
    assert frame_done(frame, out, masks, None)


def test_a_partial_remerge_with_new_settings_is_finished_by_the_rerun(merged, tmp_path):
    """A pass over some frames with new settings (--frames, as a kill would leave it), then
    the full rerun: every frame ends up made with the new settings; a killed merge's
    temporary files are gone."""
    ws = _copy(merged, tmp_path)
    stale = [_dead_part(ws.merged_dir / "00003.png"), _dead_part(ws.merged_mask_dir / "00003.png")]
    assert _merge(ws, B, frames_spec="1-3").merged_now == 3
    assert not any(p.exists() for p in stale)
    rep = _merge(ws, B)
    assert (rep.merged_now, rep.skipped) == (FRAMES - 3, 3)
    _all_made_with(ws, merged[2])
    assert _merge(ws, B).merged_now == 0  # finished: nothing left to do
    assert _merge(ws, A, frames_spec="2").merged_now == 1  # back to A for one frame
    assert _merge(ws, B).merged_now == 1  # and only that one is made again


def test_a_killed_remerge_is_finished_by_the_rerun(merged, tmp_path):
    """`facelab merge` with new settings, SIGKILLed once it has rewritten some frames; the
    same command again makes every frame with the new settings."""
    ws = _copy(merged, tmp_path)
    before = {p.name: p.stat().st_ino for p in ws.merged_dir.glob("*.png")}
    cmd = [sys.executable, "-m", "facelab", "-w", str(ws.root), "-q", "merge",
           "--model-name", "m", "--precision", "fp32", *B_FLAGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and proc.poll() is None:
            now = {p.name: p.stat().st_ino for p in ws.merged_dir.glob("*.png")}
            if any(now.get(k) != v for k, v in before.items()):  # a frame was replaced
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)  # the killed run's workers end with it (test_executor.py)
    # (a worker killed mid-write leaves its temp file, .NAME.part-PID.png: the rerun's)
    redone = [p.name for p in ws.merged_dir.glob("*.png")
              if not p.name.startswith(".") and p.stat().st_ino != before[p.name]]
    assert 0 < len(redone) < FRAMES, "the kill did not land part-way"
    rep = _merge(ws, B)
    assert rep.merged_now >= FRAMES - len(redone)
    _all_made_with(ws, merged[2])
    assert not list(ws.merged_dir.glob(".*.part-*"))
    assert all(complete_png(p) for p in ws.merged_dir.glob("*.png"))


def test_one_merge_at_a_time(merged, tmp_path):
    """A second merge of the workspace is refused in one line naming the first."""
    ws = _copy(merged, tmp_path)
    with lock_holder(ws.root, "merge") as proc, \
            pytest.raises(Busy, match=f"merge of this workspace is in use by .*{proc.pid}"):
        _merge(ws, B)
    assert _merge(ws, B).merged_now == FRAMES  # the holder is gone: the lock is free
