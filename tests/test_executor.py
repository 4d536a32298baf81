"""The one worker pool: real processes, ordered results, clean aborts, core counting."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from facelab.errors import os_error_message
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
from facelab.fsutil import pid_alive
from facelab.jpeg import JpegError
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


def _hold_gil(item: tuple[int, int, str]) -> int:
    """Sleep `seconds` in native code that keeps the GIL (as a long native call may: no
    other thread of this worker runs meanwhile), then write this item's file."""
    i, seconds, folder = item
    if seconds:
        Path(folder, f"started-{i:02d}").write_text("x")
        ctypes.PyDLL(None).sleep(seconds)  # PyDLL: the GIL is held during the call
    Path(folder, f"item-{i:02d}").write_text("x")
    return i


def _fail(kind: str) -> None:
    if kind == "jpeg":
        raise JpegError("truncated", "ends inside its headers")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                  "ws/data_dst/merged/.00012.part-4242.png")


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


@pytest.mark.parametrize("kind", ["jpeg", "disk"])
def test_a_workers_error_reaches_the_driver_intact(kind: str) -> None:
    """What a worker raises is what the driver raises: same type, message and details, so
    the CLI prints the one line it prints for the main process (JpegError, a FacelabError
    whose __init__ takes other arguments than its message, broke the pool instead)."""
    with ProcessExecutor(2) as ex, pytest.raises(Exception) as caught:
        list(ex.map(_fail, [kind] * 4))
    e = caught.value
    if kind == "jpeg":
        assert type(e) is JpegError and (e.kind, str(e)) == (
            "truncated", "The JPEG data ends inside its headers.")
    else:
        assert type(e) is OSError and e.errno == errno.ENOSPC
        assert os_error_message(e) == (
            "No space left on device while writing ws/data_dst/merged/00012.png: free some "
            "space and run this again; the work done so far is kept.")


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


def _children(pid: int) -> list[int]:
    """The live child processes of `pid`, from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes in /proc")
def test_workers_and_server_die_at_once_with_a_killed_driver(tmp_path: Path) -> None:
    """`kill -9` of a stage: its workers and their fork server end within a second, even
    workers stuck in native code that holds the GIL (no thread of theirs can run), no
    worker writes after the driver is gone, and no helper prints after it."""
    driver = (
        "import sys\n"
        "from facelab.executor import ProcessExecutor\n"
        "from tests.test_executor import _hold_gil, _init_mark\n"
        "with ProcessExecutor(2, init=_init_mark, initargs=(sys.argv[1],)) as ex:\n"
        "    items = [(i, 0 if i < 2 else 30, sys.argv[1]) for i in range(8)]\n"
        "    for r in ex.map(_hold_gil, items):\n"
        "        print(r, flush=True)\n")
    err = tmp_path / "stderr"
    with err.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-c", driver, str(tmp_path)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=f, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "0"
        end = time.monotonic() + 30  # both workers inside their 30 s native call
        while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < end:
            time.sleep(0.02)
        tree = _children(proc.pid)
        tree += [k for p in tree for k in _children(p)]
        workers = _worker_pids(tmp_path)
        servers = {int((tmp_path / f"init-{p}").read_text()) for p in workers}
        assert len(workers) == 2 and set(workers) <= set(tree) and servers <= set(tree)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = time.monotonic()
    assert _all_gone(tree, timeout=3.0), [p for p in tree if not _gone(p)]
    assert time.monotonic() - killed < 2.0
    assert sorted(p.name for p in tmp_path.glob("item-*")) == ["item-00", "item-01"]
    assert err.read_text() == ""  # nothing on the terminal after the shell's "Killed"


def test_a_killed_driver_not_yet_reaped_counts_as_gone() -> None:
    """The watcher's fallback (no pidfd) polls the driver: a zombie has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(proc.pid)
        proc.send_signal(signal.SIGKILL)
        end = time.monotonic() + 10
        while not _gone(proc.pid) and time.monotonic() < end:  # killed, not reaped
            time.sleep(0.02)
        assert _gone(proc.pid) and Path(f"/proc/{proc.pid}").exists()
        assert not pid_alive(proc.pid)
    finally:
        proc.wait()


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
