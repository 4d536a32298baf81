"""`facelab video denoise dst`: less noise, sharp edges, originals kept byte-exact and
restorable, no compounding across factors, resume after a crash, one-line errors."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.video import denoise as dn
from facelab.video.extract import ExtractOptions, extract_frames
from facelab.workspace import Workspace, list_images
from tests.conftest import (
    assert_one_line_error,
    data_file,
    put_video,
    run_facelab,
    run_in_process,
)

PNG = ExtractOptions(fmt="png")  # dst as frame images: the route these tests read

N_FRAMES = 20


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in list_images(folder)}


def pixels(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def edge_ratio(clean: np.ndarray, out: np.ndarray) -> float:
    """Mean gradient magnitude of `out` at the clean frame's strongest 2% edges, vs clean."""
    def grad(img: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    gc = grad(clean)
    edges = gc >= np.percentile(gc, 98)
    return float(grad(out)[edges].mean() / gc[edges].mean())


@pytest.fixture(scope="module")
def grid_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data_dst/ of the GRID clip, extracted once; tests copy its first N_FRAMES frames."""
    ws = tmp_path_factory.mktemp("grid") / "ws"
    ws.mkdir()
    put_video(ws, "dst", data_file("grid/speaker_b.mpg"))
    extract_frames(Workspace(ws), "dst", opts=PNG)
    return ws / "data_dst"


@pytest.fixture
def ws(tmp_path: Path, grid_frames: Path) -> Workspace:
    w = Workspace(tmp_path / "ws")
    w.init()
    for p in list_images(grid_frames)[:N_FRAMES]:
        shutil.copyfile(p, w.frames_dir("dst") / p.name)
    return w


@pytest.mark.slow
@pytest.mark.parametrize("factor,min_gain_db", [(5, 3.0), (20, 6.0)])
def test_noise_reduced_edges_kept(ws: Workspace, factor: int, min_gain_db: float) -> None:
    """Gaussian noise at the level the factor targets (sigma 1 + f/2) loses several dB of
    error; the strongest edges keep over 80% of their gradient (a 1.5 px blur keeps ~42%)."""
    dst = ws.frames_dir("dst")
    rng = np.random.default_rng(0)
    clean = {}
    for p in list_images(dst):
        clean[p.name] = pixels(p)
        noise = rng.normal(0, 1 + factor / 2, clean[p.name].shape)
        cv2.imwrite(str(p), np.clip(clean[p.name] + noise, 0, 255).astype(np.uint8))
    noisy = hashes(dst)
    rep = dn.denoise_frames(ws, "dst", factor)
    assert (rep.frames_total, rep.frames_denoised) == (N_FRAMES, N_FRAMES)
    assert hashes(dst / dn.ORIGINALS) == noisy
    for name in list(clean)[::6]:
        before = cv2.PSNR(clean[name], pixels(dst / dn.ORIGINALS / name))
        after = cv2.PSNR(clean[name], pixels(dst / name))
        assert after >= before + min_gain_db, (name, before, after)
        assert edge_ratio(clean[name], pixels(dst / name)) > 0.8


def test_strength_rises_with_factor(grid_frames: Path) -> None:
    image = pixels(list_images(grid_frames)[0])
    change = [np.abs(dn.denoise_image(image, f).astype(int) - image).mean()
              for f in range(dn.MIN_FACTOR, dn.MAX_FACTOR + 1)]
    assert all(a <= b for a, b in itertools.pairwise(change)), change
    assert change[0] < change[4] < change[9] < change[19], change


@pytest.mark.slow
def test_rerun_other_factor_force_and_undo(ws: Workspace) -> None:
    dst = ws.frames_dir("dst")
    originals = hashes(dst)
    rep = dn.denoise_frames(ws, "dst", 5)
    assert rep.frames_denoised == N_FRAMES and not rep.skipped
    assert json.loads((dst / dn.STATE).read_text())["done"] is True
    at5 = {n: pixels(dst / n) for n in originals}
    assert hashes(dst / dn.ORIGINALS) == originals
    assert all(hashes(dst)[n] != h for n, h in originals.items())

    mtimes = {p.name: p.stat().st_mtime_ns for p in list_images(dst)}
    rep = dn.denoise_frames(ws, "dst", 5)
    assert rep.skipped and rep.frames_denoised == 0
    assert {p.name: p.stat().st_mtime_ns for p in list_images(dst)} == mtimes

    dn.denoise_frames(ws, "dst", 20)
    name = next(iter(originals))
    want = dn.denoise_image(pixels(dst / dn.ORIGINALS / name), 20)
    assert np.array_equal(pixels(dst / name), want)  # from the original, not the f5 output
    dn.denoise_frames(ws, "dst", 5)  # back to 5: identical to the first run, no compounding
    assert all(np.array_equal(pixels(dst / n), at5[n]) for n in originals)
    assert dn.denoise_frames(ws, "dst", 5, force=True).frames_denoised == N_FRAMES

    undo = dn.undo_denoise(ws, "dst")
    assert undo.restored == N_FRAMES
    assert hashes(dst) == originals
    assert not (dst / dn.ORIGINALS).exists() and not (dst / dn.STATE).exists()
    assert undo.trashed_to is not None
    trashed = undo.trashed_to / "data_dst"
    assert len(list_images(trashed)) == N_FRAMES and (trashed / dn.STATE).is_file()
    with pytest.raises(FacelabError, match="Nothing to undo"):
        dn.undo_denoise(ws, "dst")


class Crash(Exception):
    pass


def test_resume_after_interruption(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    dst = ws.frames_dir("dst")
    originals = hashes(dst)
    names = sorted(originals)
    real, calls, lock = dn.denoise_image, [0], threading.Lock()

    def crash_on_8th(image: np.ndarray, factor: int) -> np.ndarray:
        with lock:
            calls[0] += 1
            if calls[0] == 8:
                raise Crash
        return real(image, factor)

    monkeypatch.setattr(dn, "denoise_image", crash_on_8th)
    with pytest.raises(Crash):
        dn.denoise_frames(ws, "dst", 7, workers=2)
    monkeypatch.setattr(dn, "denoise_image", real)

    state = json.loads((dst / dn.STATE).read_text())
    assert state["done"] is False and state["factor"] == 7
    done = names.index(state["done_through"]) + 1
    assert 0 < done < N_FRAMES

    def recoverable() -> dict[str, str]:
        return {n: sha256(dst / dn.ORIGINALS / n if (dst / dn.ORIGINALS / n).exists()
                          else dst / n) for n in names}
    assert recoverable() == originals

    # a kill -9 between moving an original away and renaming its output into place
    last = names[-1]
    os.replace(dst / last, dst / dn.ORIGINALS / last)
    (dst / f".{Path(last).stem}{dn._PART}.png").write_bytes(b"half a png")
    assert recoverable() == originals

    rep = dn.denoise_frames(ws, "dst", 7, workers=2)
    assert rep.frames_resumed == done and rep.frames_denoised == N_FRAMES - done
    assert json.loads((dst / dn.STATE).read_text())["done"] is True
    assert hashes(dst / dn.ORIGINALS) == originals
    assert [p.name for p in list_images(dst)] == names
    assert not list(dst.glob(f".*{dn._PART}*"))
    for n in names:
        assert np.array_equal(pixels(dst / n), real(pixels(dst / dn.ORIGINALS / n), 7)), n
    assert dn.undo_denoise(ws, "dst").restored == N_FRAMES
    assert hashes(dst) == originals


def test_bad_input(tmp_path: Path, ws: Workspace) -> None:
    with pytest.raises(FacelabError, match="No workspace"):
        dn.denoise_frames(Workspace(tmp_path / "nope"))
    empty = Workspace(tmp_path / "empty")
    empty.init()
    with pytest.raises(FacelabError, match="facelab video extract dst"):
        dn.denoise_frames(empty)
    with pytest.raises(FacelabError, match="Nothing to undo"):
        dn.undo_denoise(empty)
    for factor in (0, 21):
        with pytest.raises(FacelabError, match="1 to 20"):
            dn.denoise_frames(ws, "dst", factor)
    with pytest.raises(FacelabError, match="Only dst"):
        dn.denoise_frames(ws, "src")
    (ws.frames_dir("dst") / "frames.json").write_text('{"inputs": [{"complete": false}]}')
    with pytest.raises(FacelabError, match="interrupted"):
        dn.denoise_frames(ws)
    assert not (ws.frames_dir("dst") / dn.ORIGINALS).exists()


@pytest.mark.slow
def test_cli(workspace: Path, grid_b: Path) -> None:
    put_video(workspace, "dst", grid_b)
    res = run_facelab("-w", workspace, "video", "denoise", "dst")
    assert_one_line_error(res, "no dst frames", "facelab video extract dst")
    assert run_in_process("-w", workspace, "-q", "video", "extract", "dst", "--frames",
                          "png").rc == 0
    dst = workspace / "data_dst"
    originals = hashes(dst)

    res = run_facelab("-w", workspace, "video", "denoise", "dst", "-q")
    assert res.rc == 0, res
    assert "denoised 75 of 75 frames at factor 5" in res.out
    res = run_in_process("-w", workspace, "video", "denoise", "dst")
    assert res.rc == 0 and "already denoised at factor 5; --force redoes it" in res.out
    assert_one_line_error(run_in_process("-w", workspace, "video", "denoise", "dst",
                                         "--factor", "21"), "--factor", "1 to 20")
    assert_one_line_error(run_in_process("-w", workspace, "video", "denoise", "src"), "dst")
    assert_one_line_error(run_in_process("video", "denoise", "dst", "-w", workspace / "nope"),
                          "workspace")

    res = run_in_process("-w", workspace, "video", "denoise", "dst", "--undo")
    assert res.rc == 0 and "Restored 75 original dst frames" in res.out
    assert hashes(dst) == originals
    assert_one_line_error(run_in_process("-w", workspace, "video", "denoise", "dst",
                                         "--undo"),
                          "nothing to undo")
