"""Shared fixtures: the real MNIST from data/mnist/, and one real softmax run trained once per session."""

from pathlib import Path

import pytest
import torch

from digitrec import data, train

REPO = Path(__file__).resolve().parents[1]
BUNDLED_MNIST = REPO / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist() -> data.MNIST:
    return data.load(BUNDLED_MNIST)


@pytest.fixture(scope="session")
def softmax_run(mnist, tmp_path_factory) -> train.TrainResult:
    """The tutorial's softmax regression with its defaults (1,000 steps, about a second)."""
    run_dir = tmp_path_factory.mktemp("runs") / "softmax"
    return train.train(train.resolve_config("softmax"), mnist, torch.device("cpu"), run_dir, show_progress=False)
