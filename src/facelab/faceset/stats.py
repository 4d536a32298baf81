"""`faceset stats`: count, sharpness spread, and a yaw × pitch coverage plot that shows which
angles src lacks compared with dst (the guide's "src must cover dst's angles")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.faceset.features import column, load_features
from facelab.faceset.folder import Faceset, locked
from facelab.fsutil import atomic_path, clean_stale_parts
from facelab.progress import NULL, Reporter

STEP = 5.0  # degrees per coverage cell
SPAN = 90.0  # the plot shows ±SPAN at least


@dataclass
class Side:
    label: str
    pose: np.ndarray  # N×2 yaw, pitch
    sharp: np.ndarray  # N


@dataclass
class StatsReport:
    count: int
    sharpness: tuple[float, float, float]  # 10th, 50th, 90th percentile (Laplacian variance)
    yaw: tuple[float, float]
    pitch: tuple[float, float]
    cells: int  # pose cells with faces
    lacking: int | None  # dst cells src has no face in (None without the other side)
    plot: Path


def _side(fs: Faceset, reporter: Reporter) -> Side:
    recs = load_features(fs, fs.require_faces(), ("pose", "blur"), reporter)
    return Side(fs.label, column(recs, "pose"), column(recs, "blur"))


def _cells(pose: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in np.floor(pose / STEP)}


def faceset_stats(fs: Faceset, src: Faceset | None, dst: Faceset | None, plot: Path,
                  reporter: Reporter = NULL) -> StatsReport:
    """Stats of `fs`; `src`/`dst` (either may be `fs` itself or None) feed the lacking
    angles. Writes the plot to `plot`. Holds the lock of every faceset it reads (their
    feature caches are written, and a sort must not rename faces under it)."""
    others = [o for o in (src, dst) if o is not None and o.folder.is_dir()]
    with locked(reporter, fs, *others):
        clean_stale_parts(plot.parent, of=plot)
        return _stats(fs, src, dst, plot, reporter)


def _stats(fs: Faceset, src: Faceset | None, dst: Faceset | None, plot: Path,
           reporter: Reporter) -> StatsReport:
    me = _side(fs, reporter)
    sides = {}
    for name, other in (("src", src), ("dst", dst)):
        if other is not None and other.folder.is_dir() and other.faces():
            sides[name] = me if other.folder == fs.folder else _side(other, reporter)
    lacking = None
    if "src" in sides and "dst" in sides:
        lacking = sorted(_cells(sides["dst"].pose) - _cells(sides["src"].pose))
    _plot(plot, list(sides.values()) or [me], lacking)
    q = np.percentile(me.sharp, [10, 50, 90])
    return StatsReport(len(me.sharp), (float(q[0]), float(q[1]), float(q[2])),
                       (float(me.pose[:, 0].min()), float(me.pose[:, 0].max())),
                       (float(me.pose[:, 1].min()), float(me.pose[:, 1].max())),
                       len(_cells(me.pose)), None if lacking is None else len(lacking), plot)


def _plot(path: Path, sides: list[Side], lacking: list[tuple[int, int]] | None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    span = max(SPAN, *(float(np.abs(s.pose).max()) + STEP for s in sides))
    edges = np.arange(-np.ceil(span / STEP) * STEP, np.ceil(span / STEP) * STEP + STEP, STEP)
    fig = Figure(figsize=(5.5 * len(sides), 5), dpi=100)
    FigureCanvasAgg(fig)
    for k, s in enumerate(sides):
        ax = fig.add_subplot(1, len(sides), k + 1)
        h, _, _ = np.histogram2d(s.pose[:, 0], s.pose[:, 1], bins=[edges, edges])
        im = ax.imshow(np.ma.masked_equal(h.T, 0), origin="lower", cmap="viridis",
                       extent=(edges[0], edges[-1], edges[0], edges[-1]), aspect="equal")
        fig.colorbar(im, ax=ax, shrink=0.8, label="faces")
        if lacking and k == 0:  # the src panel
            for cy, cp in lacking:
                ax.add_patch(Rectangle((cy * STEP, cp * STEP), STEP, STEP, fill=False,
                                       edgecolor="red", linewidth=1.2))
        title = f"{s.label}: {len(s.pose)} faces"
        if lacking is not None and k == 0:
            title += f"\nred: {len(lacking)} dst angles src lacks"
        ax.set(title=title, xlabel="yaw (° ; + = turned to image right)",
               ylabel="pitch (° ; + = up)")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
