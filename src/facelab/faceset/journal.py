"""The write-ahead journal of a faceset folder: every rename, move and copy of a curation
command is planned and written down before the first one happens, so undo restores the
exact previous state (same names, same bytes) and a crash mid-way is recoverable.

Layout, in `<faceset>/.facelab-journal/`: `NNNNNN.json`, the plan of operation N (its
phases, each a list of steps), written atomically before acting, and `NNNNNN.log`, one line
per transition, flushed to disk as it happens: `do K` (phase K begins), `done`, `undo K`
(undoing phase K begins; phases after K are fully undone), `undone`.

Why phases: within one phase no name is both a source and a destination, so whether a step
happened is read off the file system (its destination exists, its source does not) with no
per-step record — 10,000 renames cost a handful of fsyncs. A sort renames in two phases
(everyone to a hidden temporary name, then to the final names), so names that are both an
old and a new name never collide.

Step kinds: `move` [src, dst] (paths relative to the folder's parent, which holds the
faceset and its trash); `meta` [path, original_name] (the file is first copied into
`NNNNNN/` and undo copies it back); `copy` [absolute source, dst, blake2b of the bytes]
(undo removes the copy only while its bytes are still those copied).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.faces.faceimage import read_meta, update_meta
from facelab.faceset.folder import JOURNAL_DIR, Faceset
from facelab.fsutil import atomic_path, read_json, timestamp, write_json
from facelab.progress import NULL, Reporter

JOURNAL = JOURNAL_DIR
KINDS = ("move", "meta", "copy")
_LINE = re.compile(r"(do|undo) \d+|done|undone")

#: Called with the running step count after each step: crash tests raise or kill from it.
STEP_HOOK: Callable[[int], None] | None = None


@dataclass
class Phase:
    kind: str  # one of KINDS
    steps: list[list[str]] = field(default_factory=list)


@dataclass
class Op:
    """One journaled operation: its plan and how far it got."""

    id: int
    command: str
    time: str
    phases: list[Phase]
    log: list[str]

    @property
    def state(self) -> str:
        """done, undone, doing (interrupted forward) or undoing (interrupted undo)."""
        if "undone" in self.log:
            return "undone"
        if any(line.startswith("undo ") for line in self.log):
            return "undoing"
        return "done" if "done" in self.log else "doing"

    @property
    def files(self) -> int:
        return sum(len(p.steps) for p in self.phases)


def file_hash(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


class Journal:
    """The journal of one faceset folder; `root` is the folder's parent."""

    def __init__(self, faceset: Faceset) -> None:
        self.folder, self.root, self.trash = faceset.folder, faceset.root, faceset.trash
        self.dir = faceset.folder / JOURNAL
        self.label = faceset.label
        self._count = 0

    # -- reading -----------------------------------------------------------------------------

    def ops(self) -> list[Op]:
        """Every operation, oldest first."""
        if not self.dir.is_dir():
            return []
        return [self._load(p) for p in sorted(self.dir.glob("[0-9]*.json"))]

    def pending(self) -> Op | None:
        """The operation a crash interrupted (forward or undoing), if any."""
        return next((op for op in reversed(self.ops()) if op.state in ("doing", "undoing")),
                    None)

    def require_clear(self, side_hint: str) -> None:
        """Refuse to start while an operation is unfinished: one line that says what to do."""
        if (op := self.pending()) is not None:
            what = f"undo of `{op.command}`" if op.state == "undoing" else f"`{op.command}`"
            raise FacelabError(
                f"{self.label} has an unfinished {what} (operation {op.id}, {op.time}): run "
                f"`facelab faceset undo {side_hint}` to roll it back or `facelab faceset "
                f"resume {side_hint}` to finish it.")

    def _load(self, path: Path) -> Op:
        try:
            d = read_json(path)
            phases = [Phase(str(p["kind"]), [list(map(str, s)) for s in p["steps"]])
                      for p in d["phases"]]
            op = Op(int(d["id"]), str(d["command"]), str(d["time"]), phases, [])
        except (ValueError, KeyError, TypeError) as e:
            raise FacelabError(f"The journal file {path} is damaged ({e}).") from None
        for ph in op.phases:
            if ph.kind not in KINDS:
                raise FacelabError(f"The journal file {path} is damaged (phase {ph.kind}).")
            for s in ph.steps:
                self._check_step(ph.kind, s, path)
        log = path.with_suffix(".log")
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        op.log = [ln for ln in lines if _LINE.fullmatch(ln)]  # a torn last line is ignored
        return op

    def _check_step(self, kind: str, step: list[str], where: Path) -> None:
        """Journal paths stay inside the faceset's parent (a tampered file cannot reach out)."""
        rel = step[1] if kind == "copy" else step[0]
        rels = [rel, step[1]] if kind == "move" else [rel]
        n = {"move": 2, "meta": 2, "copy": 3}[kind]
        ok = len(step) == n and all(
            len(Path(r).parts) == 2 and not Path(r).is_absolute()
            and all(part not in ("", ".", "..") for part in Path(r).parts) for r in rels)
        if kind == "copy":
            ok = ok and Path(step[0]).is_absolute()
        if not ok:
            raise FacelabError(f"The journal file {where} is damaged (step {step}).")

    # -- acting ------------------------------------------------------------------------------

    def run(self, command: str, phases: list[Phase], reporter: Reporter = NULL) -> Op:
        """Write the plan, then carry it out phase by phase."""
        phases = [p for p in phases if p.steps]
        self.dir.mkdir(parents=True, exist_ok=True)
        ids = [int(p.stem) for p in self.dir.glob("[0-9]*.json")]
        op = Op(max(ids, default=0) + 1, command, timestamp(), phases, [])
        write_json(self._plan(op.id), {
            "id": op.id, "command": command, "time": op.time,
            "phases": [{"kind": p.kind, "steps": p.steps} for p in phases]})
        self._forward(op, 0, reporter)
        return op

    def resume(self, reporter: Reporter = NULL) -> Op | None:
        """Finish the interrupted operation in the direction it was going."""
        op = self.pending()
        if op is None:
            return None
        if op.state == "undoing":
            self._backward(op, reporter)
        else:
            started = [int(line.split()[1]) for line in op.log if line.startswith("do ")]
            self._forward(op, max(started, default=0), reporter)
        return op

    def undo(self, steps: int = 1, reporter: Reporter = NULL) -> list[Op]:
        """Undo the last `steps` operations not yet undone (an interrupted one counts)."""
        todo = [op for op in reversed(self.ops()) if op.state != "undone"][:steps]
        for op in todo:
            self._backward(op, reporter)
        return todo

    def _plan(self, op_id: int) -> Path:
        return self.dir / f"{op_id:06d}.json"

    def _mark(self, op: Op, line: str) -> None:
        with open(self._plan(op.id).with_suffix(".log"), "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        op.log.append(line)

    def _forward(self, op: Op, start: int, reporter: Reporter) -> None:
        with reporter.task(op.command, op.files) as task:
            for k in range(start, len(op.phases)):
                if f"do {k}" not in op.log:
                    self._mark(op, f"do {k}")
                phase = op.phases[k]
                for step in phase.steps:
                    getattr(self, f"_do_{phase.kind}")(op, step)
                    self._stepped()
                    task.advance()
        self._mark(op, "done")

    def _backward(self, op: Op, reporter: Reporter) -> None:
        if op.state == "undoing":  # phases after the last one begun are fully undone
            start = min(int(line.split()[1]) for line in op.log if line.startswith("undo "))
        elif op.state == "done":
            start = len(op.phases) - 1
        else:
            start = max((int(line.split()[1]) for line in op.log if line.startswith("do ")),
                        default=-1)
        with reporter.task(f"undo {op.command}", op.files) as task:
            for k in range(start, -1, -1):
                if f"undo {k}" not in op.log:
                    self._mark(op, f"undo {k}")
                phase = op.phases[k]
                for step in reversed(phase.steps):
                    getattr(self, f"_undo_{phase.kind}")(op, step, reporter)
                    self._stepped()
                    task.advance()
        self._mark(op, "undone")

    def _stepped(self) -> None:
        self._count += 1
        if STEP_HOOK is not None:
            STEP_HOOK(self._count)

    # -- steps (each idempotent: safe to repeat after a crash) ---------------------------------

    def _do_move(self, op: Op, step: list[str]) -> None:
        src, dst = self.root / step[0], self.root / step[1]
        if dst.exists() and not src.exists():
            return  # done before the crash
        if dst.exists():
            raise FacelabError(f"Cannot move {step[0]} to {step[1]}: {step[1]} exists "
                               f"(operation {op.id}; nothing is overwritten).")
        if not src.exists():
            raise FacelabError(f"Cannot move {step[0]}: it is gone (operation {op.id}).")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)

    def _undo_move(self, op: Op, step: list[str], reporter: Reporter) -> None:
        src, dst = self.root / step[0], self.root / step[1]
        if not dst.exists():
            if not src.exists():
                reporter.warn(f"{step[1]} is missing: cannot move it back to {step[0]}.")
            return  # never happened, or the user moved it since
        if src.exists():
            raise FacelabError(f"Cannot move {step[1]} back to {step[0]}: {step[0]} exists "
                               "(nothing is overwritten).")
        src.parent.mkdir(parents=True, exist_ok=True)
        os.rename(dst, src)

    def _backup(self, op: Op, rel: str) -> Path:
        return self.dir / f"{op.id:06d}" / rel.replace("/", "__")

    def _do_meta(self, op: Op, step: list[str]) -> None:
        path, backup = self.root / step[0], self._backup(op, step[0])
        if not backup.exists():
            _copy(path, backup)
        meta = read_meta(path)
        if meta.original_name is None:
            meta.original_name = step[1]
            update_meta(path, meta)

    def _undo_meta(self, op: Op, step: list[str], reporter: Reporter) -> None:
        backup = self._backup(op, step[0])
        if backup.exists():
            _copy(backup, self.root / step[0])

    def _do_copy(self, op: Op, step: list[str]) -> None:
        dst = self.root / step[1]
        if not dst.exists():
            _copy(Path(step[0]), dst)

    def _undo_copy(self, op: Op, step: list[str], reporter: Reporter) -> None:
        src, dst = Path(step[0]), self.root / step[1]
        if not dst.exists():
            return
        if file_hash(dst) == step[2] and src.is_file() and file_hash(src) == step[2]:
            dst.unlink()  # an exact copy whose original is still there: nothing is lost
            return
        target = unique(self.trash / dst.name, set())
        self.trash.mkdir(parents=True, exist_ok=True)
        os.rename(dst, target)
        reporter.warn(f"{step[1]} changed since it was copied: moved to {target}.")


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def unique(path: Path, taken: set[str]) -> Path:
    """`path`, or `stem_1`, `stem_2`... beside it: a name neither on disk nor in `taken`."""
    cand, i = path, 0
    while cand.exists() or cand.name in taken:
        i += 1
        cand = path.with_name(f"{path.stem}_{i}{path.suffix}")
    return cand


@contextlib.contextmanager
def step_hook(hook: Callable[[int], None] | None) -> Iterator[None]:
    """Install a step hook for the duration (crash tests)."""
    global STEP_HOOK
    old, STEP_HOOK = STEP_HOOK, hook
    try:
        yield
    finally:
        STEP_HOOK = old


def describe(op: Op) -> dict[str, Any]:
    return {"id": op.id, "command": op.command, "time": op.time, "state": op.state,
            "files": op.files}
