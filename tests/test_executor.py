"""The one worker pool: real processes, ordered results, clean aborts, core counting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from facelab.executor import (
    ProcessExecutor,
    SerialExecutor,
    affinity_cores,
    cgroup_cpus,
    create_executor,
    default_workers,
    parse_cfs,
    parse_cpu_max,
)
from tests.conftest import ROOT

_STATE: dict[str, str] = {}
FAIL = 6


# ── work functions (module-level: the workers import them) ──────────────────────────────


def _init_mark(folder: str) -> None:
    """Record this worker's start (pid and parent) in `folder`."""
    with open(Path(folder) / f"init-{os.getpid()}", "a") as f:
        f.write(f"{os.getppid()}\n")
    _STATE["folder"] = folder


def _init_fails(_: str) -> None:
    raise ValueError("no such model")


def _sleepy(item: tuple[int, float]) -> tuple[int, int]:
    i, seconds = item
    time.sleep(seconds)
    return i, os.getpid()


def _square(i: int) -> int:
    return i * i


def _write_or_fail(i: int) -> str:
    """Write this item's file; item FAIL fails late, after the items behind it are done."""
    if i == FAIL:
        time.sleep(1.0)
        raise ValueError(f"item {i} failed")
    path = Path(_STATE["folder"]) / f"item-{i:02d}"
    path.write_text("x")
    return str(path)


def _affinity(_: int) -> tuple[int, list[int]]:
    time.sleep(0.2)
    return os.getpid(), sorted(os.sched_getaffinity(0))


def _unlink(path: str) -> None:
    Path(path).unlink()


# ── helpers ─────────────────────────────────────────────────────────────────────────────


