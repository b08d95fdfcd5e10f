"""Drawing on the page with the mouse, for the browser tests (Chromium driven by Playwright)."""

import math
import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(playwright, *flags: str):
    """Debian's Chromium, headless, with nothing that reaches the network by itself."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run", *flags],
    )


def draw(page, strokes, pad="#pad"):
    """Each stroke is a list of (x, y) points in 0..1 of the canvas, drawn with the mouse."""
    box = page.locator(pad).bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=4)
        page.mouse.up()


def shown_digit(page, expected: str) -> str:
    page.wait_for_function(f"() => document.getElementById('digit').textContent === '{expected}'", timeout=10_000)
    return page.locator("#digit").text_content()


ZERO = [[(0.5 + 0.22 * math.sin(t / 20 * 2 * math.pi), 0.5 - 0.32 * math.cos(t / 20 * 2 * math.pi)) for t in range(21)]]
ONE = [[(0.48, 0.18), (0.5, 0.5), (0.52, 0.82)]]
SEVEN = [[(0.28, 0.22), (0.72, 0.22), (0.45, 0.82)]]
