"""The eval report: one self-contained HTML file (plots and frames inline as base64), so it
opens anywhere and can be mailed; matplotlib draws off-screen (Agg)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab.fsutil import atomic_path

# (summary key, label, goal as (comparison, value) or None); goals from issue 6's benchmark
ROWS: list[tuple[str, str, tuple[str, float] | None]] = [
    ("identity_recognised_as_src", "recognised as src (share of frames)", (">=", 0.9)),
    ("identity_closer_to_src", "closer to src than to dst", None),
    ("identity_top1", "top-1 retrieval among identities", None),
    ("identity_dist_src", "distance to src (mean)", None),
    ("identity_dist_dst", "distance to dst (mean)", None),
    ("sharpness_ratio", "sharpness ratio (1 = as sharp as dst)", (">=", 0.8)),
    ("pose_error_deg", "pose error (°, mean |yaw, pitch, roll|)", ("<=", 2.0)),
    ("pose_error_offset_removed_deg", "pose error, constant offset removed (°)", None),
    ("expression_error", "expression error (eye distances)", None),
    ("expression_corr", "expression following (correlation)", (">=", 0.8)),
    ("jitter_ratio", "landmark jitter ratio (1 = dst's own)", ("<=", 1.0)),
    ("flicker_ratio", "colour flicker ratio", None),
    ("background_psnr_db", "background PSNR (dB, 100 = identical)", None),
    ("face_psnr_vs_dst_db", "face PSNR vs dst (dB; truth if same person)", None),
    ("face_ssim_vs_dst", "face SSIM vs dst (truth if same person)", None),
    ("face_found_share", "face still found in result", None),
    ("occlusion_kept", "occluders kept in front (share of pixels)", (">=", 0.9)),
    ("frames", "frames", None),
    ("train_minutes", "training minutes", None),
    ("train_iteration", "training iteration", None),
    ("model_preset", "model preset", None),
]
#: shown when known (the workspace's facts; the occlusion measure, given --occluders)
WORKSPACE_ROWS = ("train_minutes", "train_iteration", "model_preset", "occlusion_kept")


def verdict(key: str, value: Any) -> str | None:
    """'ok' / 'short' against the goal of `key`, None without a goal or a value."""
    goal = next((g for k, _, g in ROWS if k == key), None)
    if goal is None or value is None:
        return None
    op, target = goal
    return "ok" if (value >= target if op == ">=" else value <= target) else "short"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _series(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], np.float64)


def plots(ev: Any) -> list[tuple[str, str]]:
    """(title, base64 PNG) of each figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, s = ev.rows, ev.summary
    t = np.arange(len(rows))
    out = []

    def figure(title: str, draw: Any) -> None:
        fig, ax = plt.subplots(figsize=(8, 2.6))
        draw(ax)
        ax.set_xlabel("frame")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        out.append((title, _png(fig)))
        plt.close(fig)

    names = s.get("identities") or []
    if names:
        def ident(ax: Any) -> None:
            for k in names:
                ax.plot(t, _series(rows, f"dist_{k}"), ".-", ms=3, label=f"to {k}")
            ax.axhline(s["identity_threshold"], color="k", ls="--", lw=1, label="threshold")
            ax.set_ylabel("descriptor distance")
        figure("Identity: distance of the result face to each identity", ident)

    def mouth(ax: Any) -> None:
        ax.plot(t, _series(rows, "mouth_dst"), label="mouth dst", color="tab:blue")
        ax.plot(t, _series(rows, "mouth_result"), label="mouth result", color="tab:orange")
        ax.plot(t, _series(rows, "eyes_dst") - 0.5, label="eyes dst − 0.5", color="tab:blue",
                ls=":")
        ax.plot(t, _series(rows, "eyes_result") - 0.5, label="eyes result − 0.5",
                color="tab:orange", ls=":")
        ax.set_ylabel("opening")
    figure("Expression following: mouth and eye opening, dst vs result", mouth)

    def pose(ax: Any) -> None:
        ax.plot(t, _series(rows, "yaw_dst"), label="yaw dst")
        ax.plot(t, _series(rows, "yaw_result"), label="yaw result")
        ax.plot(t, _series(rows, "pose_error_deg"), label="pose error", color="k", lw=1)
        ax.set_ylabel("degrees")
    figure("Pose: yaw of dst and result, and the mean error", pose)

    def stability(ax: Any) -> None:
        ax.plot(t, _series(rows, "jitter_dst"), label="jitter dst")
        ax.plot(t, _series(rows, "jitter_result"), label="jitter result")
        ax.set_ylabel("eye distances / frame²")
    figure("Jitter: high-frequency landmark motion", stability)

    def sharp(ax: Any) -> None:
        ax.plot(t, _series(rows, "sharpness_ratio"), label="sharpness ratio")
        ax.axhline(1.0, color="k", ls="--", lw=1, label="as sharp as dst")
        ax.set_ylabel("ratio")
    figure("Sharpness of the face region, result / dst", sharp)

    fig, axes = plt.subplots(1, 3, figsize=(10, 2.6))
    for k in names:
        v = _series(rows, f"dist_{k}")
        if np.isfinite(v).any():
            axes[0].hist(v[np.isfinite(v)], bins=20, alpha=0.6, label=f"to {k}")
    if names:
        axes[0].axvline(s["identity_threshold"], color="k", ls="--", lw=1)
        axes[0].legend(fontsize=8)
    axes[0].set_title("identity distance", fontsize=9)
    for ax, key, title in ((axes[1], "sharpness_ratio", "sharpness ratio"),
                           (axes[2], "expression_error", "expression error")):
        v = _series(rows, key)
        if np.isfinite(v).any():
            ax.hist(v[np.isfinite(v)], bins=20)
        ax.set_title(title, fontsize=9)
    out.append(("Distributions", _png(fig)))
    plt.close(fig)
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def render(ev: Any) -> str:
    s = ev.summary
    table = []
    for key, label, goal in ROWS:
        v = verdict(key, s.get(key))
        mark = {"ok": "✔", "short": "✘"}.get(v or "", "")
        goal_text = f"{goal[0]} {goal[1]:g}" if goal else ""
        table.append(f"<tr><td>{html.escape(label)}</td><td class=n>{_fmt(s.get(key))}</td>"
                     f"<td>{html.escape(goal_text)} {mark}</td></tr>")
    figs = "".join(f"<h3>{html.escape(t)}</h3><img src='data:image/png;base64,{b}'>"
                   for t, b in plots(ev))
    strip = "".join(
        f"<img src='data:image/jpeg;base64,{_jpeg(img)}'>" for img in ev.samples)
    inputs = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in
                     ev.inputs.items())
    note = ""
    if s.get("frames_dst") != s.get("frames_result"):
        note = (f"<p class=warn>dst has {s.get('frames_dst')} frames, the result "
                f"{s.get('frames_result')}: the first {s.get('frames')} are compared.</p>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>facelab eval</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
td{{padding:2px 10px}} td.n{{text-align:right;font-family:monospace}}
img{{max-width:100%;display:block;margin:4px 0}} .warn{{color:#a00}}</style></head><body>
<h1>facelab eval</h1><ul>{inputs}</ul>{note}
<p>Identity ({html.escape(str(s.get('identity_recogniser')))}) alone is weak evidence: a
blurred average src face pasted into every frame is closer to src too. Read it together with
sharpness and expression following (docs/EVAL.md).</p>
<table>{''.join(table)}</table>
<h2>Frames: dst | result</h2>{strip}
<h2>Per frame</h2>{figs}</body></html>
"""


def _jpeg(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""


def write_report(path: Path, ev: Any) -> None:
    text = render(ev)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
