"""Face detectors on real footage with the real models (no mocks).

Expected values were measured on ../shared/data (docs/DETECTORS.md): GRID faces sit in the
middle of the 360×288 frame, every box found there covers x 140–200, y 150–230; the
astronaut's face is at about (178, 57)–(273, 177) and her mission patch, which fools weak
detectors (dlib HOG at a lowered threshold), at about (133, 345)–(210, 425).
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.faces.detect import ROLES, create_detector, detector_names
from tests.conftest import data_file

SPEAKERS = ("a_1", "a_2", "b", "c", "d")
CORE = (140, 150, 200, 230)  # x0, y0, x1, y1: inside every GRID face box
ASTRONAUT_FACE = (170, 50, 280, 190)  # region the face box's centre must fall in
PATCH = (133, 345, 210, 425)


def frames(path: Path, count: int) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append(np.ascontiguousarray(frame.to_ndarray(format="bgr24")))
            if len(out) == count:
                break
    return out


def centre_in(box: tuple[float, float, float, float], region: tuple[int, ...]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


@pytest.fixture(scope="module")
def accurate():
    return create_detector("accurate")


@pytest.fixture(scope="module")
def fast():
    return create_detector("fast")


@pytest.fixture(scope="module")
def grid_frames() -> dict[str, list[np.ndarray]]:
    return {s: frames(data_file(f"grid/speaker_{s}.mpg"), 15) for s in SPEAKERS}


@pytest.mark.slow
@pytest.mark.parametrize("role", ["accurate", "fast"])
def test_grid_one_face_per_frame(role, grid_frames, request):
    detector = request.getfixturevalue(role)
    for speaker, clip in grid_frames.items():
        for i, frame in enumerate(clip):
            found = detector.detect(frame)
            assert len(found) == 1, (speaker, i, found)
            det = found[0]
            x0, y0, x1, y1 = det.box
            assert 0 <= x0 < x1 <= 360 and 0 <= y0 < y1 <= 288, (speaker, i, det.box)
            assert x0 <= CORE[0] and y0 <= CORE[1] and x1 >= CORE[2] and y1 >= CORE[3], (
                speaker, i, det.box)
            assert 80 <= x1 - x0 <= 200, (speaker, i, det.box)
            assert det.score >= detector.min_score
            assert det.detector == ROLES[role]


def test_accurate_keypoints_are_eyes_nose_mouth(accurate, grid_frames):
    det = accurate.detect(grid_frames["b"][0])[0]
    pts = det.keypoints
    assert pts is not None and pts.shape == (5, 2)
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = pts
    assert lex < nx < rex and lmx < rmx  # image-left eye/mouth corner first
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes, then nose, then mouth
    x0, y0, x1, y1 = det.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in pts)


def test_tile_of_four_speakers(accurate):
    cells = [frames(data_file(f"grid/speaker_{s}.mpg"), 11)[10] for s in ("a_1", "b", "c", "d")]
    tile = np.vstack([np.hstack(cells[:2]), np.hstack(cells[2:])])  # 720×576
    found = accurate.detect(tile)
    assert len(found) == 4, found
    quadrants = {(d.box[0] + d.box[2] > 720, d.box[1] + d.box[3] > 576) for d in found}
    assert len(quadrants) == 4, [d.box for d in found]
    areas = [(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for d in found]
    assert areas == sorted(areas, reverse=True)  # largest first


@pytest.mark.parametrize("sensitive", [False, True])
def test_astronaut_face_not_patch(sensitive):
    image = cv2.imread(str(data_file("images/astronaut.png")))
    found = create_detector("accurate", sensitive=sensitive).detect(image)
    assert len(found) == 1, [(d.box, d.score) for d in found]
    assert centre_in(found[0].box, ASTRONAUT_FACE), found[0].box
    assert not centre_in(found[0].box, PATCH)


def test_grace_hopper_one_face_with_both():
    image = cv2.imread(str(data_file("images/grace_hopper.jpg")))
    for name in ("accurate", "fast"):
        found = create_detector(name).detect(image)
        assert len(found) == 1, (name, found)


def test_unknown_name_lists_known_ones():
    with pytest.raises(FacelabError) as err:
        create_detector("s3fd")
    message = str(err.value)
    assert "s3fd" in message and message.endswith(".")
    for name in ("fast", "accurate", "blazeface", "retinaface"):
        assert name in message
    assert set(detector_names()) >= {"fast", "accurate", "blazeface", "retinaface"}


@pytest.mark.parametrize("kwargs", [{"device": "tpu"}, {"threshold": 1.5}])
def test_bad_options_are_user_errors(kwargs):
    with pytest.raises(FacelabError):
        create_detector("accurate", **kwargs)


def test_threshold_is_honoured(grid_frames):
    strict = create_detector("retinaface", threshold=0.99)
    assert strict.min_score == 0.99
    found = strict.detect(grid_frames["c"][0])
    assert all(d.score >= 0.99 for d in found)
    assert create_detector("accurate", sensitive=True).min_score < strict.min_score


def test_blank_frame_has_no_face(accurate, fast):
    blank = np.full((288, 360, 3), 128, np.uint8)
    assert accurate.detect(blank) == []
    assert fast.detect(blank) == []


def test_sensitive_pass_finds_a_tiny_face(grid_frames):
    """A GRID face shrunk to 14 px wide on a 640×360 frame: only the upscaled pass sees it."""
    face = grid_frames["c"][0]
    small = cv2.resize(face, None, fx=14 / 106, fy=14 / 106, interpolation=cv2.INTER_AREA)
    canvas = np.full((360, 640, 3), 90, np.uint8)
    canvas[160:160 + small.shape[0], 200:200 + small.shape[1]] = small
    found = create_detector("accurate", sensitive=True).detect(canvas)
    assert len(found) == 1, found
    x0, y0, x1, y1 = found[0].box
    assert 195 <= x0 < x1 <= 200 + small.shape[1] + 5 and 155 <= y0 < y1 <= 165 + small.shape[0]
    assert len(create_detector("accurate").detect(canvas)) <= len(found)


def test_cuda_without_a_gpu_is_a_user_error():
    import onnxruntime

    frame = np.zeros((288, 360, 3), np.uint8)
    with pytest.raises(FacelabError, match="CPU only"):
        create_detector("fast", device="cuda").detect(frame)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(FacelabError, match="CUDA"):
            create_detector("accurate", device="cuda").detect(frame)
