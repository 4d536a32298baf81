"""Sign a result as the last step of writing it, and file its manifest in the store."""

from __future__ import annotations

from pathlib import Path

from facelab.fsutil import read_json, write_json
from facelab.provenance.credentials import store
from facelab.provenance.credentials.keys import ensure_keys
from facelab.provenance.credentials.manifest import (
    Claims,
    Ingredient,
    Signing,
    file_sha256,
    mime_of,
    sign_bytes,
    sign_file,
)
from facelab.provenance.mark import Mark

HASHES = "input_hashes.json"  # beside the key: inputs' hashes by path, size and mtime


def signing_for(mark: Mark, store_dir: Path | None, inputs: dict[str, Path] | None = None
                ) -> Signing:
    """The signing setup for results of `mark`'s model: the user's key (made on first
    use), the store, and the `inputs` ({"src": path, "dst": path}) as hashed ingredients.
    Call it once per run, in the process that starts any workers."""
    keys = ensure_keys()
    ingredients = tuple(Ingredient(role, p.name, _input_hash(p, keys.folder / HASHES))
                        for role, p in sorted((inputs or {}).items()) if p.is_file())
    return Signing(Claims.from_mark(mark, ingredients), store_dir, keys.folder)


def _input_hash(path: Path, cache: Path) -> str:
    """`path`'s SHA-256, remembered by path, size and time (a 1 GB input takes ~0.7 s to
    hash here, and every merge and assemble names its inputs). Kept beside the key, not in
    the store: the store is for publishing, and the paths are the user's."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    known: dict[str, str] = {}
    if cache.is_file():
        try:
            known = read_json(cache)
        except (OSError, ValueError):
            known = {}
        if isinstance(known.get(key), str):
            return known[key]
    digest = file_sha256(path)
    known = {k: v for k, v in known.items() if not k.startswith(f"{path.resolve()}|")}
    write_json(cache, {**known, key: digest})
    return digest


def sign_result_bytes(data: bytes, name: str, signing: Signing) -> bytes:
    """`data` (a PNG or JPEG named `name`, already marked) with its manifest embedded."""
    mime = mime_of(name)
    if mime is None:
        raise ValueError(f"{name}: c2pa cannot embed a manifest in this format")
    signed, manifest = sign_bytes(data, mime, signing, Path(name).name)
    if signing.store is not None:
        store.put(signing.store, signing.claims.payload, name, manifest)
    return signed


def sign_result_file(src: Path, dest: Path, signing: Signing, name: str | None = None) -> bool:
    """Write `src` (a finished, marked result) to `dest` with its manifest embedded, `name`
    being the result's file name (default: `dest`'s); False when the format takes none
    (webm): then nothing is written."""
    name = name or dest.name
    if mime_of(name) is None:
        return False
    manifest = sign_file(src, dest, signing, name)
    if signing.store is not None:
        store.put(signing.store, signing.claims.payload, name, manifest)
    return True


def workspace_inputs(root: Path) -> dict[str, Path]:
    """The workspace's input videos (`data_src.*`, `data_dst.*`) by side, those present."""
    from facelab.workspace import VIDEO_EXTENSIONS

    found = {}
    for side in ("src", "dst"):
        videos = sorted(p for p in root.glob(f"data_{side}.*")
                        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if videos:
            found[side] = videos[0]
    return found


def workspace_signing(root: Path, mark: Mark) -> Signing:
    """`signing_for` a workspace's results: its inputs, its `credentials/` store."""
    return signing_for(mark, root / store.FOLDER, workspace_inputs(root))
