"""The Train panel end to end: Debian's Chromium, driven by Playwright, trains a model from the page,
watches its live curve, uses it on the drawing pad, and stops and resumes a run; real children, real MNIST."""

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from digitrec.recognizer import Recognizer
from digitrec.web import create_app
from test_training import LONG_STEPS, one_thread_children  # noqa: F401  (a fixture)

from helpers import SEVEN, LiveServer, draw

pytestmark = pytest.mark.browser


def screenshot(locator, name: str, tmp_path: Path) -> Path:
    """A PNG of `locator` in $DIGITREC_SCREENSHOTS (the README's come from `DIGITREC_SCREENSHOTS=docs`), else
    in the test's temporary folder; reduced to 64 colours, so a committed one stays small."""
    path = Path(os.environ.get("DIGITREC_SCREENSHOTS") or tmp_path) / name
    Image.open(io.BytesIO(locator.screenshot())).convert("RGB").quantize(64).save(path, optimize=True)
    return path


@pytest.fixture(scope="module")
def training_server(tmp_path_factory, one_thread_children):  # noqa: F811
    runs_dir = tmp_path_factory.mktemp("runs")
    live = LiveServer(create_app(Recognizer.load(), runs_dir=runs_dir))
    live.runs_dir = runs_dir
    yield live
    live.stop()


@pytest.fixture
def page(browser, training_server):
    page = browser.new_page(viewport={"width": 1100, "height": 1300})
    page.goto(training_server.url)
    page.wait_for_function("() => document.getElementById('train-recipe').options.length > 0")
    yield page
    page.close()


def points(page) -> int:
    return int(page.locator("#train-chart").get_attribute("data-points"))


def status(page) -> str:
    return page.locator("#train-status").get_attribute("data-status") or ""


def start(page, model: str, steps: int) -> None:
    page.select_option("#train-model", model)
    page.fill("#train-steps", str(steps))
    page.click("#train-start")
    page.wait_for_function("() => document.getElementById('train-status').dataset.status === 'running'", timeout=30_000)


def inked_pixels(page) -> int:
    """Pixels of the chart that are not background: what the curves drew."""
    return page.evaluate("""() => {
        const chart = document.getElementById('train-chart');
        const pixels = chart.getContext('2d').getImageData(0, 0, chart.width, chart.height).data;
        let inked = 0;
        for (let i = 0; i < pixels.length; i += 4) if (pixels[i] < 200 || pixels[i + 2] < 200) inked++;
        return inked;
    }""")


def test_a_run_started_from_the_page_draws_live_curves_finishes_and_becomes_the_pads_model(
    page, training_server, tmp_path
):
    start(page, "softmax", 3000)
    page.wait_for_function("() => Number(document.getElementById('train-chart').dataset.points) >= 2", timeout=60_000)
    seen, drawn = points(page), inked_pixels(page)
    # while it still runs, the curve gains points and ink
    page.wait_for_function(
        f"() => Number(document.getElementById('train-chart').dataset.points) > {seen}", timeout=60_000
    )
    # and says how fast it goes and how long it has left, while running
    page.wait_for_function(
        r"""() => /^Training softmax \(default\): step [\d,]+ of 3,000 · \d+ steps\/s · about \d+ s left$/
                               .test(document.getElementById('train-status').textContent)""",
        timeout=30_000,
    )
    page.wait_for_function(
        "() => document.getElementById('train-status').dataset.status === 'finished'", timeout=180_000
    )
    assert points(page) == 60 and int(page.locator("#train-chart").get_attribute("data-validation-points")) == 10
    assert inked_pixels(page) > drawn
    page.wait_for_selector("#train-result:not([hidden])", timeout=60_000)
    accuracy = page.locator("#train-test-accuracy").text_content()
    assert accuracy.endswith("%") and 88 < float(accuracy[:-1]) < 95
    cells = page.locator("#train-confusion td").all_text_contents()
    assert len(cells) == 100 and sum(int(cell or 0) for cell in cells) == 10_000
    assert page.locator("#train-mistakes img").count() == 12
    assert page.locator("#train-report").get_attribute("href").endswith("/report")
    assert screenshot(page.locator("#train"), "train-panel.png", tmp_path).stat().st_size > 10_000

    before = page.locator("#model-info").text_content()
    name = page.locator("#runs button[data-use]").first.get_attribute("data-use")
    page.locator("#runs button[data-use]").first.click()
    page.wait_for_function(
        f"() => document.getElementById('model-info').textContent.includes('Model: softmax, {accuracy}')"
    )
    assert before != page.locator("#model-info").text_content()
    page.evaluate("""() => { window.predictions = [];
        document.addEventListener('digitrec:prediction', async (event) => {
            const bytes = new Uint8Array(await event.detail.body.arrayBuffer());
            window.predictions.push({ image: Array.from(bytes), result: event.detail.result });
        }); }""")
    page.locator("#pad").scroll_into_view_if_needed()  # the panel's screenshot scrolled the page
    draw(page, SEVEN)
    page.wait_for_function(
        "() => window.predictions.length > 0 && document.getElementById('digit').textContent !== '–'"
    )
    page.wait_for_timeout(500)  # the pad predicts once more after the last stroke
    answered = page.evaluate("window.predictions[window.predictions.length - 1]")
    expected = Recognizer.load(training_server.runs_dir / name).predict(bytes(answered["image"]))
    assert answered["result"]["digit"] == expected.digit and page.locator("#digit").text_content() == str(
        expected.digit
    )
    assert answered["result"]["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    page.click("#clear")
    page.click("[data-bundled=default]")
    page.wait_for_function(f"() => document.getElementById('model-info').textContent === {before!r}")


def test_a_run_is_stopped_resumed_and_reattached_after_a_reload(page):
    start(page, "softmax", LONG_STEPS)
    page.wait_for_function("() => Number(document.getElementById('train-chart').dataset.points) >= 3", timeout=60_000)
    page.click("#train-stop")
    page.wait_for_function("() => document.getElementById('train-status').dataset.status === 'stopped'", timeout=60_000)
    assert page.locator("#train-resume").is_enabled() and page.locator("#train-start").is_enabled()
    stopped_at = points(page)
    assert "Resume continues from its checkpoint" in page.locator("#train-status").text_content()

    page.click("#train-resume")
    page.wait_for_function("() => document.getElementById('train-status').dataset.status === 'running'", timeout=30_000)
    page.wait_for_function(
        f"() => Number(document.getElementById('train-chart').dataset.points) > {stopped_at + 2}", timeout=60_000
    )
    page.reload()  # a reopened page re-attaches to the live run: the log so far, then new points
    page.wait_for_function(
        f"() => Number(document.getElementById('train-chart').dataset.points) > {stopped_at + 2}", timeout=30_000
    )
    assert status(page) == "running" and page.locator("#train-stop").is_enabled()
    page.click("#train-stop")
    page.wait_for_function("() => document.getElementById('train-status').dataset.status === 'stopped'", timeout=60_000)


def test_a_server_that_does_not_offer_training_shows_the_panel_disabled_with_why(browser, tmp_path):
    live = LiveServer(create_app(Recognizer.load(), runs_dir=tmp_path, host="0.0.0.0"))
    try:
        page = browser.new_page()
        page.goto(live.url)
        page.wait_for_selector("#train-off:not([hidden])")
        assert "--allow-training" in page.locator("#train-off").text_content()
        assert page.locator("#train-start").is_disabled() and page.locator("#train-model").is_disabled()
        page.close()
    finally:
        live.stop()
