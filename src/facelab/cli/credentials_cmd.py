"""`facelab credentials init`: the key every result's C2PA manifest is signed with."""

from __future__ import annotations

from pathlib import Path

import typer

from facelab.cli.common import command, group
from facelab.cli.ui import out
from facelab.provenance.credentials import init_keys

app = group(help="The signing key of the C2PA Content Credentials every result carries.")


@command(app, "init")
def init(
    key: Path | None = typer.Option(None, "--key", show_default=False, dir_okay=False,
                                    help="Your EC P-256 private key (PEM, unencrypted)."),
    cert: Path | None = typer.Option(
        None, "--cert", show_default=False, dir_okay=False,
        help="Its certificate chain (PEM: the key's certificate first, then its issuers)."),
    force: bool = typer.Option(False, "--force", help=(
        "Replace an existing key (the old one moves to the folder's trash/).")),
) -> None:
    """Make a local signing key and a self-signed certificate chain (or install yours, with
    --key and --cert) in $XDG_CONFIG_HOME/facelab/credentials (default ~/.config/...).
    `facelab verify` reports a self-signed signer as such; merge makes this key on first
    use when there is none."""
    pair = init_keys(key, cert, force)
    made = "installed" if key else "made (self-signed)"
    out.print(f"Signing key {made}: {pair.key_path} (mode 0600), certificate "
              f"{pair.cert_path}: {pair.subject()}.", soft_wrap=True)
