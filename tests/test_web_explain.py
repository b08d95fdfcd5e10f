"""`POST /api/explain` against the session's real uvicorn server: the Inside view's data for one image."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from digitrec.preprocess import dilate


def picture(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255


def test_a_drawn_seven_is_explained_with_maps_filters_and_saliency_on_its_ink(client, seven_png):
    response = client.post("/api/explain", content=seven_png, headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    body = response.json()
    assert body["digit"] == 7 and body["target"] == 7 and len(body["probabilities"]) == 10
    assert body["caption"] == "red: ink that pushed the answer towards 7; blue: ink that pushed it away"
    assert [(stage["name"], stage["shape"]) for stage in body["stages"]] == [
        ("conv1", [32, 14, 14]),
        ("conv2", [64, 7, 7]),
        ("conv3", [128, 3, 3]),
    ]  # each block pools first
    assert picture(body["stages"][0]["image"]).shape == (4 * 15 - 1, 8 * 15 - 1, 3)  # 8 x 4 maps, 1 px apart
    assert body["filters"]["shape"] == [32, 5, 5] and body["templates"] is None
    seen = picture(body["input"])[..., 0]
    assert [entry["digit"] for entry in body["saliency"]] == list(range(10))
    overlay = picture(body["saliency"][7]["image"])
    redness = overlay[..., 0] - overlay[..., 1:].mean(-1)
    row, column = np.unravel_index(redness.argmax(), redness.shape)
    assert redness[row, column] > 0.5 and dilate((seen > 0.5).astype(np.float32), 1)[row, column] == 1
    assert overlay[seen == 0].min() > 0.99  # paper stays white: background ink was never blanked


def test_target_picks_the_class_captioned_and_is_checked(client, seven_png):
    url = "data:image/png;base64," + base64.b64encode(seven_png).decode()
    response = client.post("/api/explain?target=1", json={"image": url})
    assert response.status_code == 200
    assert response.json()["target"] == 1 and "towards 1;" in response.json()["caption"]
    assert client.post("/api/explain?target=10", json={"image": url}).status_code == 422
    upload = client.post("/api/explain", files={"image": ("seven.png", seven_png, "image/png")})
    assert upload.status_code == 200 and upload.json()["digit"] == 7


@pytest.mark.parametrize(
    "headers, content, status, fragment",
    [
        ({"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\ngarbage", 422, "upload: not an image"),
        ({"Content-Type": "text/plain"}, b"seven", 415, "unsupported media type"),
    ],
)
def test_bad_images_get_the_predict_errors(client, headers, content, status, fragment):
    response = client.post("/api/explain", content=content, headers=headers)
    assert response.status_code == status and fragment in response.json()["detail"]
    assert client.get("/api/health").json() == {"status": "ok"}


def test_explain_is_documented(client):
    schema = client.get("/openapi.json").json()
    route = schema["paths"]["/api/explain"]["post"]
    assert route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ExplanationOut")
    assert "image/png" in route["requestBody"]["content"] and "422" in route["responses"]
    assert {"stages", "filters", "saliency", "templates"} <= set(
        schema["components"]["schemas"]["ExplanationOut"]["properties"]
    )
