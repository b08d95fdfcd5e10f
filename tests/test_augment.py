"""Person-style training variation (augment.py) on real MNIST training digits."""

import dataclasses

import pytest
import torch

from digitrec import augment, models, train
from digitrec.config import TrainConfig
from digitrec.errors import ConfigError

VARIATIONS = [augment.low_resolution, augment.blur, augment.lighting, augment.paper]


@pytest.fixture(scope="module")
def images(mnist) -> torch.Tensor:
    return mnist.train.images[:64]


@pytest.mark.parametrize("vary", VARIATIONS)
def test_each_variation_keeps_the_shape_and_range_and_changes_the_digits(images, vary):
    varied = vary(images, torch.Generator().manual_seed(0))
    assert varied.shape == images.shape and varied.dtype == images.dtype
    assert varied.min() >= 0 and torch.allclose(varied.amax((1, 2, 3)), torch.ones(len(images)))
    assert (varied - images).abs().mean() > 0.002


@pytest.mark.parametrize("vary", VARIATIONS)
def test_each_variation_is_the_same_for_the_same_seed_and_differs_for_another(images, vary):
    first, again = (vary(images, torch.Generator().manual_seed(1)) for _ in range(2))
    other = vary(images, torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_shares_of_zero_leave_the_batch_as_it_is_and_a_share_of_one_varies_every_image(images):
    config = TrainConfig(model="fast")
    assert not config.uses_person_style
    assert torch.equal(augment.person_style(images, torch.Generator().manual_seed(0), config), images)
    everything = dataclasses.replace(config, augment_low_resolution=1.0)
    varied = augment.person_style(images, torch.Generator().manual_seed(0), everything)
    assert ((varied - images).abs().amax((1, 2, 3)) > 0).all()


def test_a_low_resolution_digit_is_softer_than_the_original(images):
    varied = augment.low_resolution(images, torch.Generator().manual_seed(0))
    def edges(batch):
        return (batch[..., 1:] - batch[..., :-1]).abs().mean()
    assert edges(varied) < 0.8 * edges(images)


def test_the_person_recipe_is_full_with_the_four_variations():
    recipes = models.spec("fast").recipes
    person, full = recipes["person"], recipes["full"]
    assert {key: value for key, value in person.items() if key not in full} == {
        "augment_low_resolution": 0.15, "augment_blur": 0.15, "augment_lighting": 0.2, "augment_paper": 0.15}
    assert all(person[key] == value for key, value in full.items())


def test_a_number_reader_refuses_the_digit_variations():
    with pytest.raises(ConfigError, match="--augment-blur apply to digit models only"):
        train.resolve_config("reader", augment_blur=0.5)
