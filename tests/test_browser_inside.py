"""End to end: Chromium draws a digit and reads the Inside view's canvases back, pixel by pixel.

`DIGITREC_SCREENSHOTS=docs` saves the panel's screenshot for the README (default: the test's temporary
directory)."""

import os
from pathlib import Path

import numpy as np
import pytest

from helpers import SEVEN, draw, shown_digit

pytestmark = pytest.mark.browser

READ_CANVAS = """id => {
  const canvas = document.getElementById(id);
  return Array.from(canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data);
}"""


def canvas_pixels(page, canvas_id: str) -> np.ndarray:
    return np.array(page.evaluate(READ_CANVAS, canvas_id), dtype=np.float64).reshape(28, 28, 4)[..., :3] / 255


def test_inside_view_shows_feature_maps_and_saliency_on_the_drawn_ink(page, tmp_path):
    page.click("#clear")
    page.wait_for_function("() => document.getElementById('inside').dataset.state === 'empty'")
    assert page.locator("#inside-body").is_hidden()
    draw(page, SEVEN)
    shown_digit(page, "7")
    page.wait_for_function(
        "() => document.getElementById('inside').dataset.state === 'ready'"
        " && document.getElementById('inside').dataset.saliencyDigit === '7'",
        timeout=10_000,
    )
    captions = page.locator("#inside-stages figcaption").all_text_contents()
    assert captions == [
        "conv1: 32 feature maps of 14×14",
        "conv2: 64 feature maps of 7×7",
        "conv3: 128 feature maps of 3×3",
    ]
    widths = page.eval_on_selector_all(
        "#inside-stages img, #inside-filters img", "images => images.map(i => i.naturalWidth)"
    )
    assert widths == [119, 127, 63, 47]  # the grids of 8 / 16 / 16 maps a row and of the 32 filters, all loaded
    assert (
        page.locator("#inside-caption").text_content()
        == "red: ink that pushed the answer towards 7; blue: ink that pushed it away"
    )

    seen = canvas_pixels(page, "inside-input")[..., 0]  # white ink on black, as the model saw it
    overlay = canvas_pixels(page, "inside-saliency")
    redness = overlay[..., 0] - overlay[..., 1:].mean(-1)
    row, column = np.unravel_index(redness.argmax(), redness.shape)
    assert redness[row, column] > 0.5  # a strong red region exists ...
    assert seen[max(row - 1, 0) : row + 2, max(column - 1, 0) : column + 2].max() > 0.5  # ... and lies on the ink
    assert overlay[seen == 0].min() > 0.95  # the paper stays white

    page.hover("#inside-classes button[data-digit='1']")
    page.wait_for_function("() => document.getElementById('inside').dataset.saliencyDigit === '1'")
    assert "towards 1;" in page.locator("#inside-caption").text_content()
    assert not np.array_equal(canvas_pixels(page, "inside-saliency"), overlay)
    page.click("#inside-classes button[data-digit='3']")
    page.mouse.move(0, 0)
    page.wait_for_function("() => document.getElementById('inside').dataset.saliencyDigit === '3'")

    screenshots = Path(os.environ.get("DIGITREC_SCREENSHOTS", tmp_path))
    page.click("#inside-classes button[data-digit='3']")  # back to following the answer
    page.mouse.move(0, 0)
    page.wait_for_function("() => document.getElementById('inside').dataset.saliencyDigit === '7'")
    page.locator("#inside").screenshot(path=str(screenshots / "inside.png"))
    assert (screenshots / "inside.png").stat().st_size > 10_000

    page.keyboard.press("Escape")
    page.wait_for_function("() => document.getElementById('inside').dataset.state === 'empty'")
    assert page.locator("#inside-body").is_hidden()
