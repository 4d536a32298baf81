"""C2PA Content Credentials on every result: a manifest signed with the user's key
(keys.py), built and embedded last (manifest.py, result.py), filed by watermark payload in
a manifest store (store.py) and read back (read.py). See docs/PROVENANCE.md."""

from facelab.provenance.credentials.keys import credentials_dir, ensure_keys, init_keys, load_keys
from facelab.provenance.credentials.manifest import Claims, Ingredient, Signing, mime_of
from facelab.provenance.credentials.read import Credentials, read_file, read_sidecar
from facelab.provenance.credentials.result import (
    sign_result_bytes,
    sign_result_file,
    signing_for,
)

__all__ = [
    "Claims", "Credentials", "Ingredient", "Signing", "credentials_dir", "ensure_keys",
    "init_keys", "load_keys", "mime_of", "read_file", "read_sidecar", "sign_result_bytes",
    "sign_result_file", "signing_for",
]
