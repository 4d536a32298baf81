"""Options declared once: one dataclass field holds an option's help, range, choices and label.

    erode: int = option(0, help="Shrink (positive) or grow the mask.", range=(-200, 200))

`validate(obj)` checks every declared range and choice and raises one `FacelabError` sentence
naming the flag, so a library caller gets the CLI's checks and messages; the CLI's flags
(`cli/options.py`), `train --interactive`'s questions and their help are generated from the
same `specs(cls)`. Nothing here imports PyTorch, so the CLI's help stays fast.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass
from functools import cache
from typing import Any

from facelab.errors import FacelabError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: measured once per device (device.py)

Choices = Sequence[str] | Callable[[], Sequence[str]]  # a callable: known only at run time
_KEY = "facelab.option"


@dataclass(frozen=True)
class OptionSpec:
    """One declared option, read from its dataclass field."""

    name: str
    type: Any  # the field's resolved annotation, e.g. int, int | None, a nested dataclass
    default: Any  # MISSING when the field is required
    default_factory: Any
    help: str
    range: tuple[float | None, float | None] | None
    above: float | None
    step: int | None
    choices: Choices | None
    label: str
    fixed: bool
    flag: str
    short: str | None
    cli: bool

    @property
    def base(self) -> Any:
        """The type without `| None`."""
        rest = [a for a in typing.get_args(self.type) if a is not type(None)]
        return rest[0] if self.optional and len(rest) == 1 else self.type

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.type)

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is MISSING

    @property
    def default_value(self) -> Any:
        return self.default_factory() if self.default_factory is not MISSING else self.default

    def allowed(self) -> tuple[str, ...] | None:
        """The allowed words, resolving a function given as `choices`."""
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def constraint(self) -> str:
        """What values are allowed, as a sentence fragment ("" when anything goes)."""
        words = self.allowed()
        if words is not None:
            return "one of " + ", ".join(words)
        lo, hi = self.range or (None, None)
        whole = self.base is int
        if self.step and lo is not None and hi is not None:
            return f"{_num(lo)}–{_num(hi)} in steps of {self.step}"
        kind = "a whole number" if whole else "a number"
        if lo is not None and hi is not None:
            return f"{kind} from {_num(lo)} to {_num(hi)}"
        if lo is not None:
            return f"{kind}, {_num(lo)} or more"
        if hi is not None:
            return f"{kind}, {_num(hi)} or less"
        if self.above is not None:
            return f"more than {_num(self.above)}"
        return ""

    def describe(self) -> str:
        """The help text: what it does, the allowed values, whether it is fixed."""
        text = self.help
        allowed = self.constraint()
        if allowed:
            text += f" {allowed[0].upper()}{allowed[1:]}."
        if self.fixed:
            text += " Fixed once the model exists."
        return text

    def check(self, value: Any) -> None:
        """Raise FacelabError (naming the flag) when `value` is not allowed."""
        if value is None and self.optional:
            return
        words = self.allowed()
        if words is not None:
            if value not in words:
                raise FacelabError(f"{self.flag} must be {self.constraint()}, not {value!r}.")
            return
        if self.range is None and self.above is None:
            return
        whole = self.base is int
        number = isinstance(value, int | float) and not isinstance(value, bool)
        lo, hi = self.range or (None, None)
        if (not number or (whole and not isinstance(value, int))
                or (lo is not None and value < lo) or (hi is not None and value > hi)
                or (self.above is not None and value <= self.above)
                or (self.step and lo is not None and (value - lo) % self.step)):
            raise FacelabError(f"{self.flag} must be {self.constraint()}, not {value!r}.")


def option(default: Any = MISSING, *, help: str, range: tuple[float | None, float | None]
           | None = None, above: float | None = None, step: int | None = None,
           choices: Choices | None = None, label: str | None = None, fixed: bool = False,
           flag: str | None = None, short: str | None = None, cli: bool = True,
           default_factory: Callable[[], Any] | Any = MISSING) -> Any:
    """A dataclass field declaring an option.

    range: inclusive (lo, hi), either may be None; above: an exclusive lower bound; step:
    allowed values are lo + k·step; choices: the allowed words (or a function giving them);
    label: the `--interactive` question; fixed: set when a model is created, never changed;
    flag: the CLI flag when it is not `--field-name`; short: e.g. "-o"; cli: False for a
    library-only knob.
    """
    meta = OptionSpec(name="", type=None, default=default, default_factory=default_factory,
                      help=help, range=range, above=above, step=step, choices=choices,
                      label=label or "", fixed=fixed, flag=flag or "", short=short, cli=cli)
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={_KEY: meta})
    return dataclasses.field(default=default, metadata={_KEY: meta})


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@cache
def specs(cls: type) -> tuple[OptionSpec, ...]:
    """The declared options of dataclass `cls`, in field order (plain fields are left out)."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is not None:  # the declaration, completed with what only the class knows
            found.append(dataclasses.replace(
                meta, name=f.name, type=hints[f.name],
                label=meta.label or f.name.replace("_", " ").capitalize(),
                flag=meta.flag or "--" + f.name.replace("_", "-")))
    return tuple(found)


def spec(cls: type, name: str) -> OptionSpec:
    """The declared option `name` of `cls`."""
    for s in specs(cls):
        if s.name == name:
            return s
    raise KeyError(f"{cls.__name__} declares no option {name!r}")


def validate(obj: Any) -> None:
    """Check every declared option of dataclass instance `obj`; the first bad one raises."""
    for s in specs(type(obj)):
        s.check(getattr(obj, s.name))


def check_values(cls: type, values: dict[str, Any]) -> None:
    """Check some of `cls`'s options given by name (e.g. overrides of a saved model)."""
    by_name = {s.name: s for s in specs(cls)}
    for name, value in values.items():
        if name in by_name:
            by_name[name].check(value)
