"""Two processes on `torchrun` (gloo on the CPU) train one model together, as one process would."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from digitrec import train

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # torchrun starts two training processes per test


def torchrun_train(run_dir, *args) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "digitrec",
        "train",
        "--quiet",
        "--out",
        str(run_dir),
        *map(str, args),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_processes_train_the_tutorial_softmax_to_the_same_weights(softmax_run, tmp_path):
    result = torchrun_train(tmp_path, "--model", "softmax")
    assert result.stdout.count("test accuracy") == 1  # only the leader reports
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["provenance"]["processes"] == 2 and metrics["steps"] == 1000
    # Each process takes half of every batch of 100 and the gradients are averaged, so the steps are
    # the one-process steps up to float rounding in the sums.
    weights = load_file(tmp_path / "weights.safetensors")
    for name, tensor in softmax_run.model.state_dict().items():
        assert torch.allclose(weights[name], tensor, atol=1e-5), name
    assert abs(metrics["test_accuracy"] - softmax_run.metrics["test_accuracy"]) <= 0.0005


def test_two_processes_train_fast_to_the_accuracy_of_one(mnist, tmp_path):
    torchrun_train(tmp_path, "--model", "fast", "--steps", "300")
    two = json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"]
    config = train.resolve_config("fast", steps=300)
    one = train.train(config, mnist, torch.device("cpu"), print_line=lambda _: None, show_progress=False)
    # batch norm sees each process's 64 images rather than all 128, so the runs differ slightly
    assert abs(two - one.metrics["test_accuracy"]) <= 0.005
    assert two >= 0.98
