"""FastAPI app factory: `/api/predict`, `/api/health`, `/api/model`, and the static drawing page.

Request bodies are capped at 2 MB by counting the bytes actually received (not only Content-Length);
every bad request gets a 4xx with a JSON `detail`, never a 500.
"""

import base64
import binascii
import ctypes
import io
import json
import os
from pathlib import Path

import anyio
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel

from digitrec.errors import ImageError
from digitrec.recognizer import UNSURE_BELOW, Recognizer
from digitrec.web import training

MODEL_VARIABLE = "DIGITREC_SERVE_MODEL"  # the model path, for each process of `digitrec serve`
TRAINING_VARIABLE = "DIGITREC_SERVE_TRAINING"  # JSON: create_app's runs_dir, host, allow_training, workers
MAX_BODY_BYTES = 2 * 1024 * 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
STATIC_DIR = Path(__file__).parent / "static"
RAW_TYPES = ("image/", "application/octet-stream")


class PredictionOut(BaseModel):
    digit: int
    confidence: float
    probabilities: list[float]
    unsure: bool
    preprocessed: str | None = None  # the 28x28 view as a PNG data URL, when asked for


class BodyLimit:
    """ASGI middleware: reads the whole request body, refusing it with 413 once it passes the limit."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self.refuse(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self.refuse(send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def refuse(self, send):
        response = JSONResponse({"detail": f"request body over {self.limit // (1024 * 1024)} MB"}, status_code=413)
        await response({"type": "http"}, None, send)


def png_data_url(pixels) -> str:
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).round().astype("uint8")).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def decode_data_url(value: object) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise ValueError('expected {"image": "data:image/...;base64,..."}')
    payload = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the image is not valid base64") from None


async def image_bytes(request: Request) -> bytes:
    """The uploaded image from a multipart form, a raw image body or a JSON data URL; a request that
    holds none raises `HTTPException` (415 or 422). Every route that takes an image reads it here."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form()
        except Exception:  # python-multipart raises several types for malformed forms
            raise HTTPException(422, "malformed multipart form") from None
        upload = form.get("image") or form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "the form needs a file field named 'image' (or 'file')")
        return await upload.read()
    if content_type == "application/json":
        try:
            document = json.loads(await request.body())
        except ValueError:
            raise HTTPException(422, "the body is not valid JSON") from None
        if not isinstance(document, dict):
            raise HTTPException(422, "expected a JSON object")
        try:
            return decode_data_url(document.get("image"))
        except ValueError as problem:
            raise HTTPException(422, str(problem)) from None
    if content_type.startswith(RAW_TYPES):
        return await request.body()
    raise HTTPException(415, f"unsupported media type {content_type or '(none)'}: send an image, multipart form or JSON")


def create_app(recognizer: Recognizer, threads: int = os.cpu_count() or 1, runs_dir: Path | None = None,
               host: str = "127.0.0.1", allow_training: bool = False, workers: int = 1) -> FastAPI:
    """The app around `recognizer`; at most `threads` requests are recognized at once, in threads.

    With `runs_dir`, the page lists the runs there and, when the server listens on a loopback `host` (or
    `allow_training`) in one process (`workers`) with torch installed, trains new ones (web/training.py).

    Decoding an image releases the GIL, so a few threads overlap; many (anyio's default is 40) only
    fight over the GIL and the cores: 8 concurrent clients measured p50 36 ms with 2 threads, 48 ms
    with 40 (bench/serve_latency.py, 2 cores).
    """
    limiter = anyio.CapacityLimiter(threads)
    app = FastAPI(
        title="digitrec",
        summary="Handwritten-digit recognition",
        description="POST an image of a handwritten digit to /api/predict; the page at / lets you draw one.",
    )
    app.state.recognizer = recognizer  # routes read it from here, so the model in use can be replaced
    app.state.limiter = limiter  # at most `threads` recognitions at once, whichever route asks

    @app.post(
        "/api/predict",
        response_model=PredictionOut,
        responses={413: {"description": "body over 2 MB"}, 415: {"description": "unsupported media type"},
                   422: {"description": "undecodable, empty or blank image, or a malformed request"}},
        openapi_extra={"requestBody": {"content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "format": "binary"}}}},
            "application/json": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "description": "data:image/png;base64,..."}}}},
        }, "required": True}},
    )
    async def predict(request: Request, preprocessed: bool = Query(False, description="include the 28x28 view")):
        """Recognize one digit. `unsure` is true when the top probability is below 0.8."""
        raw = await image_bytes(request)
        recognizer = request.app.state.recognizer
        try:
            result = await anyio.to_thread.run_sync(recognizer.predict, raw, "upload", limiter=limiter)
        except ImageError as problem:
            raise HTTPException(422, str(problem)) from None
        return PredictionOut(
            digit=result.digit,
            confidence=result.confidence,
            probabilities=result.probabilities,
            unsure=result.unsure,
            preprocessed=png_data_url(result.preprocessed) if preprocessed else None,
        )

    @app.get("/api/health")
    def health():
        return {"status": "ok"}

    @app.get("/api/model")
    def model(request: Request):
        info = request.app.state.recognizer.info
        return {
            "name": info["name"],
            "recipe": info.get("recipe"),
            "parameters": info["parameters"],
            "test_accuracy": info["metrics"].get("test_accuracy"),
            "runtime": info["runtime"],
            "unsure_below": UNSURE_BELOW,
        }

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html")

    app.include_router(training.router(runs_dir, host, allow_training, workers))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimit)
    return app


def keep_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    By default every block over 128 KB (a 280x280 image as float32 is 313 KB) is mapped fresh from the
    kernel and unmapped when freed, so each image's arrays page-fault in anew: that cost more than the
    arithmetic on them (one 280x280 canvas PNG: 4.1 -> 3.0 ms from bytes to prediction). For a process
    that recognizes image after image (`serve`); a no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):
        pass


def serving_app() -> FastAPI:
    """The app as each `digitrec serve` process builds it, from the model named in $DIGITREC_SERVE_MODEL
    (empty: the bundled one) and the training settings in $DIGITREC_SERVE_TRAINING. uvicorn starts its
    worker processes from an import string, so these travel in the environment. One thread per forward
    pass: requests run side by side instead."""
    keep_freed_memory()
    settings = json.loads(os.environ.get(TRAINING_VARIABLE) or "{}")
    runs_dir = settings.pop("runs_dir", None)
    return create_app(Recognizer.load(os.environ.get(MODEL_VARIABLE) or None, threads=1),
                      runs_dir=Path(runs_dir) if runs_dir else None, **settings)
