"""`facelab train --interactive`: ask each model option with its default, as DeepFaceLab does.

The core (`ask`, `new_model_answers`, `resume_answers`) takes its input and output as
functions, so tests drive it without a terminal; only `wait_for_enter` and `read_line` touch
stdin. The help texts here are also the flags' help, so `?` and `--help` say the same.
"""

from __future__ import annotations

import select
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

from facelab.errors import FacelabError
from facelab.train.models import PRESETS, ModelOptions, preset
from facelab.train.models.catalog import LIGHTWEIGHT
from facelab.train.models.options import ARCH_BASES, CHANGEABLE_OPTIONS, FACE_TYPES

Ask = Callable[[str], str | None]  # shows a prompt, returns the line (None: end of input)
Say = Callable[[str], None]

HELP: dict[str, str] = {
    "preset": f"The model: {', '.join(PRESETS)}. sae lets you choose every creation option; "
    "the others are DeepFaceLab's fixed models (h64/h128 half faces, df and liaef128 full "
    "faces at 128, quick96 a fast full-face model at 96).",
    "resolution": "Size in pixels of the faces the model learns, 64–256 in steps of 16 (a "
    "multiple of 32 for -d architectures). Higher is sharper but slower and needs more "
    "memory. Fixed once the model exists.",
    "face_type": f"How much of the head the model learns: {', '.join(FACE_TYPES)}. Half "
    "covers eyes to mouth; whole-face includes the forehead. Fixed once the model exists.",
    "arch": f"Network: {' or '.join(ARCH_BASES)}, optionally -u (better likeness), -d (double "
    "output resolution for the same cost) or -ud. df keeps the src face shape; liae adapts "
    "better to dst's lighting and shape. Fixed once the model exists.",
    "ae_dims": "Width of the autoencoder bottleneck (the face code). More captures more "
    "detail but costs memory. Fixed once the model exists.",
    "e_dims": "Encoder width per channel. More recognises finer features; costs memory. "
    "Fixed once the model exists.",
    "d_dims": "Decoder width per channel. More draws finer detail; costs memory. Fixed once "
    "the model exists.",
    "d_mask_dims": "Mask decoder width per channel (learned masks only). Fixed once the "
    "model exists.",
    "learn_mask": "Also learn the face mask, so merging can use it. Fixed once the model "
    "exists.",
    "multiscale_decoder": "Supervise the decoder at several scales: can sharpen faster, "
    "costs some speed. Fixed once the model exists.",
    "conv_aware_init": "Start the convolutions from conv-aware weights instead of random "
    "ones: may learn faster at first. Acts only at creation.",
    "lightweight": "H64/H128 only: the lightweight form (halved widths) for cards with 4 GB "
    "or less. Fixed once the model exists.",
    "preview_history": "Also keep every preview as a numbered PNG in model/NAME_history/, to "
    "watch progress over time.",
    "target_iteration": "Stop training at this iteration (0: until Ctrl-C).",
    "random_flip": "Flip faces horizontally at random: more angles to learn from, but the "
    "result can look less like src if src's face is asymmetric.",
    "batch_size": "Faces per side per iteration. Larger generalises better but needs more "
    "memory; lower it on out-of-memory errors.",
    "sort_by_yaw": "Feed src faces so their head-turn (yaw) spread follows dst's: helps when "
    "src has few faces at dst's angles.",
    "src_scale_mod": "Scale src faces by -30…30 % before training, to fit a src face that is "
    "wider or narrower than dst's.",
    "pixel_loss": "Add a per-pixel loss to the structural one: can sharpen detail, but it is "
    "unstable early; suggested after ~20k iterations.",
    "eyes_mouth_priority": "Weigh the eyes and mouth much more in the loss: sharper eyes and "
    "teeth, at some cost to the rest of the face.",
    "remove_gray_border": "Also train the crop outside the face (weakly), so the border of "
    "the predicted face is not gray.",
    "face_style_power": "Pull the swapped face's colours toward dst, 0–100; start at 0, try "
    "~10 after 10–20k iterations. Too high can make it look like dst.",
    "bg_style_power": "Pull the background around the face toward dst, 0–100; makes the face "
    "fit dst's surroundings but can make it look like dst.",
    "optimizer_mode": "1 plain; 2 keeps optimizer state in host memory; 3 also recomputes "
    "activations: slower, least GPU memory.",
}


