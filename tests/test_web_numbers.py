"""`POST /api/read` against the session's real uvicorn server: a number in, its digits and boxes out."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from digitrec.number_strings import compose
from digitrec.person_style import encode


@pytest.fixture(scope="module")
def year_png(mnist) -> bytes:
    images, labels = mnist.test.images[:, 0].numpy(), mnist.test.labels.numpy()
    digits = [images[np.nonzero(labels == int(d))[0][0]] for d in "2026"]
    row = compose(digits, "close", np.random.default_rng(0))
    image = Image.fromarray((255 - row * 255).round().astype(np.uint8))
    return encode(image.resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC), "PNG")


def test_a_number_is_read_with_a_box_and_confidence_per_digit(client, year_png):
    response = client.post("/api/read", content=year_png, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "2026" and [d["digit"] for d in body["digits"]] == [2, 0, 2, 6]
    assert 0.9 < body["confidence"] <= 1 and body["unsure"] is False  # the whole reading's calibrated confidence
    width, height = Image.open(io.BytesIO(year_png)).size
    lefts = [d["box"][0] for d in body["digits"]]
    assert lefts == sorted(lefts)
    for digit in body["digits"]:
        x, y, w, h = digit["box"]
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height and h > height / 3
        assert len(digit["alternatives"]) == 3 and isinstance(digit["unsure"], bool)


def test_the_body_forms_of_predict_work_for_read(client, year_png):
    multipart = client.post("/api/read", files={"image": ("year.png", year_png, "image/png")})
    url = "data:image/png;base64," + base64.b64encode(year_png).decode()
    data_url = client.post("/api/read", json={"image": url})
    assert multipart.json()["text"] == data_url.json()["text"] == "2026"


def test_a_bad_image_is_422_and_another_media_type_415(client):
    corrupt = client.post("/api/read", content=b"\x89PNG\r\n\x1a\n not really", headers={"Content-Type": "image/png"})
    assert corrupt.status_code == 422 and "upload" in corrupt.json()["detail"]
    blank = client.post(
        "/api/read", content=encode(Image.new("L", (840, 280), 255), "PNG"), headers={"Content-Type": "image/png"}
    )
    assert blank.status_code == 422 and "no digit" in blank.json()["detail"]
    text = client.post("/api/read", content=b"2026", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and "unsupported media type" in text.json()["detail"]
    assert client.get("/api/health").json() == {"status": "ok"}
