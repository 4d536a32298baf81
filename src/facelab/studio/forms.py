"""A stage's form, generated from the CLI's own declarations, and a submitted form turned
back into the CLI's flags.

The form is the command's signature (`inspect.signature` of its cli function, whose
generated flags come from `facelab.options` declarations): each field carries the
declaration's help, range, step, choices, default and whether a model fixes it; the few
flags a command declares itself (`--model-name`, `--frames`, …) bring their Typer help and
default. `form_args` checks submitted values with the declaration's own `check`, so a page
gets the CLI's sentence for a wrong value, and writes them as `--flag=value` (defaults
left out, as a user would).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import typing
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from typer.models import ArgumentInfo, OptionInfo

from facelab.errors import FacelabError
from facelab.options import OptionSpec, specs
from facelab.studio.security import workspace_path
from facelab.workspace import Workspace


@dataclass(frozen=True)
class Stage:
    id: str
    title: str
    words: tuple[str, ...]  # the CLI command, e.g. ("video", "extract")
    fn: str  # "module:function" of the CLI command (its signature is the form)
    classes: tuple[str, ...] = ()  # "module:Class" whose declarations describe the flags
    sides: tuple[str, ...] = ()  # the positional side's choices
    exclude: tuple[str, ...] = ()  # flags a page cannot give (terminal prompts, other dirs)


_CLI, _OPT = "facelab.cli.", "facelab."
STAGES: dict[str, Stage] = {s.id: s for s in (
    Stage("video-extract", "Extract frames", ("video", "extract"), "video_cmd:extract",
          sides=("src", "dst"), exclude=("inputs",)),
    Stage("denoise", "Denoise dst", ("video", "denoise"), "denoise_cmd:denoise",
          sides=("dst",)),
    Stage("extract", "Extract faces", ("extract",), "faces_cmd:extract",
          ("faces.extract:FaceExtractOptions",), ("src", "dst")),
    Stage("sort", "Sort faces", ("sort",), "faceset_cmd:sort", sides=("src", "dst"),
          exclude=("folder",)),
    Stage("stats", "Faceset statistics", ("faceset", "stats"), "faceset_cmd:stats",
          sides=("src", "dst"), exclude=("folder",)),
    Stage("train", "Train", ("train",), "train_cmd:train_cmd",
          ("train.run_options:TrainOptions", "train.models:ModelOptions",
           "meshswap.options:MeshSwapOptions"), exclude=("interactive",)),
    Stage("merge", "Merge", ("merge",), "merge_cmd:merge_cmd", ("merge.options:MergeOptions",)),
    Stage("assemble", "Assemble the video", ("video", "assemble"), "video_cmd:assemble_cmd"),
    Stage("mask-train", "Fine-tune the segmenter", ("mask", "train"), "mask_cmd:train",
          ("segment.options:MaskTrainOptions",), ("src", "dst")),
    Stage("mask-apply", "Write the faces' masks", ("mask", "apply"), "mask_cmd:apply",
          sides=("src", "dst")),
    Stage("mask-worst", "Faces to label next", ("mask", "worst"), "mask_cmd:worst",
          sides=("src", "dst")),
)}


def _load(ref: str, prefix: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(prefix + module), name)


def _declared(cls: type) -> dict[str, OptionSpec]:
    """Every declared option of `cls`, nested options classes' included."""
    found: dict[str, OptionSpec] = {}
    for s in specs(cls):
        if isinstance(s.base, type) and dataclasses.is_dataclass(s.base):
            found.update(_declared(s.base))
        found.setdefault(s.name, s)
    return found


def _stage_declared(stage: Stage) -> dict[str, OptionSpec]:
    """The declarations of a stage's options classes (the first class naming one wins)."""
    declared: dict[str, OptionSpec] = {}
    for ref in stage.classes:
        for name, s in _declared(_load(ref, _OPT)).items():
            declared.setdefault(name, s)
    return declared


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


def _sort_methods() -> list[str]:
    from facelab.faceset.methods import METHODS

    return list(METHODS)


def _train_presets() -> list[str]:
    from facelab.meshswap.options import FAMILY
    from facelab.train.models.catalog import PRESETS

    return [*PRESETS, FAMILY]


#: choices the CLI checks itself (no declaration lists them)
_CHOICES = {("sort", "by"): _sort_methods, ("train", "preset"): _train_presets,
            ("video-extract", "fmt"): lambda: ["video", "png", "jpg"]}


@cache
def form(stage_id: str) -> dict[str, Any]:
    """The form of a stage as JSON-ready data: its fields in the command's order."""
    stage = STAGES.get(stage_id)
    if stage is None:
        raise FacelabError(f"Unknown stage {stage_id!r}: one of {', '.join(STAGES)}.")
    declared = _stage_declared(stage)
    fields = []
    for name, p in inspect.signature(_load(stage.fn, _CLI), eval_str=True).parameters.items():
        info = p.default
        if isinstance(info, ArgumentInfo):
            fields.append({"name": name, "kind": "choice", "positional": True, "flag": name,
                           "off": None, "choices": list(stage.sides),
                           "default": stage.sides[0], "required": True, "optional": False,
                           "help": info.help or "", "allowed": "", "range": None,
                           "above": None, "step": None, "fixed": False, "hint": None})
        elif isinstance(info, OptionInfo) and not info.hidden and name not in stage.exclude:
            f = _field(name, p.annotation, info, declared.get(name))
            if f is not None:
                fields.append(f)
    for f in fields:
        if (stage_id, f["name"]) in _CHOICES:
            f.update(kind="choice", choices=list(_CHOICES[stage_id, f["name"]]()),
                     own_choices=True)
    return {"stage": stage.id, "title": stage.title, "command": list(stage.words),
            "fields": fields}


