"""Shared fixtures: the real MNIST from data/mnist/, one real softmax run trained once per session, a valid
digit image in every accepted format, one real uvicorn server of the bundled model per session
(`live_server`) with a client of it, and Chromium (helpers.py holds the shared plain functions).

Markers (pyproject.toml): `browser` (Chromium through Playwright), `slow`, `distributed`; e.g. a quick
subset is `pytest -m "not browser and not slow and not distributed"`.
"""

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from digitrec import data, train
from digitrec.person_style import encode

from helpers import LiveServer, launch_chromium

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
        encode(digit, "PNG"),
        encode(rgba, "PNG"),
        encode(digit.convert("P"), "PNG", transparency=255),
        encode(digit.convert("I;16"), "PNG"),
        encode(digit, "JPEG", quality=85),
        encode(digit.convert("RGB"), "JPEG"),
        encode(digit, "BMP"),
        encode(digit.convert("RGB"), "BMP"),
        encode(digit.convert("P"), "GIF"),
        encode(digit, "WEBP"),
        encode(rgba, "WEBP", lossless=True),
        encode(digit, "TIFF"),
        encode(digit, "TIFF", compression="tiff_lzw"),
        encode(float_tiff, "TIFF"),
        encode(digit.convert("CMYK"), "TIFF"),
    ]


@pytest.fixture(scope="session")
def live_server():
    """The app of the bundled model, served once for the whole session by uvicorn on 127.0.0.1."""
    from digitrec.recognizer import Recognizer
    from digitrec.web import create_app

    server = LiveServer(create_app(Recognizer.load()))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server.url, timeout=30) as session:
        yield session


@pytest.fixture(scope="session")
def seven_png(mnist) -> bytes:
    """The first MNIST test digit, a 7, as a 280x280 PNG: dark ink on white, as people write."""
    digit = (mnist.test.images[0, 0].numpy() * 255).astype(np.uint8)
    return encode(Image.fromarray(255 - digit).resize((280, 280)), "PNG")


@pytest.fixture(scope="session")
def playwright():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    with playwright_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright):
    """Debian's Chromium, driven by Playwright."""
    browser = launch_chromium(playwright)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def page(browser, live_server):
    """The drawing page of the session's server, in one tab per module."""
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    page.goto(live_server.url)
    yield page
    page.close()
