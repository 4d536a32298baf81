"""`facelab train --interactive`: ask each model option with its default, as DeepFaceLab does.

The core (`ask`, `new_model_answers`, `resume_answers`) takes its input and output as
functions, so tests drive it without a terminal; only `wait_for_enter` and `read_line` touch
stdin. The questions, their labels and help come from `ModelOptions`' field declarations
(`MeshSwapOptions`' for preset meshswap, the other model family), as the flags do, so `?`
and `--help` say the same.
"""

from __future__ import annotations

import select
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

from facelab.errors import FacelabError
from facelab.meshswap.options import FAMILY as MESHSWAP
from facelab.meshswap.options import MeshSwapOptions
from facelab.options import specs
from facelab.train.models import PRESETS, ModelOptions, preset
from facelab.train.models.catalog import LIGHTWEIGHT

Ask = Callable[[str], str | None]  # shows a prompt, returns the line (None: end of input)
Say = Callable[[str], None]


@dataclass(frozen=True)
class Spec:
    """One question: the option's field name, its prompt label and how to read an answer."""

    name: str
    label: str
    parse: Callable[[str], Any]
    text: str = ""  # the help, when it is not ModelOptions' (HELP)

    @property
    def help(self) -> str:
        return self.text or HELP[self.name]


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("y", "yes", "true", "1", "on"):
        return True
    if word in ("n", "no", "false", "0", "off"):
        return False
    raise ValueError("answer y or n")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("answer a whole number") from None


def parse_float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("answer a number") from None


def parse_word(text: str) -> str:
    return text.strip().lower()


PARSE: dict[type, Callable[[str], Any]] = {
    bool: parse_bool, int: parse_int, float: parse_float, str: parse_word,
}
_SPECS = {s.name: s for s in specs(ModelOptions)}
HELP: dict[str, str] = {name: s.describe() for name, s in _SPECS.items()}


def _question(name: str) -> Spec:
    s = _SPECS[name]
    return Spec(name, s.label, PARSE[s.base])


#: Every model `--preset` names: SAE's presets, then the meshswap family.
PRESET_NAMES = (*PRESETS, MESHSWAP)
PRESET_HELP = (
    f"{_SPECS['preset'].help} meshswap is another family: src's own faces, retrieved by pose "
    "and expression, warped onto dst's and repaired by a small refiner network (its options: "
    f"--candidates, --refiner, --refiner-dims). One of {', '.join(PRESET_NAMES)}. Fixed once "
    "the model exists.")
PRESET = _question("preset")
LIGHTWEIGHT_SPEC = _question("lightweight")
_APART = ("preset", "lightweight")  # asked first, and only for h64/h128
CREATION: list[Spec] = [  # the creation options the sae preset leaves to the user
    _question(s.name) for s in _SPECS.values() if s.fixed and s.name not in _APART]
CHANGEABLE: list[Spec] = [_question(s.name) for s in _SPECS.values() if not s.fixed]
#: meshswap's questions: a new model's (all, in declaration order), a resumed one's.
_MESHSWAP_SPECS = [s for s in specs(MeshSwapOptions) if s.cli]
MESHSWAP_NEW: list[Spec] = [Spec(s.name, s.label, PARSE[s.base], s.describe())
                            for s in _MESHSWAP_SPECS]
MESHSWAP_CHANGEABLE: list[Spec] = [q for q, s in zip(MESHSWAP_NEW, _MESHSWAP_SPECS,
                                                     strict=True) if not s.fixed]


def show(value: Any) -> str:
    """A default as the user types it (y/n for yes-no questions)."""
    if isinstance(value, bool):
        return "y" if value else "n"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ask(
    specs: list[Spec], current: Any, ask_line: Ask, say: Say
) -> tuple[dict[str, Any], Any]:
    """Ask `specs` in order with `current`'s values as defaults; return answers and options.

    `current` is a model options dataclass (`ModelOptions`, `MeshSwapOptions`). Enter keeps
    the default, `?` prints the help and asks again, an invalid answer prints why and asks
    again (checked by the options' validate against the answers so far). At the end of
    input every remaining question keeps its default.
    """
    answers: dict[str, Any] = {}
    for spec in specs:
        default = getattr(current, spec.name)
        while True:
            line = ask_line(f"{spec.label} [{show(default)}] (? for help): ")
            if line is None or not line.strip():
                value = default
            elif line.strip() == "?":
                say(spec.help)
                continue
            else:
                try:
                    value = spec.parse(line)
                    current = replace(current, **{spec.name: value}).validate()
                except (ValueError, FacelabError) as exc:
                    say(f"{exc}".rstrip(".") + "; try again, or ? for help.")
                    continue
            answers[spec.name] = value
            current = replace(current, **{spec.name: value})
            break
    return answers, current


