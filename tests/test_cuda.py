"""Training on a CUDA GPU: the graphed step against the eager one. Skipped where torch sees no GPU (CI, most
machines here); bench/gpu_check.sh runs this module on a GPU machine."""

from dataclasses import replace

import pytest
import torch

from digitrec import rundir, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")
QUIET = {"print_line": lambda _: None, "show_progress": False}


def max_difference(first: torch.nn.Module, second: torch.nn.Module) -> float:
    theirs = second.state_dict()
    return max(
        (tensor.float() - theirs[name].float()).abs().max().item() for name, tensor in first.state_dict().items()
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphed_training_takes_the_same_steps_as_eager_training(mnist, precision):
    # full: augmentation and weight decay inside the graph; ema: the average updated inside it too
    config = train.resolve_config(
        "fast", "full", width=8, steps=60, log_every=20, eval_every=60, precision=precision, ema=0.9
    )
    eager = train.train(replace(config, cuda_graph="off"), mnist, CUDA, **QUIET)
    graphed = train.train(replace(config, cuda_graph="on"), mnist, CUDA, **QUIET)
    assert graphed.metrics["provenance"]["cuda_graph"] is True and eager.metrics["provenance"]["cuda_graph"] is False
    # fused SGD rounds a little differently from the eager foreach SGD: close, not equal
    assert max_difference(eager.model, graphed.model) < (1e-3 if precision == "fp32" else 2e-2)
    assert abs(eager.metrics["validation_accuracy"] - graphed.metrics["validation_accuracy"]) < 0.01
    assert [row["step"] for row in graphed.log] == [20, 40, 60]


def test_graphed_adam_training_with_dropout_learns_as_eager_training_does(mnist):
    # the tutorial cnn: capturable Adam, and dropout masks drawn by the GPU inside the graph (other masks than eager)
    config = train.resolve_config("cnn", steps=300, log_every=100, eval_every=300)
    eager = train.train(replace(config, cuda_graph="off"), mnist, CUDA, **QUIET)
    graphed = train.train(replace(config, cuda_graph="on"), mnist, CUDA, **QUIET)
    assert graphed.metrics["validation_accuracy"] > 0.9
    assert abs(eager.metrics["validation_accuracy"] - graphed.metrics["validation_accuracy"]) < 0.02


def test_a_graphed_run_resumes_to_the_uninterrupted_runs_weights(mnist, tmp_path):
    config = train.resolve_config("fast", "full", width=8, steps=40, log_every=10, eval_every=40, ema=0.9)
    whole = train.train(config, mnist, CUDA, **QUIET)
    first = train.Training(config, mnist, CUDA)
    first.advance(17)  # 3 eager steps, the capture, 14 replays
    rundir.save_checkpoint(tmp_path, {**first.state_dict(), "log": [], "train_seconds": 0.0})
    resumed = train.train(config, mnist, CUDA, tmp_path, resume_from=rundir.load_checkpoint(tmp_path), **QUIET)
    assert max_difference(whole.model, resumed.model) < 1e-5  # eager warm-up steps after the resume, replays before


def test_a_graphed_runs_checkpoint_resumes_on_the_cpu(mnist, tmp_path):
    config = train.resolve_config("fast", "quick", width=4, steps=20, log_every=10, eval_every=20)
    first = train.Training(config, mnist, CUDA)
    first.advance(10)
    rundir.save_checkpoint(tmp_path, {**first.state_dict(), "log": [], "train_seconds": 0.0})
    state = rundir.load_checkpoint(tmp_path)
    resumed = train.train(config, mnist, torch.device("cpu"), tmp_path, resume_from=state, **QUIET)
    assert resumed.metrics["steps"] == 20 and resumed.metrics["provenance"]["cuda_graph"] is False


def test_the_cli_says_the_steps_run_as_a_cuda_graph(tmp_path):
    from helpers import run  # here: helpers needs hypothesis, which the GPU machine may lack for the other tests

    result = run(
        "train",
        "--model",
        "fast",
        "--width",
        4,
        "--steps",
        30,
        "--log-every",
        10,
        "--device",
        "cuda",
        "--out",
        tmp_path / "run",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "on cuda, precision fp32, CUDA graph" in result.output
