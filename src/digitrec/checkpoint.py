"""The one place that saves and loads a model's weights with the config that rebuilds it.

A run directory holds `weights.safetensors` (the state dict; its metadata repeats the config and
metrics, so the file alone is enough to rebuild the model), `config.json` and `metrics.json`.
Every file is written to a temporary name and renamed, so nothing is ever left half-written.
Never unpickles anything.

A run in progress also keeps training checkpoints (model, optimiser, schedule, step, random states):
`checkpoint-STEP.pt` files written by `torch.save` and read back with `weights_only=True`, listed with
their SHA-256 in `checkpoints.json`. The newest `KEEP_CHECKPOINTS` are kept, so a damaged newest file
falls back to the one before it.
"""

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from digitrec import models
from digitrec.errors import ConfigError, ModelError
from digitrec.files import DEFAULT_MODEL, write_atomic
from digitrec.metadata import read as read_metadata

WEIGHTS_FILE = "weights.safetensors"
CHECKPOINTS_FILE = "checkpoints.json"
KEEP_CHECKPOINTS = 2


def to_json(value: dict) -> str:
    return json.dumps(value, indent=2, allow_nan=False) + "\n"  # NaN is not JSON: fail rather than write it


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
    config, metrics = read_metadata(metadata, path)
    try:
        model = models.from_config(config)  # the size is bounded before anything is allocated
    except ConfigError as error:
        raise ModelError(f"{path}: {error}") from None
    check_fits(model, state, config["model"], path)
    non_finite = sorted(name for name, tensor in state.items() if tensor.is_floating_point() and not tensor.isfinite().all())
    if non_finite:
        raise ModelError(f"{path}: the weights hold NaN or infinite values ({', '.join(non_finite[:3])}"
                         f"{', ...' if len(non_finite) > 3 else ''}): the training that wrote them diverged")
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


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    """Write the training `state` (tensors, numbers, strings, dicts and lists of them) as the newest checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    path = run_dir / f"checkpoint-{state['step']:07d}.pt"
    write_atomic(path, payload)
    entries = [entry for entry in checkpoint_entries(run_dir) if entry["file"] != path.name]
    entries.append({"file": path.name, "step": state["step"], "sha256": hashlib.sha256(payload).hexdigest()})
    kept, dropped = entries[-KEEP_CHECKPOINTS:], entries[:-KEEP_CHECKPOINTS]
    write_atomic(run_dir / CHECKPOINTS_FILE, to_json({"checkpoints": kept}))
    for entry in dropped:  # only once the list no longer names them
        (run_dir / entry["file"]).unlink(missing_ok=True)
    return path


def checkpoint_entries(run_dir: Path) -> list[dict]:
    """The checkpoints listed in `run_dir`, oldest first; none when there is no readable list."""
    try:
        return json.loads((run_dir / CHECKPOINTS_FILE).read_text())["checkpoints"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def load_checkpoint(run_dir: str | Path, warn=print) -> dict:
    """The newest intact checkpoint of `run_dir`; a damaged one is reported through `warn` and skipped."""
    run_dir = Path(run_dir)
    entries = checkpoint_entries(run_dir)
    if not entries:
        raise ModelError(f"{run_dir}: no training checkpoint to resume from ({CHECKPOINTS_FILE} is missing or unreadable)")
    for entry in reversed(entries):
        path = run_dir / str(entry.get("file"))
        try:
            payload = path.read_bytes()
        except OSError as error:
            warn(f"{path}: cannot read the checkpoint ({error.strerror}); trying the one before")
            continue
        if hashlib.sha256(payload).hexdigest() != entry.get("sha256"):
            warn(f"{path}: the checkpoint is damaged (its SHA-256 does not match {CHECKPOINTS_FILE}); trying the one before")
            continue
        try:
            return torch.load(io.BytesIO(payload), weights_only=True)
        except Exception as error:  # a file that passed its checksum but is not a torch checkpoint
            warn(f"{path}: not a readable checkpoint ({error}); trying the one before")
    raise ModelError(f"{run_dir}: every checkpoint is damaged or missing; the run cannot be resumed")


def remove_checkpoints(run_dir: Path) -> None:
    """Delete a finished run's checkpoints: its weights file now holds the result."""
    for entry in checkpoint_entries(run_dir):
        (run_dir / entry["file"]).unlink(missing_ok=True)
    (run_dir / CHECKPOINTS_FILE).unlink(missing_ok=True)
