"""Fuzzing: valid images of every accepted format, damaged at random (bits flipped, cut short, bytes
inserted or overwritten), give a digit or an `ImageError` through `Recognizer`, and a 200 or a 4xx through
`/api/predict` on the real server; never another exception, never a 500."""

import numpy as np
import pytest
from hypothesis import given

from digitrec.errors import ImageError
from digitrec.recognizer import Prediction, Recognizer

from helpers import DAMAGE, fuzzing, mutate


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.load()


@fuzzing
@given(**DAMAGE)
def test_damaged_images_give_a_digit_or_an_image_error(recognizer, valid_images, index, mutations):
    try:
        result = recognizer.predict(mutate(valid_images[index], mutations), "fuzzed")
    except ImageError as error:
        assert str(error).startswith("fuzzed: ")
        return
    assert isinstance(result, Prediction) and 0 <= result.digit <= 9 and np.isfinite(result.probabilities).all()


@fuzzing
@given(**DAMAGE)
def test_damaged_images_get_a_200_or_a_4xx_from_the_api(client, valid_images, index, mutations):
    response = client.post(
        "/api/predict", content=mutate(valid_images[index], mutations), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200 or (
        400 <= response.status_code < 500 and isinstance(response.json()["detail"], str)
    )
