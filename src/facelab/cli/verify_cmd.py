"""`facelab verify FILE...`: does each file say it is synthetic? Exit 0 when every file
does, 1 when some file carries no synthetic mark, 2 when some file cannot be read.

Reported in order: the C2PA manifest (valid / tampered / absent, signer), the XMP/IPTC
tags, the watermark, and for a file without a valid manifest the one its watermark's
payload finds in the manifest store."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from facelab.cli.common import DEFAULT_WORKSPACE, command, state
from facelab.cli.ui import error_line, out
from facelab.provenance.credentials import Credentials
from facelab.provenance.credentials.recover import Recovery
from facelab.provenance.credentials.store import FOLDER, workspace_store
from facelab.provenance.mark import IPTC_DST, UnreadableFile
from facelab.provenance.verify import Finding, Verdict, verify


def register(app: typer.Typer) -> None:
    command(app, "verify")(verify_cmd)


def _text(value: str) -> str:
    """Metadata comes from the file: no terminal control characters, no Rich markup."""
    return escape("".join(c if c.isprintable() else "?" for c in value))


def _describe(f: Finding) -> str:
    m = f.mark
    kind = m.source_type.removeprefix(IPTC_DST)
    parts = [f"{_text(f.where)}: {_text(kind)}"]
    if m.tool:
        parts.append(f"by {_text(m.tool)} {_text(m.version)}".rstrip())
    if m.model_id:
        parts.append(f"model {_text(m.model_id)}")
    if m.created:
        parts.append(f"created {_text(m.created)}")
    return ", ".join(parts)


def _signer(c: Credentials) -> str:
    who = f"signed by {_text(c.signer or '?')} ({_text(c.issuer or 'no organisation')})"
    if c.self_signed:
        who += ", a self-signed local certificate (`facelab credentials init`)"
    elif not c.trusted:
        who += ", a certificate on no C2PA trust list"
    if c.own is not None:
        who += ": your key" if c.own else ": ANOTHER signer than your key"
    return who


def _manifest(c: Credentials, label: str = "C2PA manifest") -> list[str]:
    if c.state == "absent":
        return [f"{label}: absent"]
    if c.state == "unsupported":
        return [f"{label}: none (c2pa reads no manifest in this format)"]
    head = f"{label}: {c.state.upper() if c.state == 'tampered' else c.state}, {_signer(c)}"
    lines = [head]
    if c.problems:
        lines.append(f"  problems: {_text(', '.join(c.problems))}")
    if c.source_type:
        lines.append(f"  claims: {_text(c.source_type.removeprefix(IPTC_DST))} by "
                     f"{_text(c.generator)}, model id {_text(c.model_id)}")
    for role, value in sorted(c.ingredients.items()):
        lines.append(f"  ingredient {_text(role)}: {_text(value)}")
    return lines


def _recovery(r: Recovery) -> list[str]:
    store = _text(str(r.store))
    if r.payload is None:
        return [f"recovered manifest: none ({_text(r.how)}; store {store})"]
    if r.credentials is None:
        return [f"recovered manifest: none filed under payload {r.payload:08x} in {store}"]
    where = f"manifest store {store}, payload {r.payload:08x} {_text(r.how)}, {r.found} filed"
    verdict = "claims MATCH the watermark" if r.matches else "claims do NOT match the watermark"
    return [*_manifest(r.credentials, f"recovered manifest ({where})"), f"  {verdict}"]


def _lines(v: Verdict) -> list[str]:
    lines = _manifest(v.credentials)
    lines += [_describe(f) for f in v.findings if f.detector != "watermark"]
    lines += [_describe(f) for f in v.findings if f.detector == "watermark"]
    if v.recovery is not None:
        lines += _recovery(v.recovery)
    return lines


def _fallback_store(path: Path) -> Path | None:
    """The file's own workspace's store, else ./workspace's when that is a workspace."""
    return workspace_store(path.resolve()) or workspace_store(DEFAULT_WORKSPACE.resolve())


def verify_cmd(
    files: list[Path] = typer.Argument(..., help="Images or videos to check.",
                                       show_default=False),
    store: Path | None = typer.Option(
        None, "--store", show_default=False, file_okay=False,
        help="A manifest store (a folder of .c2pa files by watermark payload) to recover "
             "manifests from. Default: the credentials/ of the workspace given with -w, "
             "else of the one the file is in, else of ./workspace."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file, a list."),
) -> None:
    """Show the provenance each file carries: its C2PA manifest (valid, tampered or absent;
    who signed it), its XMP/IPTC tags (digital source type, tool, version, model id), the
    invisible watermark, and for a file without a valid manifest the manifest its
    watermark's payload finds in the store. Exit 0: every file is marked synthetic; 1: some
    file is not; 2: some file cannot be read. Most uploads strip metadata, so a missing mark
    does not prove a file is real."""
    worst = 0
    results = []
    given = state().workspace
    if store is None and given is not None:
        store = given / FOLDER
    for path in files:
        try:
            verdict = verify(path, store=store or _fallback_store(path))
        except UnreadableFile as e:
            error_line(str(e))
            worst = max(worst, e.exit_code)
            results.append({"file": str(path), "error": str(e)})
            continue
        if not verdict.synthetic:
            worst = max(worst, 1)
        if as_json:
            results.append(verdict.to_json(str(path)))
            continue
        decision = ("marked synthetic" if verdict.synthetic
                    else "NOT marked synthetic" if verdict.findings else "no provenance mark")
        out.print(f"{_text(str(path))}: {decision}", soft_wrap=True)
        for line in _lines(verdict):
            out.print(f"  {line}", soft_wrap=True)
    if as_json:
        print(json.dumps(results, indent=2))
    if worst:
        raise typer.Exit(worst)
