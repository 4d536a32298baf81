"""What goes into a model save besides its files: tensors taken out of nested state (the
optimizer's) so that they go to safetensors and the rest to JSON, the random generators'
states (an exact resume draws the same batches), and the check that nothing saved is NaN
or inf (`checkpoint.py` writes and reads the files)."""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np
import torch

from facelab.errors import FacelabError


class NonFinite(FacelabError):
    """Refused to save: a weight or optimizer value is NaN or inf (nothing was written)."""


def split_tensors(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-safe copy of `obj` with every tensor moved to `tensors` under a path key."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: split_tensors(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        return {"__dict__": [[k, split_tensors(v, f"{path}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_tensors(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a checkpoint")


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: join_tensors(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def check_finite(name: str, what: str, tensors: dict[str, torch.Tensor]) -> None:
    for key, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise NonFinite(f"Model {name!r} was not saved: {what} {key!r} holds NaN or inf "
                            "(the training diverged); the last save is kept.")


def check_savable(name: str, model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer | None) -> None:
    """Raise `NonFinite` as `save` would, writing nothing: a data-parallel rank that does not
    write refuses the same saves as rank 0, so both roll back alike."""
    opt_tensors: dict[str, torch.Tensor] = {}
    if optimizer is not None:
        split_tensors(optimizer.state_dict(), "opt", opt_tensors)
    check_finite(name, "weight", dict(model.state_dict()))
    check_finite(name, "optimizer value", opt_tensors)


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # clone so tied weights do not share storage (safetensors refuses shared tensors)
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [
            base64.b64encode(s.numpy().tobytes()).decode("ascii")
            for s in torch.cuda.get_rng_state_all()
        ]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(
            [
                torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())
                for s in cuda
            ]
        )
