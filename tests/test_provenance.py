"""Provenance: marked PNG/JPEG read back exactly, videos assembled from marked frames carry
the mark in every output format, `facelab verify` decides with the right exit code."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.provenance import (
    TRAINED_ALGORITHMIC_MEDIA,
    Mark,
    UnreadableFile,
    encode_marked,
    read_mark,
    read_video_mark,
    write_marked,
)
from facelab.provenance.mark import IPTC_DST
from facelab.provenance.verify import verify
from facelab.provenance.xmp import build_xmp, parse_xmp
from facelab.video.assemble import AssembleOptions, assemble
from facelab.video.extract import ExtractOptions, extract_frames
from facelab.video.formats import FORMATS
from facelab.workspace import Workspace
from tests.conftest import data_file, put_video, run_facelab

PNG = ExtractOptions(fmt="png")  # dst as frame images: the route these tests read

MODEL = "quick96:ab12cd34"
N = 4  # frames per test video


@pytest.fixture(scope="module")
def mark() -> Mark:
    return Mark.synthetic(MODEL)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.imread(str(data_file("images/astronaut.png")))


def test_mark_fields(mark: Mark):
    assert mark.source_type == TRAINED_ALGORITHMIC_MEDIA
    assert (mark.tool, mark.version, mark.model_id) == ("facelab", "0.1.0", MODEL)
    assert mark.created.endswith("+00:00") and mark.is_synthetic


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_image_round_trip(tmp_path: Path, astronaut: np.ndarray, mark: Mark, ext: str):
    path = tmp_path / f"frame{ext}"
    write_marked(path, astronaut, mark)
    assert read_mark(path) == mark
    # the pixels are exactly what OpenCV encodes without a mark
    ok, plain = cv2.imencode(ext, astronaut)
    assert ok
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back, cv2.imdecode(plain, cv2.IMREAD_UNCHANGED))
    if ext == ".png":
        assert np.array_equal(back, astronaut)
    # marking again replaces the mark: one XMP, the new one
    again = Mark.synthetic("sae:00000000")
    data = encode_marked(ext, back, again)
    key = b"XML:com.adobe.xmp" if ext == ".png" else b"http://ns.adobe.com/xap/1.0/\0"
    assert data.count(key) == 1
    path.write_bytes(data)
    assert read_mark(path) == again


def test_encode_png_is_lossless_marked_and_smaller(mark: Mark):
    """The merge's PNG writer: every layout reads back exactly (OpenCV and Pillow), the mark
    is found, and a video frame is smaller than OpenCV's fastest PNG (Up rows against Sub
    and run-length: 29 % smaller on this frame)."""
    import io

    import av
    from PIL import Image

    from facelab.provenance.png import encode_png, png_mark

    with av.open(str(data_file("pexels/woman_pose_variety.mp4"))) as video:
        frame = next(video.decode(video=0)).to_ndarray(format="bgr24")  # 640×360
    alpha = np.tile(np.arange(frame.shape[1], dtype=np.uint8), (frame.shape[0], 1))
    for image in (frame, cv2.merge([frame, alpha]), alpha):
        data = encode_png(image, mark)
        assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8),
                                           cv2.IMREAD_UNCHANGED), image)
        rgb = image if image.ndim == 2 else cv2.cvtColor(
            image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
        assert png_mark(io.BytesIO(data), len(data), "frame") == mark
        assert data.endswith(b"IEND\xaeB`\x82")  # what a resume checks a frame ends with
    assert png_mark(io.BytesIO(encode_png(frame)), len(encode_png(frame)), "frame") is None
    assert len(encode_png(frame)) < 0.9 * len(cv2.imencode(".png", frame)[1])
    with pytest.raises(ValueError):
        encode_png(frame.astype(np.float32))


def test_pillow_sees_our_xmp(tmp_path: Path, astronaut: np.ndarray, mark: Mark):
    """Another reader finds the packet where the standards put it."""
    from PIL import Image
    for ext in (".png", ".jpg"):
        write_marked(tmp_path / f"f{ext}", astronaut, mark)
        with Image.open(tmp_path / f"f{ext}") as im:
            xmp = im.info["xmp"]
        assert parse_xmp(xmp if isinstance(xmp, bytes) else xmp.encode()) == mark


def test_unmarked_images(tmp_path: Path):
    assert read_mark(data_file("images/astronaut.png")) is None
    assert read_mark(data_file("images/grace_hopper.jpg")) is None


def test_hostile_xmp_is_not_parsed(mark: Mark):
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><x>&b;</x>')
    assert parse_xmp(bomb) is None
    assert parse_xmp(b"\xff\xfe not xml") is None
    assert parse_xmp(build_xmp(mark)) == mark


@pytest.mark.slow
@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_damaged_files_never_crash(tmp_path: Path, astronaut: np.ndarray, mark: Mark,
                                   ext: str):
    """Truncations and flipped bytes give a mark, None or UnreadableFile: nothing else."""
    data = encode_marked(ext, astronaut[:64, :64], mark)
    rng = np.random.default_rng(0)
    path = tmp_path / f"bad{ext}"
    cases = [data[:n] for n in rng.integers(0, len(data), 60)]
    for pos in rng.integers(0, min(len(data), 2000), 200):
        b = bytearray(data)
        b[pos] ^= 0xFF
        cases.append(bytes(b))
    unreadable = 0
    for case in cases:
        path.write_bytes(case)
        try:
            got = read_mark(path)
        except UnreadableFile:
            unreadable += 1
            continue
        assert got is None or isinstance(got, Mark)
    assert unreadable > 0
    path.write_bytes(data[: len(data) // 2])  # cut short: clearly unreadable
    with pytest.raises(UnreadableFile):
        read_mark(path)


# --- videos ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def marked_ws(tmp_path_factory, mark: Mark) -> Workspace:
    """dst = GRID speaker B (with its audio); merged/ = its first N frames, marked."""
    root = tmp_path_factory.mktemp("prov") / "ws"
    root.mkdir()
    put_video(root, "dst", data_file("grid/speaker_b.mpg"))
    ws = Workspace(root)
    extract_frames(ws, "dst", opts=PNG)
    ws.merged_dir.mkdir(exist_ok=True)
    for p in sorted(ws.frames_dir("dst").glob("*.png"))[:N]:
        write_marked(ws.merged_dir / p.name, cv2.imread(str(p)), mark)
    return ws


@pytest.fixture(scope="module")
def assembled(marked_ws: Workspace) -> dict[str, Path]:
    """Each output format assembled from the marked frames by the real CLI (with audio)."""
    outs = {}
    for fmt, spec in FORMATS.items():
        outs[fmt] = marked_ws.root / f"result_{fmt}.{spec.ext}"
        res = run_facelab("-w", marked_ws.root, "video", "assemble", "--format", fmt,
                          "-o", outs[fmt], "-q")
        assert res.rc == 0, res.err
    return outs


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_video_formats_carry_the_mark(marked_ws: Workspace, assembled: dict[str, Path],
                                      mark: Mark, fmt: str):
    assert read_video_mark(assembled[fmt]) == mark
    # a rerun finds it up to date: the settings tag in `comment` still reads back
    opts = AssembleOptions(format=fmt, output=assembled[fmt])
    assert assemble(marked_ws, opts).skipped


@pytest.mark.slow
def test_verify_marked_videos(assembled: dict[str, Path]):
    res = run_facelab("verify", *assembled.values())
    assert res.rc == 0, res.out + res.err
    assert res.out.count("marked synthetic") == len(FORMATS)
    assert res.out.count("container metadata: trainedAlgorithmicMedia") == len(FORMATS)
    assert res.out.count(f"model {MODEL}") == len(FORMATS)


def test_unmarked_frames_give_an_unmarked_video_then_marking_rebuilds(
        marked_ws: Workspace, tmp_path: Path, mark: Mark):
    plain = tmp_path / "plain"
    plain.mkdir()
    for p in sorted(marked_ws.frames_dir("dst").glob("*.png"))[:N]:
        shutil.copy2(p, plain / p.name)
    out = tmp_path / "result.mp4"
    opts = AssembleOptions(frames_dir=plain, output=out, audio=False)
    assemble(marked_ws, opts)
    assert read_video_mark(out) is None
    # the frames get marked but look older than the result: it is still rebuilt with the mark
    before = out.stat().st_mtime - 10
    for p in plain.iterdir():
        write_marked(p, cv2.imread(str(p)), mark)
        os.utime(p, (before, before))
    rep = assemble(marked_ws, opts)
    assert not rep.skipped and rep.mark == mark
    assert read_video_mark(out) == mark


def test_a_foreign_mark_that_is_not_synthetic(tmp_path: Path, astronaut: np.ndarray):
    camera = Mark(IPTC_DST + "digitalCapture", "SomeCamera", "1.0")
    write_marked(tmp_path / "photo.jpg", astronaut, camera)
    verdict = verify(tmp_path / "photo.jpg")
    assert [f.mark for f in verdict.findings] == [camera] and not verdict.synthetic
    assert verdict.findings[0].where == "JPEG XMP"


@pytest.mark.slow
def test_verify_exit_codes(marked_ws: Workspace, assembled: dict[str, Path], tmp_path: Path):
    marked = sorted(marked_ws.merged_dir.glob("*.png"))[0]
    originals = [data_file("grid/speaker_a_1.mpg"), data_file("pexels/woman_pose_variety.mp4")]
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    missing = tmp_path / "missing.mp4"
    cut = tmp_path / "cut.mp4"  # a marked video cut short: its index (moov) is gone
    cut.write_bytes(assembled["mp4"].read_bytes()[:4000])

    res = run_facelab("verify", marked, *originals)
    assert res.rc == 1, res.err  # the clips as recorded carry no mark; the worst case wins
    assert res.out.count("no provenance mark") == 2 and not res.err.strip()
    assert "PNG XMP: trainedAlgorithmicMedia" in res.out and MODEL in res.out

    res = run_facelab("verify", marked, originals[0], text, missing, cut)
    assert res.rc == 2
    errors = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(errors) == 3 and "Traceback" not in res.err
    assert "notes.txt" in errors[0] and "missing.mp4" in errors[1] and "cut.mp4" in errors[2]
    assert "marked synthetic" in res.out and "no provenance mark" in res.out
