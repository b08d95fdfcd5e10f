"""The JSON API against a real uvicorn server on a free port of 127.0.0.1."""

import base64
import io
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from digitrec.person_style import encode
from digitrec.recognizer import Recognizer
from digitrec.runtime import Runtime
from digitrec.tasks import DIGITS
from digitrec.web import create_app

from helpers import LiveServer, children


def assert_healthy(client):
    assert client.get("/api/health").json() == {"status": "ok"}


def test_raw_png_body_is_recognized(client, seven_png):
    response = client.post("/api/predict", content=seven_png, headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    body = response.json()
    assert body["digit"] == 7 and len(body["probabilities"]) == 10 and body["preprocessed"] is None
    assert isinstance(body["unsure"], bool) and body["confidence"] == max(body["probabilities"])


def test_multipart_upload_is_recognized(client, seven_png):
    response = client.post("/api/predict", files={"image": ("seven.png", seven_png, "image/png")})
    assert response.status_code == 200 and response.json()["digit"] == 7


def test_json_data_url_is_recognized_and_the_preprocessed_view_returned(client, seven_png):
    url = "data:image/png;base64," + base64.b64encode(seven_png).decode()
    response = client.post("/api/predict?preprocessed=true", json={"image": url})
    body = response.json()
    assert response.status_code == 200 and body["digit"] == 7
    seen = Image.open(io.BytesIO(base64.b64decode(body["preprocessed"].split(",", 1)[1])))
    assert seen.size == (28, 28)


def test_jpeg_body_is_recognized(client, mnist):
    digit = (mnist.test.images[1, 0].numpy() * 255).astype(np.uint8)  # a 2
    jpeg = encode(Image.fromarray(255 - digit).resize((200, 200)), "JPEG", quality=80)
    response = client.post("/api/predict", content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert response.json()["digit"] == 2


def test_model_endpoint_describes_the_bundled_model_with_its_recorded_figures(client):
    from digitrec import confidence
    from digitrec.files import BUNDLED_MODEL

    info = client.get("/api/model").json()
    assert info == {
        "name": "fast",
        "recipe": "full",
        "parameters": 104_938,
        "test_accuracy": 0.9971,
        "runtime": "onnxruntime",
        "unsure_below": confidence.load(BUNDLED_MODEL).unsure_below,
    }


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything is local
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize(
    "headers, content, status, fragment",
    [
        ({"Content-Type": "image/png"}, b"", 422, "empty"),
        ({"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\ngarbage", 422, "upload: not an image"),
        ({"Content-Type": "text/plain"}, b"seven", 415, "unsupported media type"),
        ({}, b"seven", 415, "unsupported media type"),
        ({"Content-Type": "application/json"}, b"{not json", 422, "not valid JSON"),
        ({"Content-Type": "application/json"}, b"[1, 2]", 422, "JSON object"),
        ({"Content-Type": "application/json"}, b'{"image": "data:image/png;base64,@@@"}', 422, "base64"),
        ({"Content-Type": "application/json"}, b'{"picture": 1}', 422, "expected"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\nbroken", 422, "form"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_stays_healthy(client, headers, content, status, fragment):
    response = client.post("/api/predict", content=content, headers=headers)
    assert response.status_code == status
    assert fragment in response.json()["detail"]
    assert_healthy(client)


def test_truncated_png_is_422(client, seven_png):
    response = client.post(
        "/api/predict", content=seven_png[: len(seven_png) // 2], headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 422 and "truncated" in response.json()["detail"]


def test_blank_canvas_is_no_digit(client):
    blank = encode(Image.new("L", (280, 280), 255), "PNG")
    response = client.post("/api/predict", content=blank, headers={"Content-Type": "image/png"})
    assert response.status_code == 422 and "no digit found" in response.json()["detail"]


def test_decompression_bomb_is_refused(client):
    bomb = encode(Image.new("1", (6000, 6000)), "PNG")
    response = client.post("/api/predict", content=bomb, headers={"Content-Type": "image/png"})
    assert response.status_code == 422 and "decompression bomb" in response.json()["detail"]
    assert_healthy(client)


def test_oversized_body_is_413(client):
    response = client.post("/api/predict", content=b"\0" * (2 * 1024 * 1024 + 1), headers={"Content-Type": "image/png"})
    assert response.status_code == 413
    assert_healthy(client)


def test_oversized_streamed_body_without_content_length_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"\0" * 65536  # 2.5 MB in all, sent chunked: no Content-Length to trust

    response = client.post("/api/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert response.status_code == 413
    assert_healthy(client)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_serve_command_starts_a_server_on_loopback(workers, seven_png):
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert response.json() == {"status": "ok"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as session:
            for _ in range(4):
                answer = session.post("/api/predict", content=seven_png, headers={"Content-Type": "image/png"})
                assert answer.status_code == 200 and answer.json()["digit"] == 7
        started = children(server.pid)
        assert len(started) >= (workers if workers > 1 else 0), started
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert f"http://127.0.0.1:{port}/" in output and "Traceback" not in output
    deadline = time.monotonic() + 10  # multiprocessing's resource tracker exits a moment after the server
    while (left := [pid for pid in started if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, "worker processes left behind"


def test_serve_with_missing_model_is_one_line(tmp_path):
    from helpers import run

    result = run("serve", "--model", tmp_path / "none")
    assert result.exit_code == 1 and result.output.startswith("error: ") and "no such weights file" in result.output


@pytest.mark.parametrize(
    "body",
    [
        b'{"image": ' * 1100 + b"1" + b"}" * 1100,  # nested 1,100 deep: 2.2 kB that once overflowed the parser
        b"[" * 100_000,
        b'{"image": "data:image/png;base64,' + b"A" * 1000 + b'"',  # cut short
        b"\xff\xfe{}",  # not UTF-8
        b'{"image": ' + b"9" * 5000 + b"}",  # an integer too long to convert
        b'{"image": {"nested": ["a", 1]}}',
        b"null",
    ],
)
def test_malformed_or_hostile_json_is_422(client, body):
    response = client.post("/api/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)
    assert_healthy(client)


def test_a_repeated_image_field_is_422_saying_so(client, seven_png):
    files = [("image", ("a.png", seven_png, "image/png")), ("image", ("b.png", seven_png, "image/png"))]
    response = client.post("/api/predict", files=files)
    assert (
        response.status_code == 422
        and response.json()["detail"] == "the form has 2 image fields: send one, named 'image'"
    )


@pytest.mark.parametrize("path", ["/api/health", "/api/model", "/", "/openapi.json", "/docs"])
def test_head_on_get_routes_gives_the_headers_of_get(client, path):
    got = client.get(path)
    head = client.head(path)
    assert head.status_code == got.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert int(head.headers["content-length"]) == len(got.content)


@pytest.mark.parametrize(
    "request_args, status",
    [
        (("POST", "/api/predict?preprocessed=maybe"), 422),
        (("GET", "/api/nowhere"), 404),
        (("DELETE", "/api/health"), 405),
    ],
)
def test_every_error_detail_is_one_string(client, seven_png, request_args, status):
    response = client.request(*request_args, content=seven_png, headers={"Content-Type": "image/png"})
    assert response.status_code == status and isinstance(response.json()["detail"], str)
    if status == 422:
        assert (
            response.json()["detail"]
            == "query preprocessed: Input should be a valid boolean, unable to interpret input"
        )


def test_the_api_docs_and_the_favicon_come_from_this_server(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = [part.split('"')[0] for part in html.split('src="')[1:] + html.split('href="')[1:]]
        assert assets and all(asset.startswith("/") for asset in assets), assets  # nothing from a CDN
        assert all(client.get(asset).status_code == 200 for asset in assets)
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml" and b"<svg" in icon.content
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/").text


def test_the_documentation_says_the_limits_of_the_constants(client):
    from digitrec.web.http import MAX_BODY_BYTES

    predict = client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]
    assert "`unsure_below` in /api/model" in predict["description"]
    assert predict["responses"]["413"]["description"] == f"body over {MAX_BODY_BYTES // 2**20} MiB"


def test_a_model_without_a_finite_answer_is_a_422_on_every_image_route_not_a_500(seven_png):
    class Overflowing(Runtime):
        def forward(self, batch):
            return np.full((len(batch), 10), np.inf, np.float32)

    overflowing = Recognizer(Overflowing(DIGITS, Recognizer.load().info))
    server = LiveServer(create_app(overflowing))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for route in ("/api/predict", "/api/read", "/api/explain"):
                response = client.post(route, content=seven_png, headers={"Content-Type": "image/png"})
                assert response.status_code == 422, route
                assert response.json() == {"detail": "the model's answer is NaN or infinite: it cannot be used"}, route
            assert_healthy(client)
    finally:
        server.stop()
