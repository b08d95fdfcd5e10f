"""`/api/corrections` over a real server and a real SQLite file: store, list, remove, learn; every bad input a 4xx
(or a 503 that says the database cannot be used), nothing stored lost."""

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from digitrec import corrections
from digitrec.recognizer import Recognizer
from digitrec.web import create_app
from test_training import one_thread_children  # noqa: F401  (a fixture)

from helpers import LiveServer


def data_url(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def person_digit(pixels: np.ndarray) -> Image.Image:
    """An MNIST digit as a drawing: dark ink on white, 280 px."""
    return Image.fromarray(255 - (pixels * 255).astype(np.uint8)).resize((280, 280), Image.Resampling.BICUBIC)


def person_number(digits: list[np.ndarray]) -> Image.Image:
    """MNIST digits side by side with gaps, as the number pad draws them: 840x280, dark on white."""
    canvas = Image.new("L", (840, 280), 255)
    for place, pixels in enumerate(digits):
        canvas.paste(person_digit(pixels).resize((150, 150)), (40 + 190 * place, 65))
    return canvas


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_thread_children):  # noqa: F811
    folder = tmp_path_factory.mktemp("teach")
    live = LiveServer(create_app(Recognizer.load(), runs_dir=folder / "runs", corrections_db=folder / "c.sqlite3"))
    live.database = folder / "c.sqlite3"
    yield live
    live.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as session:
        for correction in session.get("/api/corrections").json()["corrections"]:  # each test starts empty
            session.delete(f"/api/corrections/{correction['id']}")
        yield session


@pytest.fixture(scope="module")
def seven(mnist) -> str:
    return data_url(person_digit(mnist.test.images[0, 0].numpy()))  # test digit 0 is a 7


def test_a_correction_is_stored_listed_and_removed(client, seven):
    stored = client.post("/api/corrections", json={"image": seven, "label": 1})
    assert stored.status_code == 201, stored.text
    [correction] = stored.json()
    assert (correction["label"], correction["answer"], correction["source"], correction["model"]) == (
        1,
        7,
        "page",
        "fast",
    )
    assert correction["input"].startswith("data:image/png;base64,") and correction["box"] is None
    listed = client.get("/api/corrections").json()
    assert listed["count"] == 1 and listed["limit"] == 10_000 and listed["corrections"] == [correction]
    assert client.delete(f"/api/corrections/{correction['id']}").status_code == 204
    missing = client.delete(f"/api/corrections/{correction['id']}")
    assert missing.status_code == 404 and f"no correction with id {correction['id']}" in missing.json()["detail"]
    assert client.get("/api/corrections").json()["count"] == 0


@pytest.mark.parametrize(
    "body, problem",
    [
        ({"label": 10}, "label: Input should be less than or equal to 9"),
        ({"label": -1}, "label: Input should be greater than or equal to 0"),
        ({"label": "7"}, "label: Input should be a valid integer"),
        ({"label": True}, "label: Input should be a valid integer"),
        ({"label": 7, "text": "7"}, 'give exactly one of "label"'),
        ({}, 'give exactly one of "label"'),
        ({"label": 7, "extra": 1}, "extra: Extra inputs are not permitted"),
        ({"text": "20a6"}, "text: String should match pattern"),
        ({"text": "1234567890123"}, "text: String should have at most 12 characters"),
        ({"label": 7, "image": "data:image/png;base64,@@@"}, "the image is not valid base64"),
        ({"label": 7, "image": data_url(Image.new("L", (280, 280), 255))}, "no digit found"),
    ],
)
def test_bad_corrections_are_a_422_and_store_nothing(client, seven, body, problem):
    response = client.post("/api/corrections", json={"image": seven, **body})
    assert response.status_code == 422 and problem in response.json()["detail"], response.text
    assert client.get("/api/corrections").json()["count"] == 0


@pytest.mark.parametrize(
    "path", ["/api/corrections/0", "/api/corrections/abc", "/api/corrections/99999999999999999999"]
)
def test_bad_ids_are_a_422(client, path):
    assert client.delete(path).status_code == 422


