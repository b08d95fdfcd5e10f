import json
from dataclasses import asdict

import pytest
import torch

from digitrec import checkpoint, train
from digitrec.errors import ConfigError


def test_tutorial_recipes_resolve_to_the_tutorial_settings():
    softmax = train.resolve_config("softmax")
    assert (softmax.steps, softmax.batch_size, softmax.optimizer, softmax.lr) == (1000, 100, "sgd", 0.5)
    cnn = train.resolve_config("cnn")
    assert (cnn.steps, cnn.batch_size, cnn.optimizer, cnn.lr) == (20000, 50, "adam", 1e-4)
    assert train.resolve_config("cnn", steps=10, lr=None).steps == 10  # None means "not overridden"


def test_unknown_recipe_and_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="no recipe 'long'"):
        train.resolve_config("softmax", "long")
    with pytest.raises(ConfigError, match="must be positive"):
        train.resolve_config("softmax", steps=0)


def test_softmax_with_tutorial_defaults_passes_90_percent_on_the_real_test_set(softmax_run):
    assert softmax_run.metrics["test_accuracy"] >= 0.90
    assert softmax_run.metrics["steps"] == 1000


def test_run_directory_holds_weights_config_metrics_and_log(softmax_run):
    run_dir = softmax_run.run_dir
    assert json.loads((run_dir / "config.json").read_text()) == asdict(softmax_run.config)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test_accuracy", "validation_accuracy", "train_seconds", "steps"} <= metrics.keys()
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == list(range(100, 1001, 100))
    assert log[-1]["validation_accuracy"] == metrics["validation_accuracy"]


def test_weights_written_by_a_run_load_and_reproduce_its_accuracy(softmax_run, mnist):
    loaded = checkpoint.load(softmax_run.run_dir)
    errors = int((loaded.model(mnist.test.images).argmax(1) != mnist.test.labels).sum())
    assert softmax_run.metrics["test_accuracy"] == (10000 - errors) / 10000  # an exact ratio, not float32's 0.91039997


def test_same_seed_gives_identical_weights_on_cpu(mnist):
    config = train.resolve_config("fast", steps=20, log_every=10, eval_every=20)
    runs = [train.train(config, mnist, torch.device("cpu"), show_progress=False, print_line=lambda _: None) for _ in range(2)]
    for (name, first), second in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().values()):
        assert torch.equal(first, second), name


def test_onecycle_schedule_warms_up_then_decays_to_zero():
    factor = train.lr_factor(train.TrainConfig(steps=100, schedule="onecycle", warmup_fraction=0.2))
    assert factor(0) == pytest.approx(1 / 20) and factor(19) == pytest.approx(1.0)
    assert factor(60) < factor(40) and factor(100) == pytest.approx(0.0)