def ask_preset(default: str, ask_line: Ask, say: Say) -> str:
    """The model: one of PRESET_NAMES (asked apart: meshswap is no ModelOptions preset)."""
    while True:
        line = ask_line(f"{PRESET.label} [{default}] (? for help): ")
        if line is None or not line.strip():
            return default
        if line.strip() == "?":
            say(PRESET_HELP)
            continue
        word = parse_word(line)
        if word in PRESET_NAMES:
            return word
        say(f"--preset must be one of {', '.join(PRESET_NAMES)}, not {word!r}; try again, or "
            "? for help.")


def new_model_answers(default_preset: str, given: dict[str, Any], ask_line: Ask,
                      say: Say) -> dict[str, Any]:
    """The preset, then its creation options, then the changeable ones, as overrides.

    `given` (the flags on the command line) are the defaults. Returns the model options'
    field names, `preset` included, ready for `preset(name, **rest)` (SAE) or
    `MeshSwapOptions(**rest)`.
    """
    name = ask_preset(default_preset, ask_line, say)
    if name == MESHSWAP:
        own = {k: v for k, v in given.items() if k in _MESHSWAP_NAMES}
        got, _ = ask(MESHSWAP_NEW, MeshSwapOptions(**own), ask_line, say)
        return {**given, **got, "preset": name}
    lightweight = bool(given.get("lightweight")) and name in LIGHTWEIGHT
    rest = {k: v for k, v in given.items() if k != "lightweight"}
    current = preset(name, lightweight=lightweight, **rest)
    answers: dict[str, Any] = dict(given)
    if name == "sae":
        got, current = ask(CREATION, current, ask_line, say)
        answers.update(got)
    elif name in LIGHTWEIGHT:
        got, _ = ask([LIGHTWEIGHT_SPEC], current, ask_line, say)
        answers.update(got)
        current = preset(name, lightweight=got["lightweight"], **rest)
    got, _ = ask(CHANGEABLE, current, ask_line, say)
    return {**answers, **got, "preset": name}


def resume_answers(saved: dict[str, Any], given: dict[str, Any], ask_line: Ask,
                   say: Say) -> dict[str, Any]:
    """The changeable options of a saved model (its values, or the flags', as defaults)."""
    meshswap = saved.get("preset") == MESHSWAP
    questions = MESHSWAP_CHANGEABLE if meshswap else CHANGEABLE
    try:
        current = MeshSwapOptions(**saved) if meshswap else ModelOptions(**saved)
    except TypeError as exc:
        raise FacelabError(f"The saved model options are unreadable ({exc}).") from None
    changeable = {q.name for q in questions}
    current = replace(current, **{k: v for k, v in given.items() if k in changeable})
    got, _ = ask(questions, current, ask_line, say)
    return {**given, **got}


_MESHSWAP_NAMES = frozenset(s.name for s in specs(MeshSwapOptions))


def wait_for_enter(seconds: float, stream: TextIO | None = None) -> bool:
    """Whether a line arrives on `stream` (stdin) within `seconds`; False at once at its end.

    Works for a terminal, a pipe or a file; where stdin cannot be polled (Windows consoles,
    closed streams) it does not wait.
    """
    stream = sys.stdin if stream is None else stream
    try:
        ready, _, _ = select.select([stream], [], [], seconds)
    except (OSError, ValueError, TypeError):
        return False
    return bool(ready) and stream.readline() != ""


def read_line(prompt: str) -> str | None:
    """The CLI's `Ask`: the prompt on stdout; a piped answer is echoed so logs read well."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        sys.stdout.write("\n")
        return None
    if not sys.stdin.isatty():
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
    sys.stdout.flush()
    return line.rstrip("\r\n")


def say(text: str) -> None:
    print(text, flush=True)
