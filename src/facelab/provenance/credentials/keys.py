"""The user's C2PA signing key: an EC P-256 key and its certificate chain, kept in
`$XDG_CONFIG_HOME/facelab/credentials/` (default ~/.config/facelab/credentials/).

`init_keys` makes a local two-certificate chain: a self-signed root ("facelab local CA")
and a signing certificate it issues. c2pa refuses to sign with a self-signed end-entity
certificate, hence the root; `verify` reports such a chain as self-signed. A user with a
certificate from a real CA passes it (and its key) instead. An existing key is never
overwritten without `force`, and then it goes to the folder's trash, not away.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from facelab.errors import FacelabError
from facelab.fsutil import atomic_path, move_to_trash, timestamp

KEY_FILE = "signing_key.pem"
CERT_FILE = "signing_chain.pem"
LOCAL_ORG = "facelab local credentials"  # the O= of certificates `init_keys` makes
_LIFETIME = datetime.timedelta(days=3650)


def credentials_dir() -> Path:
    """Where the user's key lives (read from the environment at each call: tests move it)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "facelab" / "credentials"


@dataclass(frozen=True)
class KeyPair:
    key_pem: bytes  # PKCS#8, unencrypted
    chain_pem: bytes  # signing certificate first, then its issuers
    folder: Path

    @property
    def key_path(self) -> Path:
        return self.folder / KEY_FILE

    @property
    def cert_path(self) -> Path:
        return self.folder / CERT_FILE

    def subject(self) -> str:
        cert = x509.load_pem_x509_certificates(self.chain_pem)[0]
        return cert.subject.rfc4514_string()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, LOCAL_ORG)])


def _usage(sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=not sign, crl_sign=not sign, encipher_only=False,
                         decipher_only=False)


def make_chain(user: str) -> tuple[bytes, bytes]:
    """(key PEM, chain PEM): a fresh P-256 key, its certificate, and the local root."""
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"facelab local CA ({user})")

    def base(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + _LIFETIME)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False))

    ca = (base(ca_name, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
          .add_extension(_usage(False), True).sign(ca_key, hashes.SHA256()))
    leaf = (base(_name(f"facelab ({user})"), key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(_usage(True), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, leaf.public_bytes(pem) + ca.public_bytes(pem)


def _check(key_pem: bytes, chain_pem: bytes, where: str) -> None:
    """The key loads, the chain loads, and the key is the first certificate's."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise FacelabError(f"{where}: the key is not an unencrypted PEM private key.") from e
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as e:
        raise FacelabError(f"{where}: the certificate file holds no PEM certificate.") from e
    pub = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(*pub) != key.public_key().public_bytes(*pub):
        raise FacelabError(f"{where}: the key does not belong to the first certificate.")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise FacelabError(f"{where}: facelab signs with ES256: give an EC P-256 key.")


def _write(path: Path, data: bytes, mode: int) -> None:
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def init_keys(key: Path | None = None, cert: Path | None = None, force: bool = False,
              folder: Path | None = None) -> KeyPair:
    """Make (or take the user's `key` + `cert`) the signing key in `folder`; an existing
    one is kept unless `force`, then moved to `folder/trash/<time>/`."""
    folder = folder or credentials_dir()
    if (key is None) != (cert is None):
        raise FacelabError("Give both --key and --cert, or neither.")
    existing = [p for p in (folder / KEY_FILE, folder / CERT_FILE) if p.exists()]
    if existing and not force:
        raise FacelabError(f"A signing key exists in {folder}: pass --force to replace it "
                           "(the old one is moved to its trash/ folder).")
    if key is not None and cert is not None:
        try:
            key_pem, chain_pem = key.read_bytes(), cert.read_bytes()
        except OSError as e:
            raise FacelabError(f"Cannot read {e.filename}: {e.strerror}.") from e
        _check(key_pem, chain_pem, f"{key.name} / {cert.name}")
    else:
        key_pem, chain_pem = make_chain(os.environ.get("USER") or "user")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if existing:
        move_to_trash(existing, folder / "trash" / timestamp(), folder)
    _write(folder / CERT_FILE, chain_pem, 0o644)
    _write(folder / KEY_FILE, key_pem, 0o600)
    _load.cache_clear()
    return KeyPair(key_pem, chain_pem, folder)


def load_keys(folder: Path | None = None) -> KeyPair:
    """The signing key in `folder` (default: the user's); `FacelabError` if absent or bad."""
    return _load(folder or credentials_dir())


@lru_cache(maxsize=4)
def _load(folder: Path) -> KeyPair:
    try:
        key_pem = (folder / KEY_FILE).read_bytes()
        chain_pem = (folder / CERT_FILE).read_bytes()
    except FileNotFoundError as e:
        raise FacelabError(f"No signing key in {folder}: run `facelab credentials init`.") from e
    _check(key_pem, chain_pem, str(folder))
    return KeyPair(key_pem, chain_pem, folder)


def ensure_keys() -> KeyPair:
    """The user's key, made on first use (said once on stderr) so results always carry a
    manifest. Call it in the process that starts workers, before they start."""
    folder = credentials_dir()
    if not (folder / KEY_FILE).exists():
        try:
            init_keys(folder=folder)
        except FacelabError:
            if not (folder / KEY_FILE).exists():
                raise
            return load_keys(folder)  # another facelab made it just now
        print(f"facelab: made a local, self-signed C2PA signing key in {folder} "
              "(`facelab credentials init --key K --cert C` uses your own).", file=sys.stderr)
    return load_keys(folder)
