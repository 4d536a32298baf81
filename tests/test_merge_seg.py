"""The segmenter's mask modes in the merge (seg-dst, seg-prd and their products), seg-dst
smoothed over time, on real GRID frames with a tiny model (its quality is not what is
tested: an occluder's pixels must stay dst's whatever face is drawn).

Where only composition or bookkeeping is tested, any network will do: the shipped one when
it is installed, else a seeded random one. Where the mask's quality matters (a painted
occluder left in front), only the shipped network counts: skipped, saying so, without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from facelab.errors import FacelabError
from facelab.eval import occlusion
from facelab.faces.facetype import FaceType
from facelab.merge.compose import Placed, frame_mask, roi_of
from facelab.merge.jobs import FaceJob, dst_faces, dst_frames, face_jobs
from facelab.merge.merger import merge
from facelab.merge.options import MASK_MODES, MergeOptions
from facelab.merge.predictor import load_predictor
from facelab.merge.segmasks import FrameReader, add_segments, segmenter_paths
from facelab.merge.stream import VideoOutput
from facelab.merge.worker import compose_frame, predict_faces
from facelab.progress import NullReporter
from facelab.segment import shipped
from facelab.segment.infer import WINDOW, smoothed
from facelab.segment.network import SegNet, save_segmenter
from facelab.train.trainer import TrainOptions, train
from facelab.video.source import open_frames
from facelab.workspace import Workspace, list_images
from tests.conftest import assert_one_line_error, copy_workspace, run_facelab
from tests.test_merge import TINY

HAS_SHIPPED = shipped.SHIPPED.with_suffix(".safetensors").is_file()
NO_SHIPPED = "the generic segmenter (segment/weights/generic.safetensors) is not installed"


def _arbitrary_net() -> SegNet:
    """A small seeded random network whose BatchNorm statistics are set to amplify, so it
    answers with sharp masks (blobs) that follow the image: an arbitrary segmenter."""
    torch.manual_seed(18)
    net = SegNet(96, (8, 8, 16, 16, 16)).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(0.03)
    return net


def _any_net() -> SegNet:
    """The shipped network, else an arbitrary one (for what any network must do)."""
    return shipped.load_shipped()[0] if HAS_SHIPPED else _arbitrary_net()


@pytest.fixture(scope="module")
def ws(tmp_path_factory, aligned_faces: Path) -> Workspace:
    """The session's GRID workspace (dst as PNG frames) with a tiny model `m`."""
    w = Workspace(copy_workspace(aligned_faces, tmp_path_factory.mktemp("seg") / "ws"))
    train(w, TrainOptions(model_name="m", preset="sae", overrides=dict(TINY), batch_size=4,
                          target_iteration=2, preview_every=0, workers=0, precision="fp32"),
          NullReporter())
    return w


def _dst(ws: Workspace) -> list[Path]:
    return dst_frames(ws)


def _read(ws: Workspace, paths: list[Path]) -> list[np.ndarray]:
    """dst frames as decoded (PNG frames or dst kept in its video)."""
    source = open_frames(ws, "dst")
    try:
        return [source.read(p.name) for p in paths]
    finally:
        source.close()


def _placed(ws: Workspace, names: list[Path], frames: list[np.ndarray], net: SegNet
            ) -> list[list[Placed]]:
    """The merge's placed faces of `frames` with both segmenter masks (net on each)."""
    pred = load_predictor(ws.model_dir, "m", "cpu", "fp32")
    jobs = face_jobs(_dst(ws), dst_faces(ws), 4, 25.0)
    placed = predict_faces(pred, [(p, jobs[p.name]) for p in names], frames)
    for ps, frame in zip(placed, frames, strict=True):
        add_segments(ps, frame, MergeOptions(mask="seg-prd*seg-dst"),
                     {"seg-dst": net, "seg-prd": net})
    return placed


