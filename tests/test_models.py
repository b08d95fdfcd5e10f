import pytest
import torch
import torch.nn.functional as F

from digitrec import models, train
from digitrec.errors import ConfigError


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
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
