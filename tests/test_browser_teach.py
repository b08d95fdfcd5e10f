"""Teaching it your handwriting end to end: Debian's Chromium, driven by Playwright, draws a digit, says what
it was, learns from the corrections through the Train panel, uses the personal model and sees the corrected
answer for a similar drawing; and the number pad's "Wrong? It was" says why it cannot store a miscount."""

import json

import pytest

from digitrec.recognizer import Recognizer
from digitrec.web import create_app
from test_training import one_thread_children  # noqa: F401  (a fixture)

from helpers import SEVEN, LiveServer, draw, shown_digit

pytestmark = [pytest.mark.browser, pytest.mark.slow]
LEARN_STEPS = 40  # the page asks for the recipe's 300; this test asks for fewer (same code path, sooner done)


@pytest.fixture(scope="module")
def teach_server(tmp_path_factory, one_thread_children):  # noqa: F811
    folder = tmp_path_factory.mktemp("teach-page")
    live = LiveServer(create_app(Recognizer.load(), runs_dir=folder / "runs", corrections_db=folder / "c.sqlite3"))
    yield live
    live.stop()


@pytest.fixture
def page(browser, teach_server):
    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    page.goto(teach_server.url)
    page.wait_for_function("() => document.getElementById('train-recipe').options.length > 0")
    yield page
    page.close()


def shifted(strokes, dx: float, dy: float = 0.0):
    return [[(x + dx, y + dy) for x, y in stroke] for stroke in strokes]


def correct_as(page, strokes, label: str) -> None:
    page.click("#clear")
    draw(page, strokes)
    shown_digit(page, "7")
    page.locator(f"#teach-digit-buttons button[data-label='{label}']").click()
    page.wait_for_function("() => document.getElementById('message').textContent.startsWith('Stored')")


def test_a_drawn_digit_is_corrected_learned_used_and_read_as_corrected(page):
    for dx in (0.0, 0.04):  # a person whose 1s look like this 7 corrects it twice
        correct_as(page, shifted(SEVEN, dx), "1")
    page.wait_for_function("() => document.querySelectorAll('#teach-list li').length === 2")
    assert [item.get_attribute("data-label") for item in page.locator("#teach-list li").all()] == ["1", "1"]

    def fewer_steps(route):  # the button posts {}; ask for fewer steps than the recipe's
        route.continue_(post_data=json.dumps({"steps": LEARN_STEPS}))

    page.route("**/api/corrections/learn", fewer_steps)
    page.click("#teach-learn")
    page.wait_for_function("() => document.getElementById('train-status').dataset.status === 'running'", timeout=60_000)
    page.wait_for_function("() => !document.getElementById('teach-use').hidden", timeout=400_000)
    assert int(page.locator("#train-chart").get_attribute("data-points")) >= 1  # its live curve, in the Train panel
    assert "fast (personal)" in page.locator("#train-status").text_content()
    page.click("#teach-use")
    page.wait_for_function("() => document.getElementById('teach-status').textContent.includes('your personal model')")
    page.wait_for_function("() => document.getElementById('model-info').textContent.includes('Model: fast')")

    page.click("#clear")
    draw(page, shifted(SEVEN, 0.02, 0.02))  # a similar drawing, not one of the two
    assert shown_digit(page, "1") == "1"

    page.locator("#teach-list li button").first.click()  # remove one
    page.wait_for_function("() => document.querySelectorAll('#teach-list li').length === 1")
    page.click("[data-bundled='default']")
    page.wait_for_function("() => document.getElementById('digit').textContent === '7'")


def test_the_number_pad_stores_nothing_when_the_digit_counts_differ_and_says_why(page):
    before = page.locator("#teach-list li").count()
    page.click("#number-clear")
    draw(page, [[(x / 3, y) for x, y in stroke] for stroke in SEVEN], pad="#number-pad")
    draw(page, [[(x / 3 + 0.6, y) for x, y in stroke] for stroke in SEVEN], pad="#number-pad")
    page.wait_for_function("() => document.getElementById('number-text').textContent.length === 2", timeout=20_000)
    page.fill("#teach-number-text", "123")
    page.click("#teach-number-store")
    message = page.locator("#number-message")
    page.wait_for_function("() => document.getElementById('number-message').textContent.includes('counts must match')")
    assert "It read 2 digits" in message.text_content()
    page.fill("#teach-number-text", "71")
    page.click("#teach-number-store")
    page.wait_for_function("() => document.getElementById('number-message').textContent.startsWith('Stored 2 digits')")
    page.wait_for_function(f"() => document.querySelectorAll('#teach-list li').length === {before + 2}")
