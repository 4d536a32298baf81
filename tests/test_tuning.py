"""Measured layouts: real pools and in-process runs whose speed depends on the layout."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from facelab.executor import Executor, create_executor
from facelab.fsutil import pid_alive
from facelab.progress import NullReporter
from facelab.tuning import (
    MIN_POOL_ITEMS,
    Choice,
    Layout,
    cache_key,
    cached,
    cached_layout,
    candidates,
    layout_for,
    quickest,
    run_measured,
)

SERIAL, POOL = Layout(1, 2), Layout(2, 1)  # the candidates on 2 cores
# seconds per item under each layout: which one is faster is known, by a wide margin
SERIAL_WINS = {SERIAL: 0.005, POOL: 0.03}  # 200 vs 67 items/s
POOL_WINS = {SERIAL: 0.025, POOL: 0.006}  # 40 vs ≈ 330 items/s
KIND, KEY = "test", {"model": "toy", "resolution": 64}
N = 120  # enough to measure both candidates on 2 cores (40 at least)
TRIAL_S = 0.2

_W: dict[str, object] = {}


# ── work (module-level: the workers import it) ──────────────────────────────────────────


def _init(folder: str, cost: float, fail: int) -> None:
    """What a stage's init does: load once per worker; here, note the pid and the cost
    this layout gives each item."""
    Path(folder, f"init-{os.getpid()}").write_text("x")
    _W.update(folder=folder, cost=cost, fail=fail)


def _work(item: int) -> tuple[int, int]:
    if item == _W["fail"]:
        raise ValueError(f"item {item} failed")
    time.sleep(float(_W["cost"]))  # type: ignore[arg-type]
    with open(Path(str(_W["folder"]), f"call-{item:04d}"), "a") as f:  # twice: "xx"
        f.write("x")
    return item, os.getpid()


class Run:
    """One `run_measured` call: the layouts it started, its choice, what it discarded."""

    def __init__(self, folder: Path, costs: dict[Layout, float], fail: int = -1) -> None:
        self.folder, self.costs, self.fail = folder, costs, fail
        folder.mkdir(exist_ok=True)
        self.started: list[Layout] = []
        self.choices: list[Choice] = []
        self.discarded: list[tuple[int, int]] = []
        self.executors: list[Executor] = []  # held: only closing ends their workers

    def start(self, layout: Layout) -> Executor:
        self.started.append(layout)
        ex = create_executor(layout.workers, init=_init,
                             initargs=(str(self.folder), self.costs[layout], self.fail))
        self.executors.append(ex)
        return ex

    def __call__(self, n: int, cache: Path | None, **kw: object):
        return run_measured(list(range(n)), _work, self.start, KIND, KEY, cache=cache,
                            trial_s=TRIAL_S, cores=2, discard=self.discarded.append,
                            on_choice=self.choices.append, **kw)  # type: ignore[arg-type]

    def calls(self) -> dict[int, str]:
        return {int(p.name[5:]): p.read_text() for p in self.folder.glob("call-*")}

    def pool_pids(self) -> list[int]:
        pids = [int(p.name[5:]) for p in self.folder.glob("init-*")]
        return [p for p in pids if p != os.getpid()]


def _all_gone(pids: list[int], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


# ── candidates ──────────────────────────────────────────────────────────────────────────


def test_candidates_split_the_cores() -> None:
    assert candidates(1) == [Layout(1, 1)]
    assert candidates(2) == [SERIAL, POOL]
    assert candidates(6) == [Layout(1, 6), Layout(2, 3), Layout(3, 2), Layout(6, 1)]
    assert candidates(6, max_workers=4) == [Layout(1, 6), Layout(2, 3), Layout(3, 2),
                                            Layout(4, 1)]
    many = candidates(64)
    assert len(many) == 5 and many[0] == Layout(1, 64) and many[-1] == Layout(64, 1)
    assert all(lay.workers * lay.threads == 64 for lay in many)
    assert candidates(8, max_workers=1) == [Layout(1, 8)]
    assert layout_for(2, cores=8) == Layout(2, 4) and layout_for(16, cores=8) == Layout(16, 1)
    assert Layout.parse(POOL.tag) == POOL and str(POOL) == "2 processes × 1 thread"


# ── measuring ───────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("costs", "winner", "started"), [
    (SERIAL_WINS, SERIAL, [POOL, SERIAL]),  # the last trial's executor goes on
    (POOL_WINS, POOL, [POOL, SERIAL, POOL]),
], ids=["serial-wins", "pool-wins"])
def test_measures_picks_the_faster_caches_it_and_then_uses_the_cache(
        tmp_path: Path, costs: dict[Layout, float], winner: Layout,
        started: list[Layout]) -> None:
    cache = tmp_path / "layout.json"
    run = Run(tmp_path / "a", costs)
    reporter = NullReporter()
    results = list(run(N, cache, reporter=reporter))
    # every item once, in order: the trials' work is the job's output
    assert [i for i, _ in results] == list(range(N))
    assert run.calls() == {i: "x" for i in range(N)} and not run.discarded
    assert run.started == started
    [choice] = run.choices
    assert choice.source == "measured" and choice.layout == winner, choice
    assert set(choice.rates) == {SERIAL, POOL}
    loser = POOL if winner == SERIAL else SERIAL
    assert choice.rates[winner] > 1.5 * choice.rates[loser], choice  # a wide margin: CI
    [line] = reporter.collected
    assert line.startswith(f"test: {winner} measured fastest") and f"as fast as {loser}" in line
    assert line.endswith("kept for the next runs.")
    # the tail ran under the winner: in this process, or in the pool's
    assert (results[-1][1] == os.getpid()) == (winner == SERIAL)
    assert run.pool_pids() and _all_gone(run.pool_pids())
    # cached with its rates, per machine and per caller's key
    hit = cached(KIND, KEY, cores=2, cache=cache)
    assert hit is not None and hit.layout == winner
    assert hit.rates == pytest.approx(choice.rates, rel=1e-3)
    assert cached_layout(KIND, {**KEY, "resolution": 128}, cores=2, cache=cache) is None
    assert cached_layout(KIND, KEY, cores=4, cache=cache) is None

    # the next run reads the cache: no trial, even though the costs are now reversed
    again = Run(tmp_path / "b", POOL_WINS if costs is SERIAL_WINS else SERIAL_WINS)
    n = 48  # still long enough to measure
    assert [i for i, _ in again(n, cache)] == list(range(n))
    assert again.started == [winner] and again.choices[0].source == "cached"
    assert again.calls() == {i: "x" for i in range(n)}


def test_a_damaged_cache_is_measured_again_and_rewritten(tmp_path: Path) -> None:
    cache = tmp_path / "layout.json"
    key = cache_key(KIND, KEY, cores=2)
    for damage in ("{ not json", "[1, 2]", json.dumps({key: {"layout": "zz", "rates": []}}),
                   json.dumps({key: {"layout": "2x1"}})):
        cache.write_text(damage)
        assert cached(KIND, KEY, cores=2, cache=cache) is None
    cache.write_text("{ not json")
    run = Run(tmp_path / "a", SERIAL_WINS)
    assert [i for i, _ in run(N, cache)] == list(range(N))
    assert run.choices[0].source == "measured"
    assert cached_layout(KIND, KEY, cores=2, cache=cache) == SERIAL


def test_a_given_layout_bypasses_cache_and_measure(tmp_path: Path) -> None:
    cache = tmp_path / "layout.json"
    cache.write_text(json.dumps({cache_key(KIND, KEY, cores=2): {
        "layout": "1x2", "rates": {"1x2": 30.0, "2x1": 10.0}}}))
    before = cache.read_bytes()
    run = Run(tmp_path / "a", POOL_WINS)
    results = list(run(N, cache, layout=POOL))
    assert [i for i, _ in results] == list(range(N))
    assert run.started == [POOL] and run.choices[0] == Choice(POOL, "given")
    assert os.getpid() not in {pid for _, pid in results}
    assert cache.read_bytes() == before


@pytest.mark.parametrize(("n", "default", "expected"), [
    (MIN_POOL_ITEMS - 1, POOL, SERIAL),  # tiny: in-process, whatever else is said
    (30, None, SERIAL),  # too short to measure: the default, 1 process × every core
    (30, POOL, POOL),  # … or the caller's
])
def test_short_jobs_do_not_measure(tmp_path: Path, n: int, default: Layout | None,
                                   expected: Layout) -> None:
    cache = tmp_path / "layout.json"
    run = Run(tmp_path / "a", SERIAL_WINS)
    assert [i for i, _ in run(n, cache, default=default)] == list(range(n))
    assert run.started == [expected] and run.choices == [Choice(expected, "default")]
    assert not cache.exists()


@pytest.mark.parametrize(("fail", "measured"), [
    (10, False),  # in the first trial, a pool's
    (100, True),  # after the measurement, in the winner's pool
    (None, False),  # the caller stops reading early
])
def test_an_error_or_early_stop_closes_the_executor(tmp_path: Path, fail: int | None,
                                                    measured: bool) -> None:
    cache = tmp_path / "layout.json"
    run = Run(tmp_path / "a", POOL_WINS, fail=-1 if fail is None else fail)
    got: list[int] = []
    results = run(N, cache)
    if fail is None:
        for i, _ in results:
            got.append(i)
            if i == 5:
                break
        results.close()  # what leaving a for loop does, at once
    else:
        with pytest.raises(ValueError, match=f"item {fail} failed"):
            for i, _ in results:
                got.append(i)
    assert got == list(range(len(got))) and (fail is None or got == list(range(fail)))
    # computed ahead, not returned: handed to discard, never the failed one
    assert all(i > got[-1] for i, _ in run.discarded) and fail not in dict(run.discarded)
    assert run.pool_pids() and _all_gone(run.pool_pids())
    assert cache.exists() == measured


@pytest.mark.parametrize(("n", "expected"), [(40, SERIAL), (400, POOL)])
def test_cached_choice_counts_start_up_against_the_job_length(
        tmp_path: Path, n: int, expected: Layout) -> None:
    """A pool faster per item but slow to start: a short job runs in-process, a long one
    in the pool (40 items: 0 + 40/30 s against 3 + 40/50 s; 400: 13 s against 11 s)."""
    cache = tmp_path / "layout.json"
    cache.write_text(json.dumps({cache_key(KIND, KEY, cores=2): {
        "layout": POOL.tag, "rates": {SERIAL.tag: 30.0, POOL.tag: 50.0},
        "startup": {SERIAL.tag: 0.0, POOL.tag: 3.0}}}))
    assert quickest(n, {SERIAL: 30.0, POOL: 50.0}, {SERIAL: 0.0, POOL: 3.0}) == expected
    run = Run(tmp_path / "a", SERIAL_WINS)
    assert [i for i, _ in run(n, cache)] == list(range(n))
    assert run.started == [expected] and run.choices[0].source == "cached"


def test_measured_start_up_is_cached(tmp_path: Path) -> None:
    cache = tmp_path / "layout.json"
    run = Run(tmp_path / "a", POOL_WINS)
    list(run(N, cache))
    hit = cached(KIND, KEY, cores=2, cache=cache)
    assert hit is not None and set(hit.startup) == {SERIAL, POOL}
    # a pool starts processes that import and initialise: it costs more than in-process
    assert hit.startup[POOL] > hit.startup[SERIAL] >= 0