def _worker_pids(folder: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in folder.glob("init-*")]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for its reaper has finished too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _all_gone(pids: list[int], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


# ── the pool ────────────────────────────────────────────────────────────────────────────


def test_results_in_input_order_with_uneven_times(tmp_path: Path) -> None:
    items = [(i, (i * 7 % 5) * 0.03) for i in range(24)]
    with ProcessExecutor(3, init=_init_mark, initargs=(str(tmp_path),)) as ex:
        results = list(ex.map(_sleepy, items))
    assert [i for i, _ in results] == list(range(24))
    pids = _worker_pids(tmp_path)
    assert len({pid for _, pid in results}) > 1 and {pid for _, pid in results} <= set(pids)
    # init ran once in each worker, and never in the driver
    assert all((tmp_path / f"init-{p}").read_text().count("\n") == 1 for p in pids)
    assert os.getpid() not in pids and 1 < len(pids) <= 3
    assert _all_gone(pids)


def test_serial_and_process_executors_agree(tmp_path: Path) -> None:
    with create_executor(1, init=_init_mark, initargs=(str(tmp_path / "s"),)) as serial:
        assert isinstance(serial, SerialExecutor)
        (tmp_path / "s").mkdir()
        one = list(serial.map(_square, range(40)))
        assert _worker_pids(tmp_path / "s") == [os.getpid()]  # in-process, once
    (tmp_path / "p").mkdir()
    with create_executor(2, init=_init_mark, initargs=(str(tmp_path / "p"),)) as pool:
        assert isinstance(pool, ProcessExecutor)
        two = list(pool.map(_square, range(40)))
    assert one == two == [i * i for i in range(40)]


def test_init_is_lazy_in_the_serial_executor(tmp_path: Path) -> None:
    with SerialExecutor(_init_fails, ("x",)) as ex:
        assert list(ex.map(_square, [])) == []  # no item: the models are never loaded


@pytest.mark.parametrize("workers", [1, 2])
def test_an_init_error_is_the_first_items_error(workers: int) -> None:
    with (create_executor(workers, init=_init_fails, initargs=("x",)) as ex,
          pytest.raises(ValueError, match="no such model")):
        list(ex.map(_square, range(10)))


def test_error_in_item_k_records_before_discards_after(tmp_path: Path) -> None:
    recorded: list[str] = []
    discarded: list[str] = []

    def discard(path: str) -> None:
        discarded.append(path)
        _unlink(path)

    with (pytest.raises(ValueError, match=f"item {FAIL} failed"),
          ProcessExecutor(2, init=_init_mark, initargs=(str(tmp_path),)) as ex):
        for path in ex.map(_write_or_fail, range(30), discard=discard):
            recorded.append(path)
    assert [Path(p).name for p in recorded] == [f"item-{i:02d}" for i in range(FAIL)]
    # the items behind the slow failing one finished first: their files were removed
    assert discarded and all(int(Path(p).name[5:]) > FAIL for p in discarded)
    assert sorted(p.name for p in tmp_path.glob("item-*")) == [Path(p).name for p in recorded]
    assert len(discarded) <= 3 * 2  # a few in flight per worker, not all 30
    assert _all_gone(_worker_pids(tmp_path))


@pytest.mark.parametrize("stop", ["break", "ctrl-c"])
def test_caller_stopping_early_discards_what_ran_ahead(tmp_path: Path, stop: str) -> None:
    recorded: list[str] = []
    with (pytest.raises(KeyboardInterrupt) if stop == "ctrl-c" else nullcontext(),
          ProcessExecutor(2, init=_init_mark, initargs=(str(tmp_path),)) as ex):
        for path in ex.map(_write_or_fail, range(FAIL), discard=_unlink):
            recorded.append(path)
            if len(recorded) == 2:
                if stop == "ctrl-c":
                    raise KeyboardInterrupt
                break
    assert sorted(p.name for p in tmp_path.glob("item-*")) == ["item-00", "item-01"]
    assert _all_gone(_worker_pids(tmp_path))


def test_closing_with_a_map_left_suspended_discards_it(tmp_path: Path) -> None:
    with ProcessExecutor(2, init=_init_mark, initargs=(str(tmp_path),)) as ex:
        results = ex.map(_write_or_fail, range(FAIL), discard=_unlink)
        first = next(results)
    assert [p.name for p in tmp_path.glob("item-*")] == [Path(first).name]
    assert _all_gone(_worker_pids(tmp_path))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks here")
def test_pin_gives_each_worker_its_own_core() -> None:
    cores = affinity_cores()
    workers = max(2, cores)
    with ProcessExecutor(workers, pin=True) as ex:
        seen = dict(ex.map(_affinity, range(4 * workers)))
    assert all(len(cpus) == 1 for cpus in seen.values())
    if cores >= 2:
        assert len({cpus[0] for cpus in seen.values()}) == len(seen)


@pytest.mark.skipif(os.name != "posix", reason="workers watch their driver on POSIX")
def test_workers_die_with_a_killed_driver(tmp_path: Path) -> None:
    driver = (
        "import sys\n"
        "from facelab.executor import ProcessExecutor\n"
        "from tests.test_executor import _init_mark, _sleepy\n"
        "with ProcessExecutor(2, init=_init_mark, initargs=(sys.argv[1],)) as ex:\n"
        "    items = [(0, 0.0), (1, 0.0)] + [(i, 120.0) for i in range(2, 8)]\n"
        "    for r in ex.map(_sleepy, items):\n"
        "        print(r, flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("(0,")
        end = time.monotonic() + 30
        while len(_worker_pids(tmp_path)) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        pids = _worker_pids(tmp_path)
        servers = {int((tmp_path / f"init-{p}").read_text()) for p in pids}
        assert len(pids) == 2 and proc.pid not in pids
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _all_gone(pids + sorted(servers))


# ── counting cores ──────────────────────────────────────────────────────────────────────


def test_parse_cgroup_quotas() -> None:
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("200000 100000\n") == 2.0
    assert parse_cpu_max("150000 100000") == 1.5
    assert parse_cpu_max("") is None
    assert parse_cfs("-1\n", "100000\n") is None
    assert parse_cfs("50000\n", "100000\n") == 0.5


def test_cgroup_cpus_takes_the_smallest_quota_on_the_path(tmp_path: Path) -> None:
    (tmp_path / "app" / "job").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "app" / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "app" / "job" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(tmp_path, "0::/app/job\n") == 3.0
    assert cgroup_cpus(tmp_path, "0::/\n") is None
    v1 = tmp_path / "v1" / "cpu,cpuacct" / "docker"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpus(tmp_path / "v1", "4:cpu,cpuacct:/docker\n2:memory:/docker\n") == 1.5


def test_default_workers_honours_the_affinity_mask_and_limit() -> None:
    assert 1 <= default_workers() <= affinity_cores()
    assert default_workers(limit=1) == 1
    if not hasattr(os, "sched_setaffinity"):
        return
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from facelab.executor import default_workers; print(default_workers(4))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "1"
