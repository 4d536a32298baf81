"""Build and sign facelab's C2PA manifest, embedded in the final bytes of a result.

What it says: one `c2pa.created` action whose digital source type is IPTC's
`trainedAlgorithmicMedia`, by facelab and its version, with the model id as a parameter;
the src and dst inputs as ingredients given by title and SHA-256 only (no thumbnail of
anything: the settings below turn c2pa's automatic thumbnail off, so no face enters the
manifest); and a `c2pa.soft-binding` assertion carrying the invisible watermark's payload,
which is how a copy stripped of its metadata finds this manifest again (store.py).

Signing comes last: the caller passes the bytes (or file) that already hold the XMP mark
and the watermark, so the manifest's hard binding (a hash of every other byte) covers them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import c2pa

from facelab import __version__
from facelab.fsutil import naming, temp_sibling
from facelab.provenance.credentials.keys import KeyPair, load_keys
from facelab.provenance.mark import TOOL, TRAINED_ALGORITHMIC_MEDIA, Mark
from facelab.provenance.watermark import model_payload

SOFT_BINDING_ALG = "org.facelab.watermark.1"  # the watermark of provenance/watermark/
MODEL_PARAM = "org.facelab.model_id"
INPUTS_PARAM = "org.facelab.inputs"  # role → "title sha256:HEX" (ingredients drop `hash`)
#: suffix → MIME type, for the formats c2pa-python 0.38 embeds into (webm: none, see
#: docs/PROVENANCE.md; Matroska has no C2PA box)
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
        ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
        ".avi": "video/x-msvideo"}
#: no thumbnails (they would carry faces), and no network while reading or signing
SETTINGS: dict[str, Any] = {
    "builder": {"thumbnail": {"enabled": False}},
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
}


@dataclass(frozen=True)
class Ingredient:
    """An input of the result, by name and content hash only."""

    role: str  # "src" or "dst"
    title: str  # its file name
    sha256: str  # hex


@dataclass(frozen=True)
class Claims:
    """What facelab's manifest asserts about one result."""

    model_id: str  # NAME@ITERATION:sha256-start, as in the XMP mark
    created: str = ""
    ingredients: tuple[Ingredient, ...] = ()

    @classmethod
    def from_mark(cls, mark: Mark, ingredients: tuple[Ingredient, ...] = ()) -> Claims:
        return cls(mark.model_id, mark.created, ingredients)

    @property
    def payload(self) -> int:
        """The watermark payload frames of this model carry: the soft binding's value."""
        return model_payload(self.model_id)


@dataclass(frozen=True)
class Signing:
    """Everything a writer needs to sign a result; picklable (sent to merge workers)."""

    claims: Claims
    store: Path | None = None  # the manifest store (a workspace's credentials/), if any
    keys: Path | None = None  # the key's folder, resolved where the run started
    #: the key itself, for workers on other machines (a cluster: it travels in memory
    #: through Ray's object store, never to their disks); None: read from `keys`
    pair: KeyPair | None = None

    def key_pair(self) -> KeyPair:
        return self.pair if self.pair is not None else load_keys(self.keys)

    def carried(self) -> Signing:
        """This signing with the key in it (for a cluster's workers)."""
        return replace(self, pair=self.key_pair(), keys=None)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def mime_of(path: Path | str) -> str | None:
    """The MIME type c2pa embeds into for this file name, None when it cannot."""
    return MIME.get(Path(path).suffix.lower())


def manifest_json(claims: Claims, title: str) -> dict[str, Any]:
    action = {
        "action": "c2pa.created",
        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "softwareAgent": {"name": TOOL, "version": __version__},
        "parameters": {MODEL_PARAM: claims.model_id, "org.facelab.created": claims.created,
                       INPUTS_PARAM: {i.role: f"{i.title} sha256:{i.sha256}"
                                      for i in claims.ingredients}},
    }
    payload = claims.payload.to_bytes(4, "big")
    return {
        "claim_generator_info": [{"name": TOOL, "version": __version__}],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [action]}},
            {"label": "c2pa.soft-binding", "data": {
                "alg": SOFT_BINDING_ALG,
                "blocks": [{"scope": {}, "value": base64.b64encode(payload).decode()}]}},
        ],
        "ingredients": [{"title": i.title, "format": "application/octet-stream",
                         "relationship": "inputTo",
                         "description": f"facelab {i.role} input, SHA-256 {i.sha256}"}
                        for i in claims.ingredients],
    }


@lru_cache(maxsize=1)
def context() -> c2pa.Context:
    return c2pa.Context.from_dict(SETTINGS)


@lru_cache(maxsize=4)
def _signer(keys: KeyPair) -> c2pa.Signer:
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, keys.chain_pem, keys.key_pem, None)
    return c2pa.Signer.from_info(info)


def _builder(claims: Claims, title: str) -> c2pa.Builder:
    return c2pa.Builder(json.dumps(manifest_json(claims, title)), context())


def sign_bytes(data: bytes, mime: str, signing: Signing, title: str) -> tuple[bytes, bytes]:
    """(the asset with its manifest embedded, the manifest store alone) for `data`."""
    out = io.BytesIO()
    manifest = _builder(signing.claims, title).sign(
        _signer(signing.key_pair()), mime, io.BytesIO(data), out)
    return out.getvalue(), manifest


def sign_file(src: Path, dest: Path, signing: Signing, title: str | None = None) -> bytes:
    """Write `src` with the manifest embedded to `dest` (under a temporary name, renamed
    when complete; `src` may be `dest`, or the temporary file of an `atomic_path(dest)`).
    Returns the manifest store alone."""
    mime = mime_of(dest)
    if mime is None:
        raise ValueError(f"{dest.suffix}: c2pa cannot embed a manifest in this format")
    tmp = temp_sibling(dest)
    if tmp == src:  # signing atomic_path's own temporary file in place
        tmp = src.with_name(f"{src.stem}.c2pa{src.suffix}")
    try:
        with naming(dest):
            with src.open("rb") as fin, tmp.open("w+b") as fout:
                manifest = _builder(signing.claims, title or dest.name).sign(
                    _signer(signing.key_pair()), mime, fin, fout)
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest
