"""The weights file: a model's state dict in safetensors, with the config that rebuilds it in its metadata.

`weights_bytes` makes the file (its metadata repeats the config and metrics, so the file alone is
enough to rebuild the model); `load` reads one back with clear errors. Never unpickles anything.
Where the file lives and what else a run keeps beside it is rundir.py's.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from digitrec import models, tasks
from digitrec.errors import ConfigError, ModelError
from digitrec.metadata import read as read_metadata
from digitrec.rundir import WEIGHTS_FILE
from digitrec.tasks import DIGITS, Task


def weights_bytes(model: torch.nn.Module, config: dict, metrics: dict, dtype=torch.float32) -> bytes:
    """The weights file of `model` (floating tensors stored as `dtype`) with `config` and `metrics` as metadata."""
    state = {
        name: (tensor.to(dtype) if tensor.is_floating_point() else tensor).detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
    }
    return save(state, metadata={"config": json.dumps(config), "metrics": json.dumps(metrics)})


@dataclass
class Loaded:
    model: torch.nn.Module
    config: dict
    metrics: dict
    weights_path: Path

    @property
    def task(self) -> Task:
        return tasks.of(self.config["model"])


def weights_path(path: str | Path | None, default: Path = DIGITS.bundled_torch) -> Path:
    """The weights file named by `path`: a run directory, a weights file, or None for the bundled `default`."""
    path = Path(path) if path is not None else default
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file (give a run directory or a .safetensors file)")
    return path


def load(path: str | Path | None = None, task: Task | None = None) -> Loaded:
    """Rebuild the model saved at `path` (see `weights_path`; None: `task`'s bundled model, the digit
    model without a task), in eval mode on the CPU, as float32; with `task`, refuse a model of another
    task (a number reader where a digit model is wanted, or the reverse)."""
    path = weights_path(path, (task or DIGITS).bundled_torch)
    try:
        with safe_open(str(path), framework="pt") as weights:
            metadata = weights.metadata() or {}
            state = {name: weights.get_tensor(name) for name in weights.keys()}
    except Exception as error:  # safetensors raises several unrelated types for a damaged file
        raise ModelError(f"{path}: not a readable safetensors file ({error})") from None
    config, metrics = read_metadata(metadata, path)
    try:
        model = models.from_config(config)  # the size is bounded before anything is allocated
    except ConfigError as error:
        raise ModelError(f"{path}: {error}") from None
    if task is not None:
        task.refuse_other(tasks.of(config["model"]), config["model"], path)
    check_fits(model, state, config["model"], path)
    non_finite = sorted(
        name for name, tensor in state.items() if tensor.is_floating_point() and not tensor.isfinite().all()
    )
    if non_finite:
        raise ModelError(
            f"{path}: the weights hold NaN or infinite values ({', '.join(non_finite[:3])}"
            f"{', ...' if len(non_finite) > 3 else ''}): the training that wrote them diverged"
        )
    model.load_state_dict(
        {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    )
    return Loaded(model.eval(), config, metrics, path)


def check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], name: str, path: Path) -> None:
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    problems = [f"missing {key}" for key in expected.keys() - found.keys()]
    problems += [f"unexpected {key}" for key in found.keys() - expected.keys()]
    problems += [
        f"{key} has shape {found[key]}, expected {expected[key]}"
        for key in expected.keys() & found.keys()
        if found[key] != expected[key]
    ]
    if problems:
        shown = "; ".join(sorted(problems)[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise ModelError(f"{path}: these weights do not fit model {name!r}: {shown}")
