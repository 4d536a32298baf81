"""Faces page bench (issue 17): how soon the studio's faces page is usable with 10,000
faces, in Debian's chromium against the real server.

The faceset: a few real aligned faces (GRID speaker A, extracted by the real CLI into a
scratch workspace, or --faces DIR) copied to N files (each its own inode, so each gets its
own thumbnail). Timed in the browser, each in a new tab (its own cache), from navigation to
the first screen drawn (every thumbnail in view decoded), the server and the browser
started (as when a user opens the printed URL):

* first open: the studio made the first screens' thumbnails as it started (its warm-up);
* cold: no thumbnail made yet at all (the listing's answer brings the first screen's);
* warm: opened again (the thumbnails cached in the workspace);
* scroll (cold): the grid jumped to the middle and to the end, until those rows are drawn;

with the timeline of each first screen (the page, its script, the listing, batches).

Also: the listing's own time (GET /api/faces/src, server side and transfer), how many face
cells the DOM holds (only the rows in view), and one thumbnail's making.

Usage: .venv/bin/python bench/studio_faces.py [--faces DIR] [--count 10000] [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facelab.studio.faces_page import WARM  # noqa: E402
from facelab.studio.thumbnails import THUMB, thumbnail_bytes  # noqa: E402
from tests.studio.conftest import CHROMIUM, studio_server, wait_until  # noqa: E402

DRAWN = ("(() => { const imgs = [...document.querySelectorAll('#grid .face img')];"
         " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); })()")

TIMELINE = """(() => {
  const end = (test) => Math.round(Math.max(0, ...performance.getEntriesByType('resource')
    .filter((e) => test(new URL(e.name))).map((e) => e.responseEnd)));
  return {page: Math.round(performance.getEntriesByType('navigation')[0].responseEnd),
          script: end((u) => u.pathname === '/static/faces.js'),
          listing: end((u) => u.pathname === '/api/faces/src'),
          more: end((u) => u.pathname.endsWith('/thumbs')),
          drawn: Math.round(performance.now())};
})()"""


def real_faces(scratch: Path) -> list[Path]:
    ws = scratch / "extract"
    ws.mkdir(parents=True, exist_ok=True)
    clip = ROOT.parent / "shared" / "data" / "grid" / "speaker_a_1.mpg"
    shutil.copyfile(clip, ws / "data_dst.mpg")
    for args in (("video", "extract", "dst"), ("extract", "dst", "--no-debug")):
        subprocess.run([sys.executable, "-m", "facelab", "-w", str(ws), *args], check=True,
                       capture_output=True)
    return sorted((ws / "data_dst" / "aligned").glob("*.jpg"))


def build(root: Path, faces: list[Path], count: int) -> Path:
    ws = root / "ws"
    aligned = ws / "data_src" / "aligned"
    aligned.mkdir(parents=True)
    (ws / "data_dst" / "aligned").mkdir(parents=True)
    (ws / "model").mkdir()
    for i in range(count):
        shutil.copyfile(faces[i % len(faces)], aligned / f"{i:05d}.jpg")
    return ws


def timed(page: Any, url: str) -> float:
    t0 = time.perf_counter()
    page.goto(url)
    wait_until(page, DRAWN, 60)
    return time.perf_counter() - t0


def scrolled(page: Any, where: str) -> float:
    t0 = time.perf_counter()
    page.eval_on_selector("#grid", f"g => {{ g.scrollTop = {where}; }}")
    page.wait_for_timeout(20)
    wait_until(page, DRAWN, 60)
    return time.perf_counter() - t0


def opened(browser: Any, url: str) -> tuple[float, dict[str, int], Any]:
    """A new tab (its own cache) opening `url`: seconds to the first screen, the timeline."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto("about:blank")  # the tab has started
    seconds = timed(page, url)
    return seconds, page.evaluate(TIMELINE), page


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, help="a folder of aligned faces to copy")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--root", type=Path, help="scratch folder (kept); default: a temp one")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        faces = sorted(args.faces.glob("*.jpg")) if args.faces else real_faces(root)
        t0 = time.perf_counter()
        ws = build(root, faces, args.count)
        print(f"{args.count} faces from {len(faces)} real ones, copied in "
              f"{time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        for f in faces[:50]:
            thumbnail_bytes(f)
        print(f"one thumbnail: {(time.perf_counter() - t0) / min(50, len(faces)) * 1000:.2f} ms")
        os.sync()  # the copies' writeback is not the page's time
        thumbs = ws / ".studio" / f"thumbs{THUMB}"
        with studio_server(ws) as s, sync_playwright() as pw:
            end = time.monotonic() + 30  # the start's warm-up: the first screens' thumbnails
            while time.monotonic() < end and len(list(thumbs.glob("*.jpg"))) < min(WARM,
                                                                                 args.count):
                time.sleep(0.1)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                data = s.json("GET", "/api/faces/src")
                times.append(time.perf_counter() - t0)
            print(f"listing {data['count']} faces: {min(times) * 1000:.0f} ms "
                  f"(best of 5, {sum(map(len, data['names']))} name bytes)")
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            url = f"{s.url}#/faces?side=src"
            first, first_steps, page = opened(browser, url)
            page.close()
            shutil.rmtree(thumbs)  # no thumbnail made yet at all
            cold, cold_steps, page = opened(browser, url)
            cells = page.locator("#grid .face").count()
            middle = scrolled(page, "g.scrollHeight / 2")
            last = scrolled(page, "g.scrollHeight")
            page.close()
            warm = min(opened(browser, url)[0] for _ in range(3))
            browser.close()
        print(f"first screen drawn ({cells} face cells in the DOM of {args.count}; from the "
              "navigation to every thumbnail in view decoded, in a new tab):")
        for what, secs, steps in (("first open (thumbnails made as the studio started)",
                                   first, first_steps),
                                  ("cold (no thumbnail made yet)", cold, cold_steps)):
            print(f"  {what}: {secs * 1000:.0f} ms; timeline (ms): " +
                  ", ".join(f"{k} {v}" for k, v in steps.items()))
        print(f"  warm (opened again): {warm * 1000:.0f} ms")
        print(f"scroll (cold): to the middle {middle * 1000:.0f} ms, to the end "
              f"{last * 1000:.0f} ms")


if __name__ == "__main__":
    main()
