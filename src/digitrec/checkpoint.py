"""The one place that saves and loads a model's weights with the config that rebuilds it.

A run directory holds `weights.safetensors` (the state dict; its metadata repeats the config and
metrics, so the file alone is enough to rebuild the model), `config.json` and `metrics.json`.
Every file is written to a temporary name and renamed, so nothing is ever left half-written.
Never unpickles anything.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from digitrec import models
from digitrec.errors import ConfigError, ModelError
from digitrec.files import write_atomic

WEIGHTS_FILE = "weights.safetensors"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_MODEL = BUNDLED_DIR / "default"


def to_json(value: dict) -> str:
    return json.dumps(value, indent=2) + "\n"


def save_run(run_dir: Path, model: torch.nn.Module, config: dict, metrics: dict, dtype=torch.float32) -> Path:
    """Save weights (floating tensors stored as `dtype`), config and metrics into `run_dir`."""
    state = {
        name: (tensor.to(dtype) if tensor.is_floating_point() else tensor).detach().cpu().contiguous()
        for name, tensor in model.state_dict().items()
    }
    metadata = {"config": json.dumps(config), "metrics": json.dumps(metrics)}
    write_atomic(run_dir / WEIGHTS_FILE, save(state, metadata=metadata))
    write_atomic(run_dir / "config.json", to_json(config))
    write_atomic(run_dir / "metrics.json", to_json(metrics))
    return run_dir


@dataclass
class Loaded:
    model: torch.nn.Module
    config: dict
    metrics: dict
    weights_path: Path


def weights_path(path: str | Path | None) -> Path:
    """The weights file named by `path`: a run directory, a weights file, or None for the bundled model."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file (give a run directory or a .safetensors file)")
    return path


def load(path: str | Path | None = None) -> Loaded:
    """Rebuild the model saved at `path` (see `weights_path`), in eval mode on the CPU, as float32."""
    path = weights_path(path)
    try:
        with safe_open(str(path), framework="pt") as weights:
            metadata = weights.metadata() or {}
            state = {name: weights.get_tensor(name) for name in weights.keys()}
    except Exception as error:  # safetensors raises several unrelated types for a damaged file
        raise ModelError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        config = json.loads(metadata["config"])
        metrics = json.loads(metadata.get("metrics", "{}"))
        model = models.create(config["model"], config.get("width"))
    except (KeyError, ValueError, TypeError):
        raise ModelError(f"{path}: no digitrec model config in the file's metadata") from None
    except ConfigError as error:
        raise ModelError(f"{path}: {error}") from None
    check_fits(model, state, config["model"], path)
    model.load_state_dict({name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state.items()})
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


def load_record(run_dir: str | Path) -> tuple[dict, dict]:
    """A run directory's config and metrics, without loading its weights."""
    run_dir = Path(run_dir)
    records = []
    for name in ("config.json", "metrics.json"):
        try:
            records.append(json.loads((run_dir / name).read_text()))
        except (OSError, ValueError) as error:
            raise ModelError(f"{run_dir / name}: cannot read a run record ({error})") from None
    return records[0], records[1]