def _full_mask(p: Placed, mask: str, shape: tuple[int, ...]) -> np.ndarray:
    """Mode `mask`'s mask of face `p` over the whole frame (as merge_face makes it)."""
    res = p.predicted.shape[0]
    roi = roi_of(p.frame_to_crop, res, shape)
    m, (x0, y0, x1, y1) = frame_mask(p, MergeOptions(mask=mask), p.predicted, p.frame_to_crop,
                                     roi, None)
    full = np.zeros(shape[:2], np.float32)
    full[y0:y1, x0:x1] = m
    return full


@pytest.mark.slow
def test_products_never_exceed_their_factors(ws: Workspace):
    names = _dst(ws)[10:13]
    frames = _read(ws, names)
    # any network will do; the shipped one rightly finds no face in what a model two
    # iterations old draws, which would leave seg-prd's products empty
    placed = _placed(ws, names, frames, _arbitrary_net())
    products = [m for m in MASK_MODES if "*" in m]
    assert {"seg-prd*seg-dst", "learned*seg-prd*seg-dst", "seg-dst*dst"} <= set(products)
    covered = dict.fromkeys(products, 0)
    for ps, frame in zip(placed, frames, strict=True):
        p = ps[0]
        singles = {part: _full_mask(p, part, frame.shape)
                   for m in products for part in m.split("*")}
        for m in products:
            product = _full_mask(p, m, frame.shape)
            covered[m] += int((product > 0.2).sum())
            for part in m.split("*"):  # a part warped from another origin (the dst hull's
                # box) rounds its 1/32-px steps differently: on an edge of slope ≤ 1/px
                # that moves it by 1/32 at most
                assert (product <= singles[part] + 1 / 32).all(), (m, part)
    assert all(n > 100 for n in covered.values()), covered  # the comparisons say something


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SHIPPED, reason=NO_SHIPPED)
def test_seg_dst_keeps_a_painted_occluder(ws: Workspace):
    """A dark microphone-like bar painted over the mouth of a real dst frame stays dst's
    pixels with seg-dst; the landmarks' hull (learned*dst) pastes the face over it."""
    names = _dst(ws)[20:21]
    frame = _read(ws, names)[0]
    lm = dst_faces(ws)[names[0].name][0].source_landmarks
    mouth = np.asarray(lm, np.float64)[48:68]
    (x0, y0), (x1, y1) = mouth.min(0), mouth.max(0)
    w = x1 - x0
    painted = frame.copy()
    bar = np.array([[x0 - 0.6 * w, y0 - 4], [x1 + 0.6 * w, y0 - 4], [x1 + 0.6 * w, y1 + 6],
                    [x0 - 0.6 * w, y1 + 6]])
    cv2.fillPoly(painted, [np.round(bar).astype(np.int32)], (45, 40, 38), cv2.LINE_AA)
    occ = occlusion.polygon_mask([bar], frame.shape)
    occ = cv2.erode(occ.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # no edge
    placed = _placed(ws, names, [painted], shipped.load_shipped()[0])[0]
    share = {}
    for mask in ("learned*dst", "seg-dst", "learned*seg-dst"):
        out, _, _ = compose_frame(painted, placed, MergeOptions(mask=mask, mode="overlay"),
                                  None, None)
        share[mask] = occlusion.kept_share([(painted, out, occ)])
    assert share["seg-dst"] >= 0.9 and share["learned*seg-dst"] >= 0.9, share
    assert share["learned*dst"] < 0.5, share  # the hull alone pastes over the bar


def test_bad_mask_values_and_a_missing_segmenter(tmp_path: Path, monkeypatch):
    with pytest.raises(FacelabError) as e:
        MergeOptions(mask="seg")
    assert str(e.value).startswith("--mask must be one of ") and "seg-dst" in str(e.value)
    with pytest.raises(FacelabError):
        MergeOptions(mask="seg-dst*seg-prd")  # products are listed, not any order
    monkeypatch.setattr(shipped, "SHIPPED", tmp_path / "nothing" / "generic")
    with pytest.raises(FacelabError, match="No generic segmenter ships"):
        segmenter_paths(Workspace(tmp_path), [MergeOptions(mask="seg-dst")])
    assert segmenter_paths(Workspace(tmp_path), [MergeOptions()]) == {}  # default: none


def test_cli_refuses_a_bad_mask(tmp_path: Path):
    res = run_facelab("-w", tmp_path, "merge", "--model-name", "m", "--mask", "seg-dest")
    assert_one_line_error(res, "--mask", "seg-dst")


def test_window_weights_track_and_gaps():
    a, b = np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32)
    raw = {(9, 0): b, (10, 0): a, (11, 0): b, (10, 1): b, (12, 0): b}
    # offsets -1 … 2 of track 0 (weights 2, 3, 2, 1; -2 missing): (2 + 2 + 1) / 8
    assert np.allclose(smoothed(raw, 10, 0), 5 / 8)
    assert np.allclose(smoothed(raw, 10, 1), 1.0)  # another track is not mixed in
    assert np.allclose(smoothed(raw, 10, 0, window=0), 0.0)
    with pytest.raises(KeyError):
        smoothed(raw, 10, 2)


