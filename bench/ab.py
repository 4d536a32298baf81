"""A/B bench: one bench script run on an earlier commit and on the working tree, in turn.

A refactor must not slow anything down, and on a shared machine two runs minutes apart say
more about the neighbours than about the code. This runs the same bench script (each side's
own copy, with its own `src/` first on the path) alternately, `--rounds` times, starting
with the other side each round, and prints every row the benches print with a `fps` column:
the median fps and CPU ms per frame of each side and their ratios (new / base; fps above 1
and CPU below 1 mean faster).

Usage: .venv/bin/python bench/ab.py --base REF [--rounds N] SCRIPT [ARGS...]
  e.g. .venv/bin/python bench/ab.py --base HEAD~1 --rounds 3 merge.py --clips grid --repeat 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
Rows = dict[str, tuple[float, float | None]]  # row key → (fps, CPU ms per frame)


def parse(text: str) -> Rows:
    """The rows of every table with an `fps` column, keyed by their label columns (and the
    line above the table, e.g. merge's precision)."""
    rows: Rows = {}
    head, context, last = None, "", ""
    for line in text.splitlines():
        if " fps " in f" {line} " and "frames" in line:
            # the line above names the table (merge's precision) unless it is a banner
            head = line
            context = "" if last.startswith(("CPU:", "setup:", "──")) else last
            continue
        if head is None or not line.strip():
            head = None if not line.strip() else head
            last = line.strip() or last
            continue
        key = " ".join(f"{context} | {line[:head.index('frames')]}".split()).strip(" |")
        fps_end = head.index(" fps") + 4
        cpu_end = head.index("CPU ms/fr") + 9 if "CPU ms/fr" in head else None
        fps, cpu = _field(line, fps_end, 7), _field(line, cpu_end, 9) if cpu_end else None
        if fps is not None:
            rows[key] = (fps, cpu)
    return rows


def _field(line: str, end: int, width: int) -> float | None:
    """The right-aligned number in the `width` columns ending at `end`, if any."""
    try:
        return float(line[max(0, end - width):end])
    except ValueError:
        return None


def run(tree: Path, script: str, args: list[str]) -> Rows:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    res = subprocess.run([sys.executable, str(tree / "bench" / script), *args], cwd=tree,
                         env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{script} failed on {tree}:\n{res.stderr[-3000:]}")
    print(res.stdout, flush=True)
    return parse(res.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_ab_") as tmp:
        base = Path(tmp) / "base"
        # the benches find the test footage beside the tree, as ../shared/data
        (Path(tmp) / "shared").symlink_to(ROOT.parent / "shared")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base),
                        a.base], check=True)
        try:
            got: dict[str, list[Rows]] = defaultdict(list)
            for r in range(a.rounds):
                order = [("base", base), ("new", ROOT)]
                for side, tree in order if r % 2 == 0 else order[::-1]:
                    print(f"── round {r + 1}: {side} ({tree})", flush=True)
                    got[side].append(run(tree, a.script, a.args))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base)], check=False)
    keys = [k for k in got["new"][0] if all(k in rows for s in got.values() for rows in s)]
    print(f"{a.script} {' '.join(a.args)}: base {a.base} vs working tree, median of "
          f"{a.rounds} round(s)")
    print(f"{'row':70} {'base fps':>8} {'new fps':>8} {'ratio':>6} {'base CPU':>9} "
          f"{'new CPU':>8} {'ratio':>6}")
    for k in keys:
        fb, fn = (statistics.median(rows[k][0] for rows in got[s]) for s in ("base", "new"))
        cpus = [[rows[k][1] for rows in got[s] if rows[k][1] is not None]
                for s in ("base", "new")]
        cb, cn = (statistics.median(c) if c else None for c in cpus)
        cpu = (f"{cb:9.1f} {cn:8.1f} {cn / cb:6.2f}" if cb and cn else "")
        print(f"{k[-70:]:70} {fb:8.1f} {fn:8.1f} {fn / fb:6.2f} {cpu}")


if __name__ == "__main__":
    main()
