"""End to end: Chromium, driven by Playwright, writes a number on the Number mode's wide pad with the mouse."""

import numpy as np
import pytest
from PIL import Image

from helpers import draw

pytestmark = pytest.mark.browser


def cell(index: int, strokes):
    """Strokes drawn in 0..1 of one digit's cell, placed as the `index`-th digit of the wide pad."""
    left, width = 0.1 + index * 0.15, 0.1
    return [[(left + x * width, 0.15 + y * 0.7) for x, y in stroke] for stroke in strokes]


FOUR = [[(0.35, 0.0), (0.0, 0.65), (1.0, 0.65)], [(0.72, 0.3), (0.72, 1.0)]]  # two strokes
FIVE = [
    [(0.15, 0.0), (0.1, 0.45), (0.5, 0.38), (0.85, 0.5), (0.9, 0.72), (0.6, 0.95), (0.1, 0.9)],
    [(0.15, 0.0), (0.9, 0.0)],
]  # the body, then the top bar
SEVEN = [[(0.0, 0.0), (1.0, 0.0), (0.35, 1.0)], [(0.25, 0.5), (0.85, 0.5)]]  # with a bar across
TWO = [[(0.05, 0.25), (0.3, 0.0), (0.7, 0.0), (0.95, 0.25), (0.8, 0.5), (0.0, 1.0), (1.0, 1.0)]]


def shown_number(page, expected: str) -> str:
    page.wait_for_function(f"() => document.getElementById('number-text').textContent === '{expected}'", timeout=15_000)
    return page.locator("#number-text").text_content()


def test_a_number_written_with_multi_stroke_digits_is_read_live(page, tmp_path):
    page.click("#number-clear")
    strokes = cell(0, FOUR) + cell(1, FIVE) + cell(2, SEVEN) + cell(3, TWO)
    draw(page, strokes, pad="#number-pad")
    assert shown_number(page, "4572") == "4572"
    digits = page.locator("#number-digits li")
    assert digits.count() == 4 and digits.nth(2).locator(".digit").text_content() == "7"
    assert "sure of the whole" in page.locator("#number-confidence").text_content()
    section = page.locator("section.number")
    section.screenshot(path=str(tmp_path / "number-mode.png"))
    # the overlay shows a box around each digit: coloured pixels where the ink pad has only black and white
    overlay = page.locator("#number-boxes").screenshot(path=str(tmp_path / "boxes.png"))
    pixels = np.asarray(Image.open(tmp_path / "boxes.png").convert("RGB")).reshape(-1, 3).astype(int)
    assert overlay and ((pixels[:, 2] - pixels[:, 0]) > 100).sum() > 200  # blue box edges (or orange when unsure)
    page.click("#number-undo")  # the 2 goes: three digits are left
    assert shown_number(page, "457") == "457"
    page.click("#number-clear")
    page.wait_for_function("() => document.getElementById('number-text').textContent === '–'")


def test_an_uploaded_number_is_read(page, mnist, tmp_path):
    images, labels = mnist.test.images[:, 0].numpy(), mnist.test.labels.numpy()
    row = np.concatenate([images[np.nonzero(labels == d)[0][0]] for d in (1, 9, 8, 4)], axis=1)
    path = tmp_path / "1984.png"
    Image.fromarray((255 - row * 255).astype(np.uint8)).resize((row.shape[1] * 5, row.shape[0] * 5)).save(path)
    page.set_input_files("#number-file", str(path))
    assert shown_number(page, "1984") == "1984"


def test_a_number_written_with_crossing_neighbours_is_read_or_flagged(page):  # noqa: F811
    """Written fast, each digit's cell starting a quarter of a digit inside the one before: the strokes of
    neighbours cross, and the number is still read whole. When the reading says it is unsure, the page
    marks at least one digit orange (the one in doubt)."""
    page.click("#number-clear")
    strokes = [
        [(0.1 + index * 0.075 + x * 0.1, 0.15 + y * 0.7) for x, y in stroke]
        for index, digit in enumerate([FOUR, FIVE, SEVEN, TWO])
        for stroke in digit
    ]
    draw(page, strokes, pad="#number-pad")
    page.wait_for_function("() => /^[0-9]+$/.test(document.getElementById('number-text').textContent)", timeout=15_000)
    text = page.locator("#number-text").text_content()
    unsure = page.locator("#number-unsure").is_visible()
    assert text == "4572", (text, unsure)
    digits = page.locator("#number-digits li")
    assert digits.count() == 4
    assert page.locator("#number-digits li.unsure").count() >= (1 if unsure else 0)
