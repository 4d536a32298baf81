"""Model saves that survive crashes and never execute code on load.

Tensors go to safetensors and everything else to JSON, so loading a model folder from
anywhere cannot run pickled code. A save writes `.NAME_*.pending` files, fsyncs them, then
renames `NAME_manifest.json` into place (the commit point) and only then renames the pending
files over the old ones; a load verifies every file against the manifest's sizes and sha256,
finishes a committed save whose renames were cut short, and otherwise falls back to the
newest intact backup in `NAME_backups/<iteration>/`. A kill -9 at any instant therefore
leaves the last committed save (or a backup) loadable. Weights or optimizer moments that
are not finite (a run that diverged) are refused before anything is written, so a save
never holds NaN or inf and the last good one stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from facelab.errors import FacelabError
from facelab.train.checkpoint_state import (
    check_finite,
    join_tensors,
    model_tensors,
    rng_state,
    set_rng_state,
    split_tensors,
)

FORMAT = "facelab-checkpoint-1"
FILES = ("weights.safetensors", "optimizer.safetensors", "state.json")
PREDICTION_FILES = ("weights.safetensors", "state.json")  # what a merge reads
KEEP_MARK = ".keep"  # in a backup folder: made on request, never pruned by `keep_backups`
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Warn = Callable[[str], None]


class _Damaged(Exception):
    """A save that does not verify; carries the reason for the warning."""


def check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise FacelabError(f"Model name {name!r} must be letters, digits, '.', '_' or '-'.")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _pending(folder: Path, fname: str) -> Path:
    return folder / f".{fname}.pending"


# --- tensors <-> JSON skeleton ------------------------------------------------------------


# --- saving -------------------------------------------------------------------------------


def _commit(folder: Path, name: str, blobs: dict[str, bytes], iteration: Any) -> None:
    """Write pending files, rename the manifest in (commit), then the files."""
    folder.mkdir(parents=True, exist_ok=True)
    for fname, data in blobs.items():
        _write_bytes(_pending(folder, fname), data)
    manifest = {
        "format": FORMAT,
        "name": name,
        "iteration": iteration,
        "files": {
            fname: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for fname, data in blobs.items()
        },
    }
    mpath = folder / f"{name}_manifest.json"
    tmp = folder / f".{name}_manifest.json.tmp"
    _write_bytes(tmp, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    _fsync_dir(folder)
    os.replace(tmp, mpath)
    _finish(folder, list(blobs))


def _finish(folder: Path, fnames: list[str]) -> None:
    for fname in fnames:
        if _pending(folder, fname).exists():
            os.replace(_pending(folder, fname), folder / fname)
    _fsync_dir(folder)


def save(
    folder: Path,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    *,
    arch: str,
    fixed_options: dict[str, Any],
    keep_backups: int = 3,
    backup: bool = False,
) -> None:
    """Save atomically; with `backup`, also copy this save to `NAME_backups/<iteration>/`.
    Raises `NonFinite` (writing nothing) when a weight or optimizer value is NaN or inf.

    `state` (options, iteration, loss history...) must be JSON-safe. The caller decides when
    a backup is due (e.g. every N iterations); only the newest `keep_backups` are kept.
    """
    check_name(name)
    folder = Path(folder)
    opt_tensors: dict[str, torch.Tensor] = {}
    skeleton = split_tensors(optimizer.state_dict(), "opt", opt_tensors) if optimizer else None
    weights = model_tensors(model)
    check_finite(name, "weight", weights)
    check_finite(name, "optimizer value", opt_tensors)
    doc = {
        "arch": arch,
        "fixed_options": fixed_options,
        "state": state,
        "optimizer": skeleton,
        "rng": rng_state(),
    }
    blobs = {
        f"{name}_weights.safetensors": st_save(weights),
        f"{name}_optimizer.safetensors": st_save(opt_tensors),
        f"{name}_state.json": (json.dumps(doc) + "\n").encode("utf-8"),
    }
    iteration = state.get("iteration")
    _recover(folder, name)
    _commit(folder, name, blobs, iteration)
    if backup:
        _write_backup(folder / f"{name}_backups", name, blobs, iteration, keep_backups)


def _write_backup(
    root: Path, name: str, blobs: dict[str, bytes], iteration: Any, keep: int
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".*.tmp"):  # left by a crash during an earlier backup
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{iteration}.tmp"
    _commit(tmp, name, blobs, iteration)
    final = root / str(iteration)
    if final.exists():
        if (final / KEEP_MARK).exists():  # a backup the user asked for stays one
            (tmp / KEEP_MARK).touch()
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    periodic = [p for p in _backups(root) if not (p / KEEP_MARK).exists()]
    for old in periodic[keep:] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _backups(root: Path) -> list[Path]:
    """Backup folders, newest iteration first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found, key=lambda p: int(p.name), reverse=True)


# --- loading ------------------------------------------------------------------------------


def _read_manifest(folder: Path, name: str) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / f"{name}_manifest.json").read_bytes())
    except FileNotFoundError:
        raise _Damaged("its manifest is missing") from None
    except ValueError:
        raise _Damaged("its manifest is unreadable") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _Damaged("its manifest is not a facelab checkpoint manifest")
    return manifest


def _verified(path: Path, entry: dict[str, Any]) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    ok = len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
    return data if ok else None


