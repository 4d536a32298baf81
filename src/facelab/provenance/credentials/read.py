"""Read a C2PA manifest back: valid, tampered or absent; who signed it; what it claims.

c2pa's validation says "Valid" for an intact manifest whose certificate is on no trust
list (it lists `signingCredential.untrusted`): that is every self-signed key, facelab's
local ones included, so `trusted` is reported apart from `state`. "tampered" is any other
failure: the hard binding (one changed byte), an assertion's hash, the signature.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa

from facelab.provenance.credentials.keys import LOCAL_ORG, KeyPair
from facelab.provenance.credentials.manifest import (
    INPUTS_PARAM,
    MODEL_PARAM,
    SOFT_BINDING_ALG,
    context,
    mime_of,
)

UNTRUSTED = "signingCredential.untrusted"
#: failures of the hard binding: expected for a stored manifest read without its asset
BINDING = ("assertion.dataHash.mismatch", "assertion.bmffHash.mismatch",
           "assertion.boxesHash.mismatch", "assertion.collectionHash.mismatch")


@dataclass(frozen=True)
class Credentials:
    """What a file's (or a stored) C2PA manifest says, and whether it holds."""

    state: str  # "valid", "tampered", "absent", or "unsupported" (c2pa reads no such format)
    where: str = ""  # "embedded", or the store sidecar's path
    signer: str = ""  # the signing certificate's common name
    issuer: str = ""  # its organisation
    serial: str = ""
    trusted: bool = False  # chains to a C2PA trust list
    self_signed: bool = False  # a local chain made by `facelab credentials init`
    own: bool | None = None  # signed with this user's key (None: no key to compare)
    generator: str = ""
    source_type: str = ""
    model_id: str = ""
    payload: int | None = None  # the soft binding's watermark payload
    ingredients: dict[str, str] = field(default_factory=dict)  # role → "title sha256:HEX"
    problems: list[str] = field(default_factory=list)  # c2pa failure codes, "untrusted" aside

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["payload"] = f"{self.payload:08x}" if self.payload is not None else None
        return out


def _serial(keys: KeyPair | None) -> str | None:
    if keys is None:
        return None
    from cryptography import x509

    return str(x509.load_pem_x509_certificates(keys.chain_pem)[0].serial_number)


def _claims(manifest: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"ingredients": {}}
    for a in manifest.get("assertions", []):
        label, data = a.get("label", ""), a.get("data") or {}
        if label.startswith("c2pa.actions"):
            for act in data.get("actions", []):
                if act.get("action") == "c2pa.created":
                    found["source_type"] = str(act.get("digitalSourceType", ""))
                    agent = act.get("softwareAgent") or {}
                    if isinstance(agent, dict):
                        found["generator"] = f"{agent.get('name', '')} {agent.get('version', '')}"
                    params = act.get("parameters") or {}
                    found["model_id"] = str(params.get(MODEL_PARAM, ""))
                    inputs = params.get(INPUTS_PARAM)
                    if isinstance(inputs, dict):
                        found["ingredients"] = {str(k): str(v) for k, v in inputs.items()}
        elif label == "c2pa.soft-binding" and data.get("alg") == SOFT_BINDING_ALG:
            for block in data.get("blocks", []):
                try:
                    found["payload"] = int.from_bytes(base64.b64decode(block["value"]), "big")
                except (KeyError, ValueError, TypeError):
                    continue
    return found


def _report(reader: c2pa.Reader, where: str, keys: KeyPair | None, stored: bool = False
            ) -> Credentials:
    manifest = reader.get_active_manifest() or {}
    results = (reader.get_validation_results() or {}).get("activeManifest") or {}
    failures = [f.get("code", "") for f in results.get("failure", [])]
    problems = [c for c in failures if c != UNTRUSTED and not (stored and c in BINDING)]
    sig = manifest.get("signature_info") or {}
    own_serial = _serial(keys)
    serial = str(sig.get("cert_serial_number", ""))
    return Credentials(
        state="tampered" if problems or (not stored and reader.get_validation_state() == "Invalid")
        else "valid",
        where=where, signer=str(sig.get("common_name", "")), issuer=str(sig.get("issuer", "")),
        serial=serial, trusted=UNTRUSTED not in failures and not problems,
        self_signed=sig.get("issuer") == LOCAL_ORG,
        own=None if own_serial is None else serial == own_serial,
        problems=problems, **_claims(manifest))


def read_file(path: Path, keys: KeyPair | None = None, mime: str | None = None
              ) -> Credentials:
    """The manifest embedded in the file at `path`, validated against its bytes (`mime`:
    its type when known from its content, else taken from its name)."""
    mime = mime or mime_of(path)
    if mime is None:
        return Credentials("unsupported")
    try:
        with path.open("rb") as f:
            reader = c2pa.Reader(mime, f, context=context())
            try:
                return _report(reader, "embedded", keys)
            finally:
                reader.close()
    except c2pa.C2paError as e:
        if "ManifestNotFound" in type(e).__name__ or "no JUMBF" in str(e):
            return Credentials("absent")
        return Credentials("tampered", "embedded", problems=[f"unreadable manifest: {e}"])


def read_sidecar(path: Path, keys: KeyPair | None = None) -> Credentials:
    """A stored manifest: its signature and claims (its hard binding is to the original
    file, which a stripped copy no longer is)."""
    try:
        reader = c2pa.Reader("application/c2pa", io.BytesIO(path.read_bytes()),
                             context=context())
    except (c2pa.C2paError, OSError) as e:
        return Credentials("tampered", str(path), problems=[f"unreadable manifest: {e}"])
    try:
        return _report(reader, str(path), keys, stored=True)
    finally:
        reader.close()


def manifest_dict(path: Path) -> dict[str, Any]:
    """The raw manifest store JSON c2pa reads from `path` (for `--json` and debugging)."""
    mime = mime_of(path)
    with path.open("rb") as f:
        reader = c2pa.Reader(mime or "application/c2pa", f, context=context())
        try:
            return json.loads(reader.json())
        finally:
            reader.close()