@dataclass(frozen=True)
class Spec:
    """One question: the option's field name, its prompt label and how to read an answer."""

    name: str
    label: str
    parse: Callable[[str], Any]

    @property
    def help(self) -> str:
        return HELP[self.name]


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


def parse_preset(text: str) -> str:
    key = text.strip().lower()
    if key not in PRESETS:
        raise ValueError(f"choose one of {', '.join(PRESETS)}")
    return key


PRESET = Spec("preset", "Model", parse_preset)
CREATION: list[Spec] = [
    Spec("resolution", "Resolution", parse_int),
    Spec("face_type", "Face type", parse_word),
    Spec("arch", "Architecture", parse_word),
    Spec("ae_dims", "AutoEncoder dimensions", parse_int),
    Spec("e_dims", "Encoder dimensions per channel", parse_int),
    Spec("d_dims", "Decoder dimensions per channel", parse_int),
    Spec("d_mask_dims", "Mask decoder dimensions per channel", parse_int),
    Spec("learn_mask", "Learn mask", parse_bool),
    Spec("multiscale_decoder", "Multiscale decoder", parse_bool),
    Spec("conv_aware_init", "Use CA weights", parse_bool),
]
LIGHTWEIGHT_SPEC = Spec("lightweight", "Lightweight model", parse_bool)
CHANGEABLE: list[Spec] = [  # DeepFaceLab's order, roughly
    Spec("preview_history", "Write preview history", parse_bool),
    Spec("target_iteration", "Target iteration", parse_int),
    Spec("random_flip", "Flip faces randomly", parse_bool),
    Spec("batch_size", "Batch size", parse_int),
    Spec("sort_by_yaw", "Feed faces sorted by yaw", parse_bool),
    Spec("src_scale_mod", "Src face scale modifier %", parse_int),
    Spec("pixel_loss", "Use pixel loss", parse_bool),
    Spec("eyes_mouth_priority", "Eyes and mouth priority", parse_bool),
    Spec("remove_gray_border", "Remove gray border", parse_bool),
    Spec("face_style_power", "Face style power", parse_float),
    Spec("bg_style_power", "Background style power", parse_float),
    Spec("optimizer_mode", "Optimizer mode", parse_int),
]
assert {s.name for s in CHANGEABLE} == CHANGEABLE_OPTIONS, "a changeable option is not asked"


def show(value: Any) -> str:
    """A default as the user types it (y/n for yes-no questions)."""
    if isinstance(value, bool):
        return "y" if value else "n"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ask(
    specs: list[Spec], current: ModelOptions, ask_line: Ask, say: Say
) -> tuple[dict[str, Any], ModelOptions]:
    """Ask `specs` in order with `current`'s values as defaults; return answers and options.

    Enter keeps the default, `?` prints the help and asks again, an invalid answer prints why
    and asks again (checked by ModelOptions.validate against the answers so far). At the end
    of input every remaining question keeps its default.
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


def new_model_answers(default_preset: str, given: dict[str, Any], ask_line: Ask,
                      say: Say) -> dict[str, Any]:
    """The preset, then its creation options, then the changeable ones, as overrides.

    `given` (the flags on the command line) are the defaults. Returns ModelOptions field
    names, `preset` included, ready for `preset(name, **rest)`.
    """
    name = ask([PRESET], replace(ModelOptions(), preset=default_preset), ask_line, say)[0]
    name = name["preset"]
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
    try:
        current = ModelOptions(**saved)
    except TypeError as exc:
        raise FacelabError(f"The saved model options are unreadable ({exc}).") from None
    current = replace(current, **{k: v for k, v in given.items() if k in CHANGEABLE_OPTIONS})
    got, _ = ask(CHANGEABLE, current, ask_line, say)
    return {**given, **got}


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
