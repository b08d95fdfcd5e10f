"""Shared fixtures: the real MNIST from data/mnist/, one real softmax run trained once per session, and a
valid digit image in every accepted format (helpers.py holds the shared plain functions)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digitrec import data, train
from digitrec.person_style import encode

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


@pytest.fixture(scope="session")
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