def _read_set(folder: Path, name: str, files: tuple[str, ...] = FILES) -> dict[str, bytes]:
    """The verified bytes of one save (of `files` of it), finishing its renames if they
    were cut short."""
    manifest = _read_manifest(folder, name)
    blobs: dict[str, bytes] = {}
    rolled = []
    for fname in (f"{name}_{f}" for f in files):
        entry = manifest["files"].get(fname)
        if entry is None:
            raise _Damaged(f"its manifest does not list {fname}")
        data = _verified(folder / fname, entry)
        if data is None:
            data = _verified(_pending(folder, fname), entry)
            if data is None:
                raise _Damaged(f"{fname} is missing, truncated or altered")
            rolled.append(fname)
        blobs[fname] = data
    if rolled:
        _finish(folder, rolled)
    return blobs


def _recover(folder: Path, name: str) -> None:
    """Finish a committed save whose renames were interrupted, before overwriting pending."""
    if any(_pending(folder, f"{name}_{f}").exists() for f in FILES):
        with contextlib.suppress(_Damaged):
            _read_set(folder, name)


def load(
    folder: Path,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    expected_arch: str,
    fixed_options: dict[str, Any],
    warn: Warn,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load into `model` and `optimizer`, restore RNG states, and return the saved `state`.
    Without an optimizer (a prediction), its file is neither read nor needed."""
    check_name(name)
    folder = Path(folder)
    if not exists(folder, name) and not _backups(folder / f"{name}_backups"):
        raise FacelabError(f"There is no model named {name!r} in {folder}.")
    files = FILES if optimizer is not None else PREDICTION_FILES
    try:
        blobs = _read_set(folder, name, files)
    except _Damaged as damage:
        blobs = _fallback(folder, name, str(damage), warn, files)
    try:
        doc = json.loads(blobs[f"{name}_state.json"])
        weights = st_load(blobs[f"{name}_weights.safetensors"])
        opt_tensors = st_load(blobs[f"{name}_optimizer.safetensors"]) \
            if optimizer is not None else {}
    except (ValueError, KeyError) as exc:  # verified bytes that still do not parse
        raise FacelabError(f"Model {name!r} in {folder} cannot be read: {exc}.") from None
    _check_compatible(folder, name, doc, expected_arch, fixed_options)
    _check_shapes(folder, name, model, weights)
    model.load_state_dict(weights, strict=True)
    if optimizer is not None and doc["optimizer"] is not None:
        optimizer.load_state_dict(join_tensors(doc["optimizer"], opt_tensors))
    if restore_rng:
        set_rng_state(doc["rng"])
    return doc["state"]


def _fallback(folder: Path, name: str, reason: str, warn: Warn,
              files: tuple[str, ...] = FILES) -> dict[str, bytes]:
    for backup in _backups(folder / f"{name}_backups"):
        try:
            blobs = _read_set(backup, name, files)
        except _Damaged:
            continue
        warn(
            f"The save of model {name!r} in {folder} is damaged ({reason}); "
            f"loading the backup from iteration {backup.name} instead."
        )
        return blobs
    raise FacelabError(
        f"The save of model {name!r} in {folder} is damaged ({reason}) and it has no intact backup."
    )


def prediction_files(folder: Path, name: str) -> list[Path]:
    """The files a load without an optimizer will read: the save's manifest, weights and
    state when they verify, else those of the newest intact backup (what `load` falls back
    to), for a worker that gets only these files (a cluster's)."""
    for where in (folder, *_backups(folder / f"{name}_backups")):
        try:
            _read_set(where, name, PREDICTION_FILES)
        except _Damaged:
            continue
        return [where / f"{name}_manifest.json",
                *(where / f"{name}_{f}" for f in PREDICTION_FILES)]
    return []


def _check_compatible(
    folder: Path, name: str, doc: dict[str, Any], arch: str, fixed: dict[str, Any]
) -> None:
    if doc.get("arch") != arch:
        raise FacelabError(
            f"Model {name!r} in {folder} is a {doc.get('arch')!r} model, not {arch!r}; "
            "pick another name or folder."
        )
    saved = doc.get("fixed_options") or {}
    for key, value in fixed.items():
        # compare through JSON so tuples and lists of the same values agree
        if json.loads(json.dumps(value)) != saved.get(key, ...):
            was = saved.get(key, "no value")
            raise FacelabError(
                f"Option {key!r} of model {name!r} is fixed at creation: it was {was!r}, "
                f"not {value!r}; keep it or start a new model."
            )


def _check_shapes(
    folder: Path, name: str, model: torch.nn.Module, weights: dict[str, torch.Tensor]
) -> None:
    """Refuse before touching the model, since load_state_dict would copy partially."""
    own = model.state_dict()
    for key in sorted(set(own) ^ set(weights)):
        where = "the model" if key in own else "the save"
        raise FacelabError(
            f"Model {name!r} in {folder} does not fit this network: {key!r} is only in {where}."
        )
    for key, tensor in own.items():
        if tensor.shape != weights[key].shape:
            raise FacelabError(
                f"Model {name!r} in {folder} does not fit this network: {key!r} has shape "
                f"{tuple(weights[key].shape)}, not {tuple(tensor.shape)}."
            )


def exists(folder: Path, name: str) -> bool:
    """Whether a committed save of `name` is in `folder` (it may still fail to verify)."""
    return (Path(folder) / f"{name}_manifest.json").is_file()


def list_models(folder: Path) -> list[str]:
    """Names of the models saved side by side in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len("_manifest.json")] for p in folder.glob("*_manifest.json"))
