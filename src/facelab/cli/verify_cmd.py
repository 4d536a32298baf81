"""`facelab verify FILE...`: does each file say it is synthetic? Exit 0 when every file
does, 1 when some file carries no synthetic mark, 2 when some file cannot be read."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from facelab.cli.common import command
from facelab.cli.ui import error_line, out
from facelab.provenance.mark import IPTC_DST, UnreadableFile
from facelab.provenance.verify import Finding, verify


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


def verify_cmd(files: list[Path] = typer.Argument(..., help="Images or videos to check.",
                                                  show_default=False)) -> None:
    """Show the provenance marks each file carries (IPTC digital source type, tool, version,
    model id, where found) and whether it is marked synthetic. Exit 0: every file is; 1: some
    file is not; 2: some file cannot be read. Metadata is stripped by most uploads, so a
    missing mark does not prove a file is real."""
    worst = 0
    for path in files:
        try:
            verdict = verify(path)
        except UnreadableFile as e:
            error_line(str(e))
            worst = max(worst, e.exit_code)
            continue
        decision = ("marked synthetic" if verdict.synthetic
                    else "NOT marked synthetic" if verdict.findings else "no provenance mark")
        out.print(f"{_text(str(path))}: {decision}", soft_wrap=True)
        for f in verdict.findings:
            out.print(f"  {_describe(f)}", soft_wrap=True)
        if not verdict.synthetic:
            worst = max(worst, 1)
    if worst:
        raise typer.Exit(worst)
