"""Merge page bench (issue 17): a frame merged again after an option change, end to end
through the studio's HTTP API and in Debian's chromium, against the real server.

Workspaces are bench/merge.py's (`build`, untimed; --keep DIR reuses them): GRID speaker A
as dst (360×288) and the Pexels clip (640×360), dst kept in its video, quick96 and
meshswap trained a few iterations. Per clip and model, the studio is started on the
workspace (`facelab studio --port 0`, as a user runs it) and, on the clip's middle frame:

* HTTP: the first preview (model load, decode, the clip's faces smoothed, the batch's
  prediction), then each option change of bench/merge_preview.py alone from the defaults,
  as the page asks (GET /api/merge/preview, JPEG), median of --repeat requests: wall ms at
  the client (request to last byte) beside the server's render time (x-render-ms);
* browser: the page opened on that frame, then W and S (erode ±5) pressed in turn, each
  timed by the page itself from its request to the frame's bytes (what it shows as "ms").

Goal: ≤ 300 ms a 360p frame after the first.

Usage: .venv/bin/python bench/studio_merge.py [--keep DIR] [--models quick96 meshswap]
       [--clips grid pexels] [--repeat N] [--no-browser]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from merge import CLIPS, MODELS, build  # noqa: E402  (bench/ is on sys.path)
from merge_preview import CHANGES, GOAL_MS  # noqa: E402

from tests.studio.conftest import CHROMIUM, Studio, studio_server, wait_until  # noqa: E402


def http_rows(s: Studio, model: str, frame: int, repeat: int) -> tuple[list[str], float]:
    def get(**opts: object) -> tuple[float, float]:
        query = urlencode({"model": model, "frame": frame, "client": "bench", **opts})
        start = time.perf_counter()
        status, headers, data = s.request("GET", f"/api/merge/preview?{query}")
        wall = 1000 * (time.perf_counter() - start)
        assert status == 200, data
        return wall, float(headers["x-render-ms"])

    first, server = get()
    rows = [f"  {'first preview (model load, prediction)':44} {first:8.1f} {server:8.1f}"]
    worst = 0.0
    for label, change in CHANGES:
        runs = [get(**change) for _ in range(repeat)]
        wall = statistics.median(r[0] for r in runs)
        worst = max(worst, wall)
        rows.append(f"  {label:44} {wall:8.1f} {statistics.median(r[1] for r in runs):8.1f}")
    return rows, worst


def browser_row(s: Studio, model: str, frame: int, repeat: int) -> str:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = b.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{s.url}#/merge")
            page.wait_for_selector("#page[data-ready]")
            page.select_option("#merge-model", model)
            page.fill("#merge-frame", str(frame))
            page.press("#merge-frame", "Enter")
            page.locator(".merge-stage").click()
            wait_until(page, f"document.querySelector('#merge-view').dataset.frame === "
                             f"'{frame}'", 120)
            times = []
            for i in range(2 * repeat):
                seq = page.get_attribute("#merge-view", "data-seq")
                page.keyboard.press("w" if i % 2 == 0 else "s")
                wait_until(page, f"document.querySelector('#merge-view').dataset.seq !== "
                                 f"'{seq}'", 60)
                times.append(float(page.get_attribute("#merge-view", "data-ms") or "nan"))
        finally:
            b.close()
    return (f"  {'browser: W / S (erode ±5), page-timed':44} {statistics.median(times):8.1f}"
            f"      (max {max(times):.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=["quick96", "meshswap"],
                        choices=list(MODELS))
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--keep", type=Path, default=None,
                        help="build the workspaces here and reuse them on the next run")
    parser.add_argument("--no-browser", action="store_true")
    a = parser.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), "?")
    print(f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores usable; repeat {a.repeat}; "
          f"load average {os.getloadavg()[0]:.1f}")
    tmp = tempfile.TemporaryDirectory(prefix="bench_studio_merge_") if a.keep is None else None
    root = Path(tmp.name) if tmp is not None else a.keep
    root.mkdir(parents=True, exist_ok=True)
    try:
        spaces = build(root, a.models)
        for clip in a.clips:
            with studio_server(spaces[clip], timeout=120) as s:
                frames = s.json("GET", "/api/merge/setup")["frames"]
                frame = frames[len(frames) // 2]
                for model in a.models:
                    print(f"{f'{clip} / {model}, frame {frame}':46} {'wall ms':>8} "
                          f"{'server':>8}")
                    rows, worst = http_rows(s, model, frame, a.repeat)
                    print("\n".join(rows))
                    if not a.no_browser:
                        print(browser_row(s, model, frame, a.repeat))
                    met = "met" if worst <= GOAL_MS else "MISSED"
                    print(f"  worst option change through HTTP: {worst:.1f} ms (goal ≤ "
                          f"{GOAL_MS:.0f} ms: {met})", flush=True)
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