def _images(paths: list[Path]):
    return (cv2.imread(str(p)) for p in paths)


def _masks(frames: list[Path], jobs: dict[str, list[FaceJob]], lo: int, hi: int, net: SegNet,
           context: bool = True) -> dict[int, np.ndarray]:
    """seg-dst masks of frames lo … hi - 1 read as one work item (as the merge's worker
    does), by position."""
    run = [(p, jobs[p.name]) for p in frames[lo:hi]]
    around = [(q, frames[q], jobs[frames[q].name]) for q in
              [*range(max(0, lo - WINDOW), lo), *range(hi, min(len(frames), hi + WINDOW))]]
    reader = FrameReader(run, list(range(lo, hi)), around if context else [],
                         [MergeOptions(mask="seg-dst")] * len(run), _images, net, 128,
                         FaceType.WHOLE_FACE)
    out = {}
    for i in range(0, hi - lo, 4):
        _, seg = reader.batch(i, min(4, hi - lo - i))
        assert seg is not None
        out.update({lo + i + k: m[0] for k, m in enumerate(seg)})
    return out


@pytest.mark.slow
def test_smoothed_masks_do_not_depend_on_where_an_item_starts(ws: Workspace):
    frames = _dst(ws)[:24]
    jobs = face_jobs(frames, dst_faces(ws), 4, 25.0)
    net = _any_net()
    whole = _masks(frames, jobs, 0, 24, net)
    cut = {**_masks(frames, jobs, 0, 10, net), **_masks(frames, jobs, 10, 24, net)}
    for pos in range(24):  # a batch of other faces rounds in the last float bit at most
        assert np.abs(whole[pos] - cut[pos]).max() < 1e-4, pos
    # without its context the frame at an item's edge would be smoothed differently
    edge = _masks(frames, jobs, 10, 14, net, context=False)[10]
    assert np.abs(edge - whole[10]).max() > 1e-3


@pytest.fixture(scope="module")
def video_ws(ws: Workspace, tmp_path_factory) -> Workspace:
    """`ws` with dst kept in its video (the default of `video extract`), the model copied
    and an arbitrary segmenter as dst's own (quality does not matter here)."""
    w = Workspace(copy_workspace(ws.root, tmp_path_factory.mktemp("segvideo") / "ws"))
    frames = w.frames_dir("dst")
    for p in [*list_images(frames), frames / "frames.json", w.video_json]:
        p.unlink()
    res = run_facelab("-w", w.root, "video", "extract", "dst")
    assert res.rc == 0, res.err
    save_segmenter(_arbitrary_net(), shipped.person_path(w, "dst"), {"note": "test"})
    return w


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