def test_a_number_is_stored_digit_by_digit_with_boxes_only_when_the_counts_match(client, mnist):
    labels = mnist.test.labels.numpy()
    chosen = [int(np.flatnonzero(labels == digit)[0]) for digit in (2, 0, 2, 6)]
    number = data_url(person_number([mnist.test.images[i, 0].numpy() for i in chosen]))
    wrong_count = client.post("/api/corrections", json={"image": number, "text": "206"})
    assert wrong_count.status_code == 422
    assert (
        "4 digit(s) were read (2026) but '206' has 3: each digit is kept with its box" in wrong_count.json()["detail"]
    )
    assert client.get("/api/corrections").json()["count"] == 0
    stored = client.post("/api/corrections", json={"image": number, "text": "2028"})
    assert stored.status_code == 201, stored.text
    digits = stored.json()
    assert [d["label"] for d in digits] == [2, 0, 2, 8] and [d["answer"] for d in digits] == [2, 0, 2, 6]
    lefts = [d["box"][0] for d in digits]
    assert lefts == sorted(lefts) and all(d["box"][2] > 0 and d["box"][3] > 0 for d in digits)


def test_two_browsers_adding_at_once_lose_nothing(client, seven, server):
    def add(label: int) -> int:
        with httpx.Client(base_url=server.url, timeout=120) as own:
            return own.post("/api/corrections", json={"image": seven, "label": label}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(add, [i % 10 for i in range(16)]))
    assert codes == [201] * 16
    listed = client.get("/api/corrections").json()["corrections"]
    assert sorted(c["label"] for c in listed) == sorted(i % 10 for i in range(16))
    assert len({c["id"] for c in listed}) == 16


def test_the_10001st_correction_is_a_409_and_the_rest_are_kept(client, seven, monkeypatch):
    monkeypatch.setattr(corrections, "MAX_CORRECTIONS", 2)  # the same check as at 10,000, without 10,000 requests
    assert [client.post("/api/corrections", json={"image": seven, "label": 7}).status_code for _ in range(2)] == [
        201,
        201,
    ]
    full = client.post("/api/corrections", json={"image": seven, "label": 7})
    assert full.status_code == 409 and "at most 2 are kept; remove some first" in full.json()["detail"]
    assert client.get("/api/corrections").json()["count"] == 2


def test_an_unusable_database_is_a_503_that_says_why(tmp_path, seven):
    (tmp_path / "db").mkdir()
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"garbage" * 1000)
    for path, why in ((tmp_path / "db", "is a folder"), (damaged, "is damaged")):
        live = LiveServer(create_app(Recognizer.load(), corrections_db=path))
        try:
            with httpx.Client(base_url=live.url, timeout=60) as session:
                for response in (
                    session.get("/api/corrections"),
                    session.post("/api/corrections", json={"image": seven, "label": 1}),
                ):
                    assert response.status_code == 503 and why in response.json()["detail"]
        finally:
            live.stop()
    assert damaged.read_bytes() == b"garbage" * 1000


def test_learning_is_refused_without_corrections_and_off_loopback(client, tmp_path):
    nothing = client.post("/api/corrections/learn")
    assert nothing.status_code == 409 and "no corrections to learn from yet" in nothing.json()["detail"]
    assert client.post("/api/corrections/learn", json={"steps": 0}).status_code == 422
    exposed = LiveServer(
        create_app(Recognizer.load(), runs_dir=tmp_path / "runs", host="0.0.0.0", corrections_db=tmp_path / "c.sqlite3")
    )
    try:
        refused = httpx.post(f"{exposed.url}/api/corrections/learn", timeout=60)
        assert refused.status_code == 403 and "Training is off on a server others can reach" in refused.json()["detail"]
    finally:
        exposed.stop()


@pytest.mark.slow
def test_learning_runs_as_a_train_panel_run_whose_personal_model_can_be_used(client, mnist):
    pixels = mnist.test.images[0, 0].numpy()  # a 7, taught as a 1: unmistakably learned, or not
    drawing = data_url(person_digit(pixels))
    for shift in (0, 1, 2):
        shifted = data_url(person_digit(np.roll(pixels, shift, axis=1)))
        assert client.post("/api/corrections", json={"image": shifted, "label": 1}).status_code == 201
    started = client.post("/api/corrections/learn", json={"steps": 40})
    assert started.status_code == 202, started.text
    name = started.json()["name"]
    assert name.startswith("personal-") and started.json()["status"] == "running"
    assert client.post("/api/corrections/learn").status_code == 409  # one run at a time
    deadline = time.monotonic() + 400
    while (run := client.get(f"/api/runs/{name}").json())["status"] in ("running", "stopping"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert run["status"] == "finished" and (run["model"], run["recipe"]) == ("fast", "personal"), run
    assert client.put("/api/model", json={"run": name}).status_code == 200
    try:
        answer = client.post(
            "/api/predict", content=base64.b64decode(drawing.split(",")[1]), headers={"Content-Type": "image/png"}
        ).json()
        assert answer["digit"] == 1
    finally:
        client.put("/api/model", json={"bundled": "default"})
