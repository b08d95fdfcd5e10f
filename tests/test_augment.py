"""Person-style training variation (augment.py) on real MNIST training digits, as training draws it."""

import dataclasses

import pytest
import torch

from digitrec import augment, data, models, train
from digitrec.config import TrainConfig
from digitrec.errors import ConfigError
from digitrec.tasks import DIGITS

PERSON = dict(augment_low_resolution=0.15, augment_blur=0.15, augment_lighting=0.2, augment_paper=0.15)


@pytest.fixture(scope="module")
def images(mnist) -> torch.Tensor:
    return mnist.train.images[:64]


def only(name: str) -> TrainConfig:
    """A config that applies the one variation `name` to every image."""
    return TrainConfig(model="fast", **{name: 1.0})


def varied(images, config, seed: int) -> torch.Tensor:
    draws = DIGITS.augmentation_draws(torch.Generator().manual_seed(seed), len(images), config)
    return DIGITS.augment(images, draws, config)


@pytest.mark.parametrize("name", augment.VARIATIONS)
def test_each_variation_keeps_the_shape_and_range_and_changes_the_digits(images, name):
    result = varied(images, only(name), 0)
    assert result.shape == images.shape and result.dtype == images.dtype
    assert result.min() >= 0 and torch.allclose(result.amax((1, 2, 3)), torch.ones(len(images)))
    # (a printed line's band may miss a digit's ink, and its noise stay under the floor)
    assert ((result - images).abs().amax((1, 2, 3)) > 0.01).float().mean() > 0.6
    assert (result - images).abs().mean() > 0.002


@pytest.mark.parametrize("name", augment.VARIATIONS)
def test_each_variation_is_the_same_for_the_same_seed_and_differs_for_another(images, name):
    assert torch.equal(varied(images, only(name), 1), varied(images, only(name), 1))
    assert not torch.equal(varied(images, only(name), 1), varied(images, only(name), 2))


def test_shares_of_zero_leave_the_batch_as_it_is_and_each_share_is_the_share_of_images_varied(mnist):
    plain = TrainConfig(model="fast")
    assert not plain.uses_person_style and DIGITS.augmentation_draws(torch.Generator(), 8, plain) is None
    batch = mnist.train.images[:2000]
    config = dataclasses.replace(plain, augment_blur=0.25)
    changed = (varied(batch, config, 0) - batch).abs().amax((1, 2, 3)) > 0
    assert 0.22 < changed.float().mean() < 0.28


def test_the_draws_hold_one_column_per_random_number_the_variations_take():
    config = TrainConfig(model="fast", augment_stroke=1.0, augment_degrees=10, **PERSON)
    draws = DIGITS.augmentation_draws(torch.Generator().manual_seed(0), 5, config)
    assert draws.shape == (5, 1 + 4 + 2 + 2 + 4 + 6 + 28 * 28)


def test_a_low_resolution_digit_is_softer_than_the_original(images):
    def edges(batch):
        return (batch[..., 1:] - batch[..., :-1]).abs().mean()

    assert edges(varied(images, only("augment_low_resolution"), 0)) < 0.8 * edges(images)


def test_the_person_recipe_is_full_at_width_48_with_the_four_variations():
    recipes = models.spec("fast").recipes
    person, full = recipes["person"], recipes["full"]
    assert {key: value for key, value in person.items() if key not in full} == PERSON
    assert person["width"] == 48 and all(person[key] == value for key, value in full.items() if key != "width")


def test_the_elastic_draws_come_after_the_affine_ones_and_before_the_person_style_ones(images):
    config = TrainConfig(
        model="fast", augment_stroke=1.0, augment_degrees=10, augment_elastic=2.0, augment_lighting=1.0
    )
    draws = DIGITS.augmentation_draws(torch.Generator().manual_seed(3), len(images), config)
    geometric = 1 + 4 + 2 * data.ELASTIC_GRID**2
    assert draws.shape == (len(images), geometric + augment.COLUMNS["augment_lighting"])
    shaped = data.augment(images, draws[:, :geometric], 1.0, 10, 0.0, 0.0, 2.0)
    assert torch.equal(
        DIGITS.augment(images, draws, config), augment.person_style(shaped, draws[:, geometric:], config)
    )


def test_a_number_reader_refuses_the_digit_variations():
    with pytest.raises(ConfigError, match="--augment-blur apply to digit models only"):
        train.resolve_config("reader", augment_blur=0.5)


def test_the_geometric_augmentation_is_unchanged_by_the_person_columns_after_it(images):
    """The stroke and affine draws come first, so `full` runs draw exactly what they drew before."""
    full = TrainConfig(model="fast", augment_stroke=1.0, augment_degrees=10)
    with_person = dataclasses.replace(full, augment_lighting=1.0)
    generator = torch.Generator().manual_seed(3)
    geometric = DIGITS.augmentation_draws(torch.Generator().manual_seed(3), len(images), full)
    assert torch.equal(DIGITS.augmentation_draws(generator, len(images), with_person)[:, :5], geometric)
    assert torch.equal(DIGITS.augment(images, geometric, full), data.augment(images, geometric, 1.0, 10, 0.0, 0.0))
