"""A hostile page and hostile run folders against the real page in Debian's Chromium: another site's page and a
local file cannot start training, and markup in a run folder's name or config is shown as text, never run."""

import json
import shutil

import httpx
import pytest

from digitrec.recognizer import Recognizer
from digitrec.web import create_app

from helpers import LiveServer, launch_chromium

pytestmark = pytest.mark.browser

MARKUP_NAME = "<img src=x onerror=window.pwned=1>"
MARKUP_MODEL = "<img src=x onerror=window.pwned=2>"
START = """url => fetch(url + "/api/runs", {method: "POST", mode: "no-cors",
                                         body: '{"model": "softmax", "steps": 60}'}).then(() => "sent", e => String(e))"""


@pytest.fixture(scope="module")
def old_browser(playwright):
    """Chromium without its newer block on pages reaching loopback servers (Local Network Access), as older
    browsers and other engines are: the server's own checks must refuse what such a browser sends."""
    browser = launch_chromium(
        playwright,
        "--disable-features=LocalNetworkAccessChecks,"
        "BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights",
    )
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory, softmax_run):
    runs_dir = tmp_path_factory.mktemp("runs")
    shutil.copytree(softmax_run.run_dir, runs_dir / MARKUP_NAME)
    shutil.copytree(softmax_run.run_dir, runs_dir / "markup-model")
    config = json.loads((runs_dir / "markup-model" / "config.json").read_text())
    (runs_dir / "markup-model" / "config.json").write_text(json.dumps({**config, "model": MARKUP_MODEL}))
    live = LiveServer(create_app(Recognizer.load(), runs_dir=runs_dir))
    live.runs_dir = runs_dir
    yield live
    live.stop()


def test_markup_in_run_folders_is_shown_as_text_and_never_runs(browser, hostile_runs):
    page = browser.new_page(viewport={"width": 1100, "height": 1300})
    try:
        page.goto(hostile_runs.url)
        page.wait_for_selector("#runs tbody tr", timeout=30_000)
        page.wait_for_timeout(500)  # an image's error handler would have run by now
        assert page.evaluate("window.pwned") is None
        assert page.locator("#runs tbody img").count() == 0
        cells = page.locator("#runs tbody").inner_text()
        assert MARKUP_NAME in cells and MARKUP_MODEL in cells
    finally:
        page.close()


def test_the_pages_policy_stops_inline_script(browser, hostile_runs):
    page = browser.new_page()
    try:
        page.goto(hostile_runs.url)
        page.evaluate("""() => { const script = document.createElement("script");
                                 script.textContent = "window.inline = 1"; document.body.append(script); }""")
        page.wait_for_timeout(200)
        assert page.evaluate("window.inline") is None
    finally:
        page.close()


def test_another_sites_page_and_a_local_file_cannot_start_training(old_browser, hostile_runs, tmp_path):
    context = old_browser.new_context()
    context.route("http://localhost:8199/", lambda route: route.fulfill(body="<p>a page</p>", content_type="text/html"))
    local = tmp_path / "local.html"
    local.write_text("<p>a saved page</p>")
    try:
        page = context.new_page()
        answers = []
        page.on("response", lambda response: response.url.endswith("/api/runs") and answers.append(response.status))
        for url in ("http://localhost:8199/", local.as_uri()):
            page.goto(url)
            assert page.evaluate(START, hostile_runs.url) == "sent"
        page.wait_for_timeout(500)
        assert answers == [403, 403]  # the request reached the server, which refused it (Origin)
        with httpx.Client(base_url=hostile_runs.url, timeout=30) as client:
            assert client.get("/api/training").json()["active"] is None
        assert sorted(path.name for path in hostile_runs.runs_dir.iterdir()) == sorted([MARKUP_NAME, "markup-model"])
        # the server's own page starts one with the same call as JSON: the refusals above are the checks' doing
        own = context.new_page()
        own.goto(hostile_runs.url)
        started = own.evaluate(
            """url => fetch(url + "/api/runs", {method: "POST", headers: {"Content-Type":
            "application/json"}, body: '{"model": "softmax", "steps": 60}'}).then(r => r.json().then(b => [r.status, b]))""",
            hostile_runs.url,
        )
        assert started[0] == 202, started
        own.evaluate("url => fetch(url, {method: 'POST'})", f"{hostile_runs.url}/api/runs/{started[1]['name']}/stop")
    finally:
        context.close()
