"""`facelab train --nproc N`: N ranks of one data-parallel run, started here as torchrun would.

The launcher (this process, without PyTorch) finds a free port on 127.0.0.1 and starts N
`python -m facelab.cli.train_launch` processes with torchrun's variables (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and the run's options as JSON; each calls
`trainer.train`, which trains data-parallel under those variables (train/ddp.py). Rank 0
draws on this terminal; the others' stderr is kept aside for when one fails. Ctrl-C or
SIGTERM here is sent on to every rank (the ranks agree on the iteration to stop at, rank 0
saves); SIGUSR1/SIGUSR2 go to rank 0 (save now, preview now). A rank that fails ends the
others (SIGKILL after GRACE_S: a rank waiting on a dead peer cannot stop by itself); its
one-line error is this command's, and each rank dies with the launcher (kill -9 included).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO, Any

from facelab.errors import FacelabError
from facelab.train.models import ModelOptions
from facelab.train.run_options import TrainOptions, TrainReport

RUN_ENV = "FACELAB_TRAIN_RUN"  # the run as JSON, for the ranks
GRACE_S = 2.0  # after a rank failed, how long the others get to end by themselves
POLL_S = 0.1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(root: Path, opts: TrainOptions, stop: threading.Event | None, *,
           quiet: bool = False, verbose: bool = False) -> TrainReport:
    """Train `opts` in workspace `root` on `opts.nproc` local ranks; rank 0's report."""
    n = opts.nproc
    run = json.dumps({"workspace": str(root), "quiet": quiet, "verbose": verbose,
                      "options": asdict(opts)}, default=str)
    base = {**os.environ, RUN_ENV: run, "WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
            # as torchrun: the ranks share the cores instead of each taking all of them
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                              str(max(1, (os.cpu_count() or 1) // n)))}
    procs: list[subprocess.Popen[bytes]] = []
    files: list[tuple[IO[bytes], IO[bytes] | None]] = []
    with contextlib.ExitStack() as stack:
        for rank in range(n):
            out = stack.enter_context(tempfile.TemporaryFile())
            err = None if rank == 0 else stack.enter_context(tempfile.TemporaryFile())
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            files.append((out, err))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "facelab.cli.train_launch"], env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err))
        try:
            failed = _wait(procs, stop)
        finally:
            for p in procs:  # only after an exception here: every rank has ended otherwise
                if p.poll() is None:
                    p.kill()
                    p.wait()
        results = [_result(out) for out, _ in files]
        if not failed:
            return _report(results[0]["report"])
        _fail(failed, results, [err for _, err in files], [p.returncode for p in procs])
    raise AssertionError("unreachable")


def _wait(procs: list[subprocess.Popen[bytes]], stop: threading.Event | None) -> list[int]:
    """Wait for every rank, passing stop and requests on; the ranks seen failing first."""
    failed: list[int] = []
    forwarded = False
    kill_at = 0.0
    while True:
        codes = [p.poll() for p in procs]
        if not failed:
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            kill_at = time.monotonic() + GRACE_S
        if all(c is not None for c in codes):
            return failed
        if failed and time.monotonic() > kill_at:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        if stop is not None and stop.is_set() and not forwarded:
            forwarded = True
            for p in procs:
                _signal(p, signal.SIGTERM)
        for name, sig in (("save_now", "SIGUSR1"), ("preview_now", "SIGUSR2")):
            request = getattr(stop, name, None)
            if request is not None and request.is_set() and hasattr(signal, sig):
                request.clear()
                _signal(procs[0], getattr(signal, sig))
        time.sleep(POLL_S)


def _signal(p: subprocess.Popen[bytes], sig: int) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)


def _result(out: IO[bytes]) -> dict[str, Any]:
    """What a rank said it did: {"report": …}, {"error": line} or {"crash": traceback}."""
    out.seek(0)
    lines = out.read().decode("utf-8", "replace").strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else {}
    except ValueError:
        found = {}
    return found if isinstance(found, dict) else {}


def _fail(failed: list[int], results: list[dict[str, Any]], errs: list[IO[bytes] | None],
          codes: list[int | None]) -> None:
    """Raise the failure that ended the run: a rank's own error line before the errors of
    the ranks that lost it as a peer."""
    n = len(results)
    for r in failed:
        if "error" in results[r]:
            raise FacelabError(str(results[r]["error"]))
    r = failed[0]
    crash = results[r].get("crash")
    if crash:
        sys.stderr.write(str(crash))
        raise FacelabError(f"Rank {r} of {n} crashed (traceback above); the last save is kept.")
    said = ""
    err = errs[r]
    if err is not None:
        err.seek(0)
        tail = err.read().decode("utf-8", "replace").strip().splitlines()
        said = f": {tail[-1]}" if tail else ""
    raise FacelabError(f"Rank {r} of {n} ended with exit status {codes[r]}{said}; the last "
                       "save is kept.")


def _report(doc: dict[str, Any]) -> TrainReport:
    doc = dict(doc)
    doc["options"] = ModelOptions(**doc["options"])
    doc["losses"] = [tuple(v) for v in doc["losses"]]
    doc["preview"] = None if doc["preview"] is None else Path(doc["preview"])
    return TrainReport(**doc)


def _report_doc(rep: TrainReport) -> dict[str, Any]:
    doc = {f.name: getattr(rep, f.name) for f in fields(rep)}
    doc["options"] = asdict(rep.options)
    return doc


def main() -> None:
    """One rank (started by `launch`): train, then say how on stdout's last line."""
    early = threading.Event()  # a stop before the handlers below are in place
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: early.set())
    from facelab.cli.common import State, stop_on_signals
    from facelab.cli.train_cmd import _reporter
    from facelab.executor import die_with_parent
    from facelab.progress import NullReporter
    from facelab.train.run_options import Ranks
    from facelab.train.trainer import train
    from facelab.workspace import Workspace

    die_with_parent()  # the launcher
    run = json.loads(os.environ[RUN_ENV])
    lead = Ranks.from_env().lead
    reporter = _reporter(State(quiet=run["quiet"], verbose=run["verbose"])) if lead else None
    result: dict[str, Any]
    try:
        opts = TrainOptions(**run["options"])
        with stop_on_signals(requests=True) as stop:
            if early.is_set():
                stop.set()
            rep = train(Workspace(Path(run["workspace"])), opts, reporter or NullReporter(),
                        stop)
        result = {"report": _report_doc(rep)}
    except FacelabError as exc:
        result = {"error": str(exc)}
    except Exception:  # e.g. a peer that failed first: the launcher picks what to show
        result = {"crash": traceback.format_exc()}
    finally:
        if reporter is not None:
            reporter.end()
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # everything is written (saves fsynced, workers ended): skip the interpreter's teardown
    # of PyTorch, which took seconds of a short run on a busy machine
    os._exit(0 if "report" in result else 1)


if __name__ == "__main__":
    main()
