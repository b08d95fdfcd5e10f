"""Re-stamp the bundled models' records from their files, so nothing in them is written by hand.

For each bundled digit model (`src/digitrec/bundled/*`; not the number reader), measures the stored weights (as `predict` and `serve`
load them) on the validation and test sets with `evaluate.accuracy`, and rewrites `metrics.json`, the
metrics in `weights.safetensors`' metadata and, where they are, in `model.onnx`'s and `model.int8.onnx`'s: the
training facts from the run's own `config.json` and `log.jsonl`, what the model was trained on from its
previous record, and `provenance` of this measurement (versions, commit, CPU). The weights themselves
are left bit-identical (checked before anything is written), and so is the ONNX graph. Prints a table.

    python bench/stamp_bundled.py [--dry-run]
"""

import argparse
import json
import shlex
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from digitrec import checkpoint, data, evaluate, models, provenance, rundir
from digitrec.files import BUNDLED_DIR, write_atomic


def stored_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as weights:
        return {name: weights.get_tensor(name) for name in weights.keys()}, weights.metadata()


def measured_metrics(run_dir: Path, mnist: data.MNIST, previous: dict) -> dict:
    config, log = json.loads((run_dir / rundir.CONFIG_FILE).read_text()), rundir.read_log(run_dir)
    model = checkpoint.load(run_dir).model
    tensors, _ = stored_tensors(run_dir / rundir.WEIGHTS_FILE)
    command = [
        "digitrec",
        "train",
        "--model",
        config["model"],
        "--recipe",
        config["recipe"],
        "--seed",
        str(config["seed"]),
    ]
    recorded = previous.get("provenance", {})
    trained_on = recorded.get("trained_on") or {  # a run's own record: where it trained
        key: source[key]
        for source in (previous, recorded)
        if "measured" not in source
        for key in ("device", "torch_threads", "processes", "precision", "cpu", "cpu_flags")
        if key in source
    }
    return {
        "model": config["model"],
        "recipe": config["recipe"],
        "parameters": models.parameter_count(model),
        "steps": log[-1]["step"],
        "train_seconds": round(log[-1]["seconds"], 3),
        "validation_accuracy": evaluate.accuracy(
            evaluate.model_logits(model, mnist.validation), mnist.validation.labels
        ),
        "test_accuracy": evaluate.accuracy(evaluate.model_logits(model, mnist.test), mnist.test.labels),
        "stored_as": str(next(t.dtype for t in tensors.values() if t.is_floating_point())).removeprefix("torch."),
        "provenance": provenance.provenance(
            measured="the stored weights, as predict loads them (float32 compute)",
            device="cpu",
            torch_threads=torch.get_num_threads(),
            precision="float32",
            trained_with=shlex.join(command),
            trained_on=trained_on,
        ),
    }


def restamp_onnx(path: Path, config: dict, metrics: dict) -> bytes:
    import onnx

    model = onnx.load(str(path))
    graph_before = model.graph.SerializeToString()
    values = {"config": json.dumps(config), "metrics": json.dumps(metrics)}
    for entry in model.metadata_props:
        if entry.key in values:
            entry.value = values.pop(entry.key)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    assert model.graph.SerializeToString() == graph_before
    return model.SerializeToString()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="measure and print, write nothing")
    args = parser.parse_args()
    mnist = data.load()
    print(f"{'model':<10}{'validation':>12}{'test (was)':>12}{'test (now)':>12}  stored as")
    for run_dir in sorted(path for path in BUNDLED_DIR.iterdir() if (path / rundir.WEIGHTS_FILE).is_file()):
        if models.spec(json.loads((run_dir / rundir.CONFIG_FILE).read_text())["model"]).task != "digits":
            continue  # the number reader keeps its training run's record (measured on strings, not digits)
        previous = json.loads((run_dir / rundir.METRICS_FILE).read_text())
        metrics = measured_metrics(run_dir, mnist, previous)
        config = json.loads((run_dir / rundir.CONFIG_FILE).read_text())
        print(
            f"{run_dir.name:<10}{100 * metrics['validation_accuracy']:>11.2f}%{100 * previous['test_accuracy']:>11.2f}%"
            f"{100 * metrics['test_accuracy']:>11.2f}%  {metrics['stored_as']}"
        )
        if args.dry_run:
            continue
        tensors, metadata = stored_tensors(run_dir / rundir.WEIGHTS_FILE)
        weights = save(tensors, metadata={**metadata, "config": json.dumps(config), "metrics": json.dumps(metrics)})
        write_atomic(run_dir / rundir.WEIGHTS_FILE, weights)
        rewritten, _ = stored_tensors(run_dir / rundir.WEIGHTS_FILE)
        assert rewritten.keys() == tensors.keys()
        assert all(rewritten[k].numpy().tobytes() == tensors[k].numpy().tobytes() for k in tensors)  # bit-identical
        write_atomic(run_dir / rundir.METRICS_FILE, rundir.to_json(metrics))
        for name in ("model.onnx", "model.int8.onnx"):
            if (run_dir / name).is_file():
                write_atomic(run_dir / name, restamp_onnx(run_dir / name, config, metrics))


if __name__ == "__main__":
    main()
