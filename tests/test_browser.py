"""End to end: Debian's Chromium, driven by Playwright, draws digits on the page and uploads a file."""

import io

import numpy as np
import pytest
from PIL import Image

from helpers import ONE, SEVEN, ZERO, draw, shown_digit

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("name, strokes, digit", [("one", ONE, "1"), ("seven", SEVEN, "7"), ("zero", ZERO, "0")])
def test_drawn_digits_are_recognized_live(page, tmp_path, name, strokes, digit):
    page.click("#clear")
    draw(page, strokes)
    assert shown_digit(page, digit) == digit
    bars = page.locator("#bars li")
    assert bars.count() == 10 and "top" in (bars.nth(int(digit)).get_attribute("class") or "")
    assert page.locator("#seen").get_attribute("src").startswith("data:image/png;base64,")
    page.screenshot(path=str(tmp_path / f"drawn-{name}.png"))
    assert (tmp_path / f"drawn-{name}.png").stat().st_size > 1000


def test_undo_and_clear(page):
    page.click("#clear")
    draw(page, ONE)
    shown_digit(page, "1")
    page.click("#undo")
    page.wait_for_function("() => document.getElementById('digit').textContent === '–'")
    draw(page, SEVEN)
    shown_digit(page, "7")
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.getElementById('digit').textContent === '–'")


def test_uploaded_file_is_recognized(page, mnist, tmp_path):
    digit = (mnist.test.images[2, 0].numpy() * 255).astype(np.uint8)  # a 1
    path = tmp_path / "upload.png"
    Image.fromarray(255 - digit).resize((200, 200)).save(path)
    page.set_input_files("#file", str(path))
    assert shown_digit(page, "1") == "1"
    page.screenshot(path=str(tmp_path / "uploaded.png"))


@pytest.fixture
def offline_page(browser, live_server):
    """A fresh page whose every request to anywhere but the server fails, as on a machine offline."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(live_server.url + "/") else route.abort(),
    )
    yield context.new_page()
    context.close()


@pytest.mark.parametrize("docs, operation", [("/docs", ".opblock-summary-path"), ("/redoc", "[data-section-id]")])
def test_api_docs_show_the_routes_offline(offline_page, live_server, docs, operation):
    offline_page.goto(live_server.url + docs)
    offline_page.wait_for_selector(operation, timeout=15_000)
    assert "/api/predict" in offline_page.locator("body").inner_text()


def test_the_page_loads_without_a_failed_request_and_has_an_icon(offline_page, live_server):
    failures = []
    offline_page.on("response", lambda response: response.status >= 400 and failures.append(response.url))
    offline_page.on("requestfailed", lambda request: failures.append(request.url))
    offline_page.goto(live_server.url)
    offline_page.wait_for_load_state("networkidle")
    icon = offline_page.evaluate("""async () => {
        const link = document.querySelector("link[rel=icon]");
        const response = await fetch(link.href);
        return [response.status, response.headers.get("content-type")];
    }""")
    assert icon == [200, "image/svg+xml"] and failures == []


def test_what_the_model_saw_is_an_empty_square_before_anything_is_drawn(offline_page, live_server):
    offline_page.goto(live_server.url)
    offline_page.wait_for_load_state("networkidle")
    box = offline_page.locator("#seen").bounding_box()
    shot = offline_page.screenshot(
        clip={"x": box["x"] + 4, "y": box["y"] + 4, "width": box["width"] - 8, "height": box["height"] - 8}
    )
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    assert box["width"] == box["height"] == 112 and (pixels == pixels[0, 0]).all()  # no icon, no alt text
