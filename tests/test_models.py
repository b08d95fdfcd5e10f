import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digitrec import checkpoint, models, number_strings, train
from digitrec.config import check_fields, setting
from digitrec.errors import ConfigError

from helpers import run


@pytest.mark.parametrize("name", sorted(name for name, spec in models.REGISTRY.items() if spec.task == "digits"))
def test_every_model_maps_images_to_ten_logits_and_learns_from_one_step(name, mnist):
    torch.manual_seed(0)
    model = models.create(name).train()
    images, labels = mnist.train.images[:64], mnist.train.labels[:64]
    recipe = train.resolve_config(name)
    # the recipe's optimiser at a tenth of its peak rate: warm-up recipes start far below their peak
    optimizer = train.make_optimizer(train.resolve_config(name, lr=recipe.lr / 10), model.parameters())
    torch.manual_seed(1)  # the same dropout mask before and after the step
    logits = model(images)
    assert logits.shape == (64, 10)
    before = F.cross_entropy(logits, labels)
    before.backward()
    optimizer.step()
    torch.manual_seed(1)
    assert F.cross_entropy(model(images), labels) < before


def test_the_number_reader_scores_every_column_of_a_strip_and_learns_from_one_step(mnist):
    images, labels = mnist.train.images[:, 0].numpy(), mnist.train.labels.numpy()
    made = number_strings.random_batch(images, labels, 16, np.random.default_rng(0))
    torch.manual_seed(0)
    reader = models.create("reader").train()
    optimizer = train.make_optimizer(train.resolve_config("reader", lr=2e-4), reader.parameters())
    strips = torch.from_numpy(made.pixels)

    def loss() -> torch.Tensor:
        scores = reader(strips).log_softmax(1)
        assert scores.shape == (16, 11, strips.shape[3] // number_strings.COLUMN_STEP)
        return F.ctc_loss(
            scores.permute(2, 0, 1),
            torch.from_numpy(made.digits + 1),
            torch.from_numpy(made.columns),
            torch.from_numpy(made.lengths),
            blank=number_strings.BLANK,
        )

    before = loss()
    before.backward()
    optimizer.step()
    assert loss() < before


def test_tutorial_models_start_as_the_tutorial_does():
    softmax = models.create("softmax")
    assert not softmax.linear.weight.any() and not softmax.linear.bias.any()
    cnn = models.create("cnn")
    weights = cnn.features[0].weight
    assert weights.shape == (32, 1, 5, 5) and weights.abs().max() <= 0.2  # truncated at two sigma
    assert 0.08 < weights.std() < 0.1
    assert torch.all(cnn.classifier[1].bias == 0.1)
    assert models.parameter_count(cnn) == 3274634  # the tutorial's 3.27 M parameters


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model 'lenet'"):
        models.create("lenet")


def test_logits_in_batches_matches_one_pass_and_restores_training_mode():
    model = models.create("fast").train()
    images = torch.rand(25, 1, 28, 28)
    batched = models.logits_in_batches(model, images, batch_size=7)
    assert model.training
    with torch.no_grad():
        assert torch.allclose(batched, model.eval()(images), atol=1e-5)


@dataclass(frozen=True)
class ToySize:
    width: int = setting(4, "Hidden units.", low=1, high=64)

    def __post_init__(self):
        check_fields(self)


class Toy(torch.nn.Module):
    """A one-hidden-layer perceptron, added the way a new architecture is: one class, one spec."""

    def __init__(self, size: ToySize = ToySize()):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(28 * 28, size.width), torch.nn.ReLU(), torch.nn.Linear(size.width, 10)
        )

    def forward(self, images):
        return self.layers(images)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(models, "REGISTRY", dict(models.REGISTRY))  # registered for this test only
    models.register(
        "toy",
        models.ModelSpec(
            Toy,
            size=ToySize,
            recipes={
                "default": dict(steps=60, batch_size=50, lr=0.1, log_every=20, eval_every=60),
            },
        ),
    )


def test_a_model_added_with_one_spec_trains_from_the_cli_and_loads_back(toy, tmp_path):
    assert "Architecture: softmax, cnn, fast, reader, toy." in " ".join(run("train", "--help").output.split())
    out = tmp_path / "toy"
    result = run("train", "--model", "toy", "--width", 8, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "training toy (default) for 60 steps of 50" in result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["width"], config["steps"], config["lr"]) == ("toy", 8, 60, 0.1)
    loaded = checkpoint.load(out)
    assert loaded.model.layers[1].weight.shape == (8, 784)
    evaluated = json.loads(run("evaluate", out, "--json").output)
    assert evaluated["model"] == "toy" and evaluated["test_accuracy"] == pytest.approx(
        loaded.metrics["test_accuracy"], abs=1e-6
    )
    assert evaluated["test_accuracy"] > 0.5  # 60 steps of a perceptron learn something
    assert run("train", "--model", "toy", "--width", 65, "--out", tmp_path / "big").output.strip() == (
        "error: width must be in 1..64, not 65"
    )


def test_size_parameters_are_refused_by_models_without_them():
    with pytest.raises(ConfigError, match="model 'cnn' has a fixed size: --width applies to fast, reader only"):
        models.create("cnn", width=8)
    with pytest.raises(ConfigError, match="model 'reader' has no --pool-first: --pool-first applies to fast only"):
        models.create("reader", pool_first=True)
    with pytest.raises(ConfigError, match="pool_first must be true or false, not 1"):
        models.create("fast", pool_first=1)


def test_pool_first_pools_before_the_norm_and_weights_without_it_keep_their_layout():
    images = torch.rand(3, 1, 28, 28)
    pooled = models.create("fast", width=4, pool_first=True).eval()
    maps = models.inside_outputs(pooled, images)
    assert [tuple(maps[f"activation:conv{i}"].shape) for i in (1, 2, 3)] == [
        (3, 4, 14, 14),
        (3, 8, 7, 7),
        (3, 16, 3, 3),
    ]
    # the first block's output is the pooled convolution, normalised: its batch norm sees 14x14 maps
    convolution, pool, norm, _ = pooled.layers[0]
    expected = torch.relu(norm(pool(convolution(images))))
    assert torch.equal(maps["activation:conv1"], expected)
    # a weights file saved before pool_first existed records no pool_first: it is built as it was trained
    plain = models.from_config({"model": "fast", "width": 4})
    assert tuple(models.inside_outputs(plain, images)["activation:conv1"].shape) == (3, 4, 28, 28)
    with pytest.raises(RuntimeError, match="Missing key"):
        plain.load_state_dict(pooled.state_dict())
