"""`facelab faceset import-dfl` / `convert-png`: DeepFaceLab facesets in, untrusted all the way."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from facelab.faces.faceimage import read_face, read_meta
from facelab.faces.facetype import MEAN_FACE_68, face_transform, transform_points
from tests.conftest import assert_one_line_error
from tests.test_dfl import Shell, face_image, jpeg_with_app15, png_with_chunk

pytestmark = pytest.mark.slow  # each runs the CLI in a new process (make test-fast skips it)

FRAME_LM = (MEAN_FACE_68 - 0.5) * 140 + np.array([320.0, 200.0])


def dfl_meta(name: str) -> dict:
    mat = face_transform(FRAME_LM, "full", 256)
    return {
        "face_type": "full_face",
        "landmarks": transform_points(FRAME_LM, mat).astype(np.float32),
        "source_filename": name,
        "source_rect": np.array([240, 110, 400, 300]),
        "source_landmarks": FRAME_LM.astype(np.float32).tolist(),
        "image_to_face_mat": mat,
        "eyebrows_expand_mod": 1.0,
        "seg_ie_polys": {"polys": [{"type": 1, "pts": np.float32([[10, 10], [200, 20],
                                                                  [120, 220]])}]},
    }


def test_import_keeps_points_and_refuses_the_hostile_file(facelab, tmp_path: Path):
    faceset = tmp_path / "dfl_aligned"
    faceset.mkdir()
    for i in range(2):
        (faceset / f"0000{i}_0.jpg").write_bytes(
            jpeg_with_app15(pickle.dumps(dfl_meta(f"0000{i}.png"), protocol=4)))
    pwned = tmp_path / "pwned"
    evil = dfl_meta("00009.png") | {"source_filename": Shell(pwned)}
    (faceset / "00009_0.jpg").write_bytes(jpeg_with_app15(pickle.dumps(evil, protocol=4)))
    ws = tmp_path / "ws"
    assert facelab("-w", ws, "workspace", "init").rc == 0

    res = facelab("-w", ws, "faceset", "import-dfl", faceset, "--to", "src")
    assert res.rc == 0, res.err
    assert "Imported 2 faces" in res.out and "refused 00009_0.jpg" in res.out
    assert not pwned.exists()
    imported = sorted((ws / "data_src" / "aligned").glob("*.jpg"))
    assert [p.name for p in imported] == ["00000_0.jpg", "00001_0.jpg"]
    image, meta = read_face(imported[0])
    assert image.shape == (256, 256, 3)
    want = dfl_meta("00000.png")
    assert np.allclose(meta.landmarks, want["landmarks"], atol=1e-3)
    assert np.allclose(meta.source_landmarks, FRAME_LM, atol=1e-3)
    assert meta.face_type == "full" and meta.source_filename == "00000.png"
    assert meta.mask_polys[0]["type"] == "include"
    assert abs(meta.yaw) < 10 and abs(meta.roll) < 5  # the mean face looks straight ahead
    # face → frame through the stored transform lands on the frame points
    back = transform_points(meta.landmarks, meta.face_to_frame())
    assert np.abs(back - FRAME_LM).max() < 0.01

    info = facelab("faceset", "info", imported[0])
    assert info.rc == 0, info.err
    printed = json.loads(info.out)
    assert printed["face_type"] == "full" and len(printed["landmarks"]) == 68


def test_nothing_importable_is_an_error(facelab, tmp_path: Path):
    faceset = tmp_path / "plain"
    faceset.mkdir()
    import cv2

    cv2.imwrite(str(faceset / "a.jpg"), face_image())
    ws = tmp_path / "ws"
    assert facelab("-w", ws, "workspace", "init").rc == 0
    res = facelab("-w", ws, "faceset", "import-dfl", faceset)
    assert res.rc != 0 and "Traceback" not in res.err
    assert "No face could be imported" in res.err


def test_faceset_info_on_a_plain_jpg(facelab, tmp_path: Path):
    import cv2

    plain = tmp_path / "plain.jpg"
    cv2.imwrite(str(plain), face_image())
    assert_one_line_error(facelab("faceset", "info", plain), "plain.jpg")


def test_convert_png_in_place(facelab, tmp_path: Path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "00003_0.png").write_bytes(
        png_with_chunk(b"fcWp", pickle.dumps(dfl_meta("00003.png"), protocol=2)))
    res = facelab("faceset", "convert-png", folder)
    assert res.rc == 0, res.err
    meta = read_meta(folder / "00003_0.jpg")
    assert meta.source_filename == "00003.png"
    assert (folder / "png_trash" / "00003_0.png").is_file()  # kept, not deleted
    assert not (folder / "00003_0.png").exists()
