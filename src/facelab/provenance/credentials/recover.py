"""Soft binding, read side: a file's watermark → its manifest in a store.

A copy whose metadata was stripped (an upload, a re-encode) keeps the watermark; the
payload it carries names the store folder its manifests were filed in (store.py). When the
payload's CRC fails (a hard re-encode: 2 of the watermark bench's 6 clips after CRF 30 +
50 %) the watermark's soft chips are matched against the payloads the store holds
(`code.match`): telling a few known payloads apart needs far less signal than reading 32
bits blind. Measured on that bench row: the true payload at Z 6.1–10.7, the best of 1,000
random facelab payloads at most 4.6; a match needs MATCH_Z and a MATCH_MARGIN lead.

The claims match when the stored manifest's soft binding is that payload and its model id
hashes to it (the payload is facelab's tag + 24 bits of the model id's SHA-256).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.provenance.credentials import store
from facelab.provenance.credentials.keys import KeyPair
from facelab.provenance.credentials.read import Credentials, read_sidecar
from facelab.provenance.watermark import model_payload
from facelab.provenance.watermark.code import match

MATCH_Z = 5.5  #: least correlation (Z) of the soft chips with a stored payload
MATCH_MARGIN = 1.5  #: …and its lead over the next stored payload


@dataclass(frozen=True)
class Recovery:
    payload: int | None  # the payload looked up (None: no stored one matched)
    store: Path
    found: int  # sidecars filed under it
    credentials: Credentials | None = None  # the newest one's, None when none was found
    matches: bool = False  # its soft binding and model id agree with the payload
    how: str = "payload read"  # or "matched, Z 6.2" (CRC failed: soft chips vs the store)

    def to_json(self) -> dict[str, Any]:
        return {"payload": None if self.payload is None else f"{self.payload:08x}",
                "store": str(self.store), "found": self.found, "matches": self.matches,
                "how": self.how,
                "manifest": self.credentials.to_json() if self.credentials else None}


def _matched(soft: np.ndarray, store_dir: Path) -> tuple[int | None, str]:
    """The stored payload the soft chips match, if one does clearly."""
    stored = store.payloads(store_dir)
    best, z = match(soft, stored)
    if best is None:
        return None, "unreadable payload; the store holds none to match"
    runner = max((match(soft, [p])[1] for p in stored if p != best), default=-np.inf)
    if z < MATCH_Z or z - runner < MATCH_MARGIN:
        return None, f"unreadable payload; no stored one matches (best Z {z:.1f})"
    return best, f"matched, Z {z:.1f}"


def recover(payload: int | None, store_dir: Path, keys: KeyPair | None = None,
            soft: np.ndarray | None = None) -> Recovery:
    """The newest manifest filed under the watermark's `payload` (or, unread, the stored
    payload its `soft` chips match) in `store_dir`, and whether its claims match."""
    how = "payload read"
    if payload is None:
        if soft is None:
            return Recovery(None, store_dir, 0, how="unreadable payload")
        payload, how = _matched(soft, store_dir)
        if payload is None:
            return Recovery(None, store_dir, 0, how=how)
    found = store.lookup(store_dir, payload)
    if not found:
        return Recovery(payload, store_dir, 0, how=how)
    cred = read_sidecar(found[0], keys)
    matches = (cred.state == "valid" and cred.payload == payload
               and bool(cred.model_id) and model_payload(cred.model_id) == payload)
    return Recovery(payload, store_dir, len(found), cred, matches, how)
