"""The manifest store: every manifest facelab embeds is also kept as a `.c2pa` sidecar in
a folder (a workspace's `credentials/`, or one the user publishes), filed under the
watermark payload it is soft-bound to: `STORE/<payload, 8 hex digits>/<file name>.c2pa`.

A copy of a result stripped of its metadata still carries the watermark; its payload names
the folder to look in. The payload identifies the model (facelab tag + 24 bits of its id's
hash), so the folder holds the manifests of every result of that model: they make the same
claims, and `verify` reports the newest. A rerun that rewrites a result rewrites its entry.
"""

from __future__ import annotations

from pathlib import Path

from facelab.fsutil import atomic_path

SUFFIX = ".c2pa"
FOLDER = "credentials"  # inside a workspace


def entry_dir(store: Path, payload: int) -> Path:
    return store / f"{payload:08x}"


def put(store: Path, payload: int, name: str, manifest: bytes) -> Path:
    """Keep `manifest` (a C2PA manifest store, as c2pa's signing returns it) for the result
    called `name`; written atomically."""
    path = entry_dir(store, payload) / f"{Path(name).name}{SUFFIX}"
    with atomic_path(path) as tmp:
        tmp.write_bytes(manifest)
    return path


def lookup(store: Path, payload: int) -> list[Path]:
    """The sidecars filed under `payload`, newest first."""
    folder = entry_dir(store, payload)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.suffix == SUFFIX and p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def workspace_store(start: Path) -> Path | None:
    """The `credentials/` folder of the workspace holding `start` (a file or folder), if
    `start` lies in one (a folder with `model/` and `data_dst/`), else None."""
    for d in [start, *start.parents] if start.is_dir() else start.parents:
        if (d / "model").is_dir() and (d / "data_dst").is_dir():
            return d / FOLDER
    return None


def payloads(store: Path) -> list[int]:
    """The payloads `store` files manifests under."""
    if not store.is_dir():
        return []
    found = []
    for d in store.iterdir():
        if d.is_dir() and len(d.name) == 8:
            try:
                found.append(int(d.name, 16))
            except ValueError:
                continue
    return sorted(found)
