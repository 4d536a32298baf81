"""The training preview: a grid of fixed faces and their predictions, plus a loss plot.

Fixed, unaugmented faces make successive previews comparable, so a user can judge progress
by eye (DeepFaceLab's preview window). Rows: src, src→src, dst, dst→dst, dst→src; one
column per face. Images stay BGR, as cv2 writes them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from facelab.errors import FacelabError
from facelab.fsutil import atomic_path
from facelab.train.data import Faceset
from facelab.train.warp import Augment

ROWS = 5
PLOT_HEIGHT = 96  # pixels under the grid for the loss history


def fixed_faces(faces: Faceset, count: int, first: str | None = None) -> torch.Tensor:
    """`count` evenly spaced faces of a set, unaugmented, as N×3×H×W float in [0, 1];
    `first` (a file name in the set) is put in column 0, the one the history follows."""
    idx = [int(i) for i in np.linspace(0, len(faces) - 1, min(count, len(faces))).round()]
    if first is not None:
        names = [p.name for p in faces.paths]
        if first not in names:
            raise FacelabError(f"There is no face {first!r} in {faces.name} to preview.")
        chosen = names.index(first)
        idx = [chosen, *[i for i in idx if i != chosen][: len(idx) - 1]]
    return torch.from_numpy(np.stack([faces.render(i, Augment()).target for i in idx]))


def grid_size(resolution: int, columns: int) -> tuple[int, int]:
    """(height, width) of the preview image: the grid plus the loss plot under it."""
    return ROWS * resolution + PLOT_HEIGHT, columns * resolution


@torch.no_grad()
def render_grid(model: nn.Module, src: torch.Tensor, dst: torch.Tensor) -> np.ndarray:
    """The 5-row grid as uint8 BGR H×W×3 (src and dst must have the same count)."""
    device = next(model.parameters()).device
    s, d = src.to(device), dst.to(device)
    was_training = model.training
    model.eval()
    try:
        out = model(s, d)
        swapped, _ = model.swap(d)  # type: ignore[operator]
    finally:
        model.train(was_training)
    rows = [s, out["src_src"], d, out["dst_dst"], swapped]
    tiles = [torch.cat(list(r.float().clamp(0, 1).cpu()), dim=2) for r in rows]  # 3×H×(N·H)
    image = torch.cat(tiles, dim=1).permute(1, 2, 0).numpy()
    return (image * 255).round().astype(np.uint8)


def loss_plot(history: list[list[float]], width: int, height: int = PLOT_HEIGHT) -> np.ndarray:
    """src and dst loss against iteration as uint8 BGR height×width×3 (blank if no data)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no GUI, no global backend
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.18, 0.9, 0.75))
    if history:
        h = np.asarray(history, dtype=float)
        ax.plot(h[:, 0], h[:, 1], color="tab:orange", lw=1, label="src")
        ax.plot(h[:, 0], h[:, 2], color="tab:blue", lw=1, label="dst")
        ax.legend(fontsize=5, loc="upper right", frameon=False)
    ax.tick_params(labelsize=5, length=2, pad=1)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    bgr = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR)
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)


def write_history(folder: Path, iteration: int, model: nn.Module, src: torch.Tensor,
                  dst: torch.Tensor) -> Path:
    """`folder/<iteration>.png`: the first preview column (src, src→src, dst, dst→dst,
    dst→src) side by side, so a user can flip through how that one face improved."""
    grid = render_grid(model, src[:1], dst[:1])
    res = grid.shape[1]
    row = np.hstack([grid[r * res:(r + 1) * res] for r in range(ROWS)])
    path = folder / f"{iteration:07d}.png"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), row):
            raise FacelabError(f"Cannot write the preview history image {path}.")
    return path


def write_preview(
    path: Path, model: nn.Module, src: torch.Tensor, dst: torch.Tensor, history: list[list[float]]
) -> None:
    """Write grid + plot to `path` atomically, so a viewer never shows half a PNG."""
    grid = render_grid(model, src, dst)
    image = np.vstack([grid, loss_plot(history, grid.shape[1])])
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise FacelabError(f"Cannot write the preview {path}.")
