"""`--help` that reads at 80 columns, in a terminal and through a pipe alike.

Typer's Rich layout puts each option in a six-column table (long name, short name, the
`--no-` form, its short form, type, help): at 80 columns the description of `train`'s
options got ~20 characters, long flags were cut (`--multiscale-deco…`), and every flag
showed a Python type (`<bool>`). The CLI uses Click's plain layout instead (`app.py` sets
`rich_markup_mode=None`: an option's name on the left, its help wrapped beside it or, for a
long name, on the next line), with this formatter, which changes three things:

- words are never broken, neither at hyphens nor inside a path, so a flag or a path in a
  help text can be copied and grepped (a word wider than the column overflows it instead);
- Typer's Python type labels read as Click's metavars (`<int>` → INTEGER, `<path>` → PATH)
  and go where they say nothing (flags, arguments' `<list[Path]>`); choices stay;
- nothing else: the width is Click's (the terminal or $COLUMNS, at most 80).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from typing import Any

import typer.core

# Click's Context class, through Typer (which may vendor Click)
_Context: Any = typer.core.TyperCommand.context_class
_METAVARS = {"int": "INTEGER", "int range": "INTEGER", "float": "FLOAT",
             "float range": "FLOAT", "str": "TEXT", "path": "PATH", "Path": "PATH"}
_TYPE = re.compile(r" ?<(bool|int range|float range|int|float|str|path|Path|"
                   r"list\[(\w+)\])>")


def plain_types(term: str) -> str:
    """A help row's left column with Python type labels as Click's metavars (options) or
    dropped (flags' `<bool>`, arguments, whose name says it)."""
    option = term.lstrip().startswith("-")

    def metavar(m: re.Match[str]) -> str:
        name = m.group(2) or m.group(1)
        if not option or name == "bool":
            return ""
        return f" {_METAVARS.get(name, name.upper())}"

    return _TYPE.sub(metavar, term)


def fill(text: str, width: int, indent: str = "") -> list[str]:
    """`text` wrapped to `width` (indent included) without breaking a word, paragraphs
    (blank-line separated) kept apart by an empty line."""
    lines: list[str] = []
    for paragraph in text.split("\n\n"):
        if lines:
            lines.append("")
        lines += textwrap.wrap(" ".join(paragraph.split()), max(width, 20),
                               initial_indent=indent, subsequent_indent=indent,
                               break_long_words=False, break_on_hyphens=False) or [""]
    return lines


class HelpFormatter(_Context.formatter_class):  # type: ignore[misc]
    """Click's help formatter without broken words or Python type labels (see module)."""

    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        self.write("\n".join(fill(text, self.width, indent)) + "\n")

    def write_dl(self, rows: Sequence[tuple[str, str]], col_max: int = 30,
                 col_spacing: int = 2) -> None:
        rows = [(plain_types(row[0]), row[1] if len(row) > 1 else "") for row in rows]
        if not rows:
            return
        first_col = min(max(len(first) for first, _ in rows), col_max) + col_spacing
        pad = " " * (first_col + self.current_indent)
        for first, second in rows:
            self.write(f"{'':>{self.current_indent}}{first}")
            if not second:
                self.write("\n")
                continue
            if len(first) <= first_col - col_spacing:
                self.write(" " * (first_col - len(first)))
            else:  # a long name: its help starts on the next line
                self.write("\n" + pad)
            lines = fill(second, max(self.width - first_col - self.current_indent, 10))
            self.write(lines[0] + "\n")
            for line in lines[1:]:
                self.write((pad + line if line else "") + "\n")


def install() -> None:
    """Make every command's help use `HelpFormatter` (with `rich_markup_mode=None`)."""
    _Context.formatter_class = HelpFormatter