def _field(name: str, annotation: Any, info: OptionInfo, s: OptionSpec | None
           ) -> dict[str, Any] | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    base = args[0] if optional and len(args) == 1 else annotation
    decls = [d for d in info.param_decls or () if d.startswith("--")]
    on, _, off = (decls[0] if decls else "--" + name.replace("_", "-")).partition("/")
    choices = [_plain(c) for c in s.allowed() or ()] if s is not None else []
    if typing.get_origin(base) is typing.Literal:
        choices = list(typing.get_args(base))
    if isinstance(base, type) and issubclass(base, enum.Enum):
        choices = choices or [c.value for c in base]
    kinds = {bool: "bool", int: "int", float: "float", str: "str", Path: "path"}
    kind = "choice" if choices else kinds.get(base) if isinstance(base, type) else None
    if kind is None:
        return None  # a list or other shape a form does not give
    default = None if info.default is ... else _plain(info.default)
    lo, hi = s.range if s is not None and s.range else (info.min, info.max)
    return {"name": name, "kind": kind, "flag": on, "off": off or None,
            "choices": choices, "default": default, "required": info.default is ...,
            "optional": optional or (default is None and info.default is not ...),
            "help": s.help if s is not None else (info.help or ""),
            "allowed": s.constraint() if s is not None else "",
            "range": [lo, hi] if lo is not None or hi is not None else None,
            "above": s.above if s is not None else None,
            "step": s.step if s is not None else None,
            "fixed": bool(s is not None and s.fixed),
            "hint": _plain(s.default_value) if s is not None and default is None
            and not s.required else None}


def _coerce(f: dict[str, Any], v: Any, ws: Workspace) -> Any:
    kind, flag = f["kind"], f["flag"]
    if kind == "bool":
        if isinstance(v, bool):
            return v
        if v in ("true", "false"):
            return v == "true"
        raise FacelabError(f"{flag} is on or off, not {v!r}.")
    if kind in ("int", "float"):
        if isinstance(v, str):
            try:
                v = int(v) if kind == "int" else float(v)
            except ValueError:
                raise FacelabError(f"{flag} must be a number, not {v!r}.") from None
        if isinstance(v, bool) or not isinstance(v, int | float) \
                or (kind == "int" and not isinstance(v, int) and not float(v).is_integer()):
            raise FacelabError(f"{flag} must be a {'whole ' if kind == 'int' else ''}"
                               f"number, not {v!r}.")
        return int(v) if kind == "int" else float(v)
    if not isinstance(v, str) or len(v) > 500 or any(ord(c) < 32 for c in v):
        raise FacelabError(f"{flag} must be a line of text.")
    if kind == "choice" and v not in f["choices"]:
        raise FacelabError(f"{flag} must be one of {', '.join(map(str, f['choices']))}, "
                           f"not {v!r}.")
    if kind == "path":
        return str(workspace_path(ws, v, must_exist=False))
    return v


def form_args(stage_id: str, values: Any, ws: Workspace) -> list[str]:
    """The CLI arguments of `stage_id` for submitted `values` (field name → value); a bad
    value raises FacelabError naming its flag, as the CLI would."""
    spec = form(stage_id)
    if not isinstance(values, dict):
        raise FacelabError("The form's values must be an object of field names.")
    fields = {f["name"]: f for f in spec["fields"]}
    if unknown := sorted(set(values) - set(fields)):
        raise FacelabError(f"{spec['title']} has no option {unknown[0]!r}.")
    args, positional = list(spec["command"]), []
    declared = _stage_declared(STAGES[stage_id])
    for name, f in fields.items():
        v = values.get(name)
        if v is None or v == "":
            if f["required"]:
                raise FacelabError(f"{f['flag']} is required.")
            continue
        v = _coerce(f, v, ws)
        if name in declared and f["kind"] != "path" and not f.get("own_choices"):
            s = declared[name]
            s.check(s.base(v) if isinstance(s.base, type) and issubclass(s.base, enum.Enum)
                    else v)
        elif f["range"] and f["kind"] in ("int", "float"):
            lo, hi = f["range"]
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise FacelabError(f"{f['flag']} must be from {lo} to {hi}, not {v}.")
        if f.get("positional"):
            positional.append(str(v))
        elif v == f["default"] and not f["required"]:
            continue  # the CLI's default: left out, as a user would
        elif f["kind"] == "bool":
            if v or f["off"]:
                args.append(f["flag"] if v else f["off"])
        else:
            args.append(f"{f['flag']}={v}")
    return args[:len(spec["command"])] + positional + args[len(spec["command"]):]


def stages() -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(s).items() if k in ("id", "title", "sides")}
            for s in STAGES.values()]
