"""CLI flags generated from options dataclasses, so each option is written once.

    @with_flags(flags(MergeOptions))
    def merge_cmd(model_name: str = typer.Option(...), **given: Any) -> None:
        opts = build(MergeOptions, given)

`with_flags` replaces the command's `**given` in its signature (which Typer reads) by one
`typer.Option` per declared field: the flag, its help with the allowed values, the default.
A nested options dataclass (`SwapOptions.merge`) contributes its flags flat. Values are
checked by the dataclass itself when `build` makes it, so the CLI and a library caller get
the same one-line `FacelabError`.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import typer

from facelab.options import OptionSpec, specs

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Flags:
    """The flags of one options class. `unset`: every flag defaults to None (not given), as
    `train` needs: a resumed model keeps its saved values unless a flag changes one."""

    cls: type
    exclude: tuple[str, ...] = ()
    unset: bool = False


def flags(cls: type, *, exclude: tuple[str, ...] = (), unset: bool = False) -> Flags:
    return Flags(cls, exclude, unset)


def _nested(s: OptionSpec) -> type | None:
    return s.base if dataclasses.is_dataclass(s.base) and isinstance(s.base, type) else None


def cli_specs(cls: type, exclude: tuple[str, ...] = ()) -> Iterator[OptionSpec]:
    """The options of `cls` that are flags, nested classes' flattened in, field order."""
    for s in specs(cls):
        if not s.cli or s.name in exclude:
            continue
        inner = _nested(s)
        if inner is not None:
            yield from cli_specs(inner, exclude)
        else:
            yield s


def parameter(s: OptionSpec, unset: bool = False) -> inspect.Parameter:
    """The Typer option of one declared option."""
    base = str if isinstance(s.base, type) and issubclass(s.base, enum.Enum) else s.base
    default = None if unset else s.default_value
    if isinstance(default, enum.Enum):
        default = default.value
    flag = s.flag
    decls = [f"{flag}/--no-{flag[2:]}" if base is bool else flag]
    if s.short:
        decls.append(s.short)
    required = s.required and not unset
    info = typer.Option(... if required else default, *decls, help=s.describe(),
                        show_default=not required and default is not None)
    annotation = base | None if unset or s.optional else base
    return inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                             annotation=annotation)


def with_flags(*groups: Flags) -> Callable[[F], F]:
    """Give `fn` (which takes `**given`) the generated flags of `groups` in its signature."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        if len(own) == len(sig.parameters):
            raise TypeError(f"{fn.__name__} must take **given for its generated flags")
        names = {p.name for p in own}
        generated = []
        for g in groups:
            for s in cli_specs(g.cls, g.exclude):
                if s.name in names:
                    raise TypeError(f"{fn.__name__}: option {s.name!r} is declared twice")
                names.add(s.name)
                generated.append(parameter(s, g.unset))
        fn.__signature__ = sig.replace(parameters=[*own, *generated])  # type: ignore[attr-defined]
        return fn

    return decorate


def pick(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """`cls`'s own (not nested) flag values out of `given`; None (not given) left out."""
    return {s.name: given[s.name] for s in specs(cls)
            if s.cli and _nested(s) is None and given.get(s.name) is not None}


def build(cls: type, given: dict[str, Any], **extra: Any) -> Any:
    """`cls` made from the flag values in `given` (nested classes too) and `extra`; it checks
    itself, so a bad value raises the library's FacelabError."""
    kwargs = pick(cls, given)
    for s in specs(cls):
        inner = _nested(s)
        if s.cli and inner is not None and s.name not in extra:
            kwargs[s.name] = build(inner, given)
    return cls(**{**kwargs, **extra})