@pytest.mark.slow
def test_streamed_seg_dst_is_the_frames_route_and_resumes(video_ws: Workspace, tmp_path: Path):
    opts = MergeOptions(mask="learned*seg-dst")
    out = tmp_path / "lossless.mp4"
    merge(video_ws, "m", opts, NullReporter(), device="cpu", workers=1, to_video=True,
          video=VideoOutput(format="mp4-lossless", output=out))
    merge(video_ws, "m", opts, NullReporter(), device="cpu", workers=1, to_video=False)
    pngs = list_images(video_ws.merged_dir)
    streamed = _decoded(out)
    assert len(streamed) == len(pngs) == 75
    for frame, png in zip(streamed, pngs, strict=True):
        assert np.array_equal(frame, cv2.imread(str(png))), png.name
    # frames across the first segment's end (frame 16) made again alone: the same frames,
    # up to a float rounding of a batch of other faces
    for png in pngs[13:19]:
        png.unlink()
    report = merge(video_ws, "m", opts, NullReporter(), device="cpu", workers=1,
                   to_video=False)
    assert report.merged_now == 6
    for i in range(13, 19):
        again = cv2.imread(str(pngs[i])).astype(int)
        diff = np.abs(again - streamed[i])
        assert diff.max() <= 2 and (diff == 0).mean() > 0.999, pngs[i].name


def test_occlusion_measure_counts_dst_pixels_inside_the_occluders(tmp_path: Path):
    rng = np.random.default_rng(0)
    dst = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    result = dst.copy()
    result[20:30, 10:30] = 255 - result[20:30, 10:30]  # a face drawn over half the occluder
    result[:, 60:] = np.clip(result[:, 60:].astype(int) + 5, 0, 255)  # codec noise: kept
    occ = np.zeros((60, 80), bool)
    occ[20:30, 10:50] = True  # 400 pixels, 200 of them drawn over
    occ[40:50, 60:70] = True  # 100 noisy ones
    s, n = occlusion.kept(dst, result, occ)
    inverted = np.abs(255 - 2 * dst[20:30, 10:30].astype(int)).max(-1) <= occlusion.TOLERANCE
    assert (s, n) == (300 + int(inverted.sum()), 500)
    # the plain file: polygons in frame pixels, frames 0-based
    path = tmp_path / "occ.json"
    path.write_text('{"frames": [{"frame": 1, "occluders": [[[10, 20], [50, 20], [50, 30], '
                    '[10, 30]]]}]}')
    masks = occlusion.occluder_masks(path, dst.shape)
    assert set(masks) == {1} and abs(int(masks[1].sum()) - 400) <= 60
    found = occlusion.measure([dst, dst], [dst, result], masks)
    assert found["occlusion_frames"] == 1 and found["occlusion_kept"] < 0.75
    path.write_text("{}")
    with pytest.raises(FacelabError, match="cannot be read"):
        occlusion.check(path)


def test_aligned_occluder_polygons_land_on_the_face(tmp_path: Path):
    """The fixture's format: polygons in aligned-face pixels go back through the face's
    alignment, found from its landmarks and yaw as the extractor makes it."""
    from facelab.faces.facetype import MEAN_FACE_68, face_transform, transform_points

    lm = MEAN_FACE_68 * 120 + [140, 60]  # a face about 120 px wide
    doc = {"face_type": "whole-face", "size": 256,
           "faces": [{"frame": 3, "occluders": [[[96, 150], [160, 150], [160, 200],
                                                  [96, 200]]]}]}
    path = tmp_path / "fixture.json"
    path.write_text(json.dumps(doc))
    masks = occlusion.occluder_masks(path, (360, 400, 3), {3: (lm, 0.0)})
    ys, xs = np.nonzero(masks[3])
    to_crop = face_transform(lm, "whole-face", 256)
    centre = transform_points(np.array([[xs.mean(), ys.mean()]]), to_crop)[0]
    assert np.allclose(centre, [128, 175], atol=2)  # the polygon's centre in the crop
