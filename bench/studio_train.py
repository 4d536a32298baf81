"""Training-page bench (issue 17): what the studio adds to a training run's time.

The same run (a fresh model, same seed, same flags, --iters iterations, a preview every
--preview-every) timed two ways, alternately, --repeats times each:

* cli: `facelab -w WS train ...` alone, its output piped to a file (as a user's nohup or
  scheduler run; no browser, no server);
* studio: the same command as a studio job (`POST /api/jobs`, which runs the real CLI in
  its process), with the training page open in Debian's chromium at 1280×800 and doing
  what it does while a model trains: polling /api/train/state every second, redrawing the
  loss graphs, reloading each new preview, and the job panel following the job's
  server-sent events.

Per run: the wall time from start to exit (the process's own start-up included) and the
loop's ms/iter as the CLI reports it. The figures: medians of each, and studio / cli.
Default run: the tiny SAE model of the tests (64 px, batch 2, ~55 ms/iter on 2 idle Zen 1
cores): the worst case, the studio's fixed cost being the largest fraction of a short
iteration; `--flags "--preset quick96"` for a real model. The 1-minute load average is
printed before and after: on a shared machine other jobs change every figure.

--screenshot PATH: after the timing, one more (unmeasured) studio run, with a screenshot of
the page at 80 % of it.

Usage: .venv/bin/python bench/studio_train.py [--ws DIR] [--iters 400] [--repeats 3]
       [--preview-every 100] [--flags "..."] [--screenshot docs/img/studio_train.png]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.studio.conftest import CHROMIUM, studio_server, wait_until  # noqa: E402

TINY = ("--preset sae --resolution 64 --ae-dims 32 --e-dims 8 --d-dims 8 --d-mask-dims 4 "
        "--batch-size 2")
REPORTED = re.compile(r"\((\d+) this run, (\d+) ms/iter")
DATA = ROOT.parent / "shared" / "data"


def build(root: Path) -> Path:
    """GRID speaker B (8 fps) as src and speaker A as dst, extracted by the real CLI (as
    the tests' aligned_faces)."""
    ws = root / "ws"
    ws.mkdir(parents=True)
    for side, clip, fmt in (("src", "grid/speaker_b.mpg", ("--fps", "8")),
                            ("dst", "grid/speaker_a_1.mpg", ("--frames", "png"))):
        shutil.copyfile(DATA / clip, ws / f"data_{side}.mpg")
        for args in (("video", "extract", side, *fmt), ("extract", side, "--no-debug")):
            subprocess.run([sys.executable, "-m", "facelab", "-w", str(ws), *args], check=True,
                           capture_output=True)
    return ws


def train_args(name: str, iters: int, preview_every: int, flags: str) -> list[str]:
    return ["train", "--model-name", name, *shlex.split(flags), "--target-iteration",
            str(iters), "--preview-every", str(preview_every), "--backup-every", "0",
            "--device", "cpu", "--precision", "fp32"]


def form_values(args: list[str]) -> dict[str, Any]:
    """The train form's values for the same flags (field name → value as text): the
    flags are `--flag value` pairs named as their fields."""
    it = iter(args[1:])
    return {flag.removeprefix("--").replace("-", "_"): value for flag, value in zip(it, it,
                                                                                  strict=True)}


def ms_reported(text: str) -> float:
    m = REPORTED.search(text)
    if m is None:
        raise SystemExit(f"no ms/iter in the run's last words: {text[-500:]}")
    return float(m[2])


def run_cli(ws: Path, args: list[str], log: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-m", "facelab", "-w", str(ws), *args], stdout=out,
                       stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, "NO_COLOR": "1", "COLUMNS": "1000"})
    return time.perf_counter() - t0, ms_reported(log.read_text())


def run_studio(s: Any, page: Any, args: list[str], shot: Path | None = None,
               iters: int = 0) -> tuple[float, float]:
    """The run as a studio job with the training page open; (wall s, ms/iter)."""
    name = args[args.index("--model-name") + 1]
    page.goto(f"{s.url}#/train?model={name}")
    page.wait_for_selector("#page[data-loaded]")
    t0 = time.perf_counter()
    job = page.evaluate("async (values) => (await import('/static/app.js')).jobs.start("
                        "'train', values)", form_values(args))  # as the form's Run button
    if shot is not None:
        wait_until(page, "Number(document.querySelector('#tr-iteration').dataset.value) >= "
                   f"{int(iters * 0.8)}", 600)
        page.screenshot(path=str(shot))
    while True:  # as the page's own job panel: the end comes by its event stream
        cur = s.json("GET", "/api/jobs/current?tail=2")
        if cur["id"] == job["id"] and cur["state"] != "running":
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if cur["rc"] != 0:
        raise SystemExit(f"the studio job failed: {cur['tail']}")
    return wall, ms_reported("\n".join(cur["tail"]))


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ws", type=Path, help="a workspace with aligned faces (copied)")
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preview-every", type=int, default=100)
    ap.add_argument("--flags", default=TINY, help="model flags of the run")
    ap.add_argument("--screenshot", type=Path)
    opts = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        if opts.ws:
            ws = Path(tmp) / "ws"
            shutil.copytree(opts.ws, ws, ignore=shutil.ignore_patterns("model", ".studio"))
        else:
            ws = build(Path(tmp))
        print(f"{opts.iters} iterations of `facelab train {opts.flags}`, preview every "
              f"{opts.preview_every}; load average before: {load()}")
        cli: list[tuple[float, float]] = []
        studio: list[tuple[float, float]] = []
        with studio_server(ws) as s, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            for r in range(opts.repeats):
                for how in ("cli", "studio") if r % 2 == 0 else ("studio", "cli"):
                    args = train_args(f"{how}{r}", opts.iters, opts.preview_every, opts.flags)
                    if how == "cli":
                        page.goto("about:blank")  # no page polling during the CLI's run
                        cli.append(run_cli(ws, args, Path(tmp) / f"{how}{r}.log"))
                    else:
                        studio.append(run_studio(s, page, args))
                    wall, ms = (cli if how == "cli" else studio)[-1]
                    print(f"  {how:6s} run {r + 1}: {wall:6.1f} s wall, {ms:4.0f} ms/iter "
                          f"(load {load()})", flush=True)
            if opts.screenshot:
                args = train_args("shot", opts.iters, max(1, opts.iters // 10), opts.flags)
                run_studio(s, page, args, opts.screenshot, opts.iters)
                print(f"screenshot: {opts.screenshot}")
            browser.close()
    wall_c, wall_s = (statistics.median(w for w, _ in runs) for runs in (cli, studio))
    ms_c, ms_s = (statistics.median(m for _, m in runs) for runs in (cli, studio))
    print(f"median wall: cli {wall_c:.1f} s, studio {wall_s:.1f} s: ratio {wall_s / wall_c:.3f}")
    print(f"median ms/iter: cli {ms_c:.0f}, studio {ms_s:.0f}: ratio {ms_s / ms_c:.3f}")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
