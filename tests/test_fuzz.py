"""Fuzzing: valid images of every accepted format, damaged at random (bits flipped, cut short, bytes
inserted or overwritten), give a digit or an `ImageError` through `Recognizer`, and a 200 or a 4xx through
`/api/predict` on the real server; never another exception, never a 500."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from person_style import encode
from PIL import Image

from digitrec.errors import ImageError
from digitrec.recognizer import Prediction, Recognizer


@pytest.fixture(scope="module")
def valid_images(mnist) -> list[bytes]:
    """A digit in each accepted format, in several of the modes those formats hold."""
    digit = Image.fromarray(255 - (mnist.test.images[0, 0].numpy() * 255).astype(np.uint8)).resize((56, 56))
    float_tiff = Image.fromarray(np.asarray(digit, dtype=np.float32) / 255, "F")
    rgba = digit.convert("RGBA")
    rgba.putalpha(Image.eval(digit, lambda v: 255 - v))
    return [
        encode(digit, "PNG"), encode(rgba, "PNG"), encode(digit.convert("P"), "PNG", transparency=255),
        encode(digit.convert("I;16"), "PNG"), encode(digit, "JPEG", quality=85), encode(digit.convert("RGB"), "JPEG"),
        encode(digit, "BMP"), encode(digit.convert("RGB"), "BMP"), encode(digit.convert("P"), "GIF"),
        encode(digit, "WEBP"), encode(rgba, "WEBP", lossless=True), encode(digit, "TIFF"),
        encode(digit, "TIFF", compression="tiff_lzw"), encode(float_tiff, "TIFF"), encode(digit.convert("CMYK"), "TIFF"),
    ]


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
)


def mutate(data: bytes, mutations) -> bytes:
    damaged = bytearray(data)
    for kind, position, argument in mutations:
        at = position % max(len(damaged), 1)
        if kind == "flip" and damaged:
            damaged[at] ^= 1 << argument
        elif kind == "cut":
            del damaged[at:]
        elif kind == "insert":
            damaged[at:at] = argument
        elif kind == "overwrite":
            damaged[at:at + len(argument)] = argument
    return bytes(damaged)


fuzzing = settings(max_examples=150, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DAMAGE = dict(index=st.integers(0, 14), mutations=st.lists(MUTATION, min_size=1, max_size=4))


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
    response = client.post("/api/predict", content=mutate(valid_images[index], mutations),
                           headers={"Content-Type": "image/png"})
    assert response.status_code == 200 or (400 <= response.status_code < 500 and isinstance(response.json()["detail"], str))
