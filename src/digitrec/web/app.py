"""FastAPI app factory: `/api/predict`, `/api/health`, `/api/model`, the static drawing page, and the API
documentation at `/docs` and `/redoc` with its scripts served from the `fastapi_offline` package (no CDN);
`/api/explain` comes from `web/explain.py`, `/api/read` (a whole number) from `web/numbers.py`.

Request bodies are capped at MAX_BODY_BYTES by counting the bytes actually received (not only
Content-Length), and at most MAX_BODIES_IN_FLIGHT are read at once; every bad request gets a 4xx with a
JSON `detail` that is one string, never a 500. HEAD is answered on every GET route. The limits on
connections (timeouts, header sizes, how many) are the server's: `web/server.py`.
"""

import base64
import binascii
import json
import os
from pathlib import Path

import anyio
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from digitrec import runtime
from digitrec.errors import ImageError, ModelError
from digitrec.preprocess import keep_freed_memory, to_png
from digitrec.recognizer import UNSURE_BELOW, Recognizer
from digitrec.runtime import Runtime
from digitrec.tasks import NUMBERS
from digitrec.web import training

MODEL_VARIABLE = "DIGITREC_SERVE_MODEL"  # the model path, for each process of `digitrec serve`
READER_VARIABLE = "DIGITREC_SERVE_READER"  # the number reader's path
TRAINING_VARIABLE = "DIGITREC_SERVE_TRAINING"  # JSON: create_app's runs_dir, host, allow_training, workers
MiB = 1024 * 1024
MAX_BODY_BYTES = 2 * MiB  # a 280x280 canvas PNG is 5-20 kB; a phone photo as JPEG fits too
MAX_BODIES_IN_FLIGHT = 16  # request bodies read at once; the others wait with their bytes in the socket
STATIC_DIR = Path(__file__).parent / "static"
FAVICON_URL = "/static/favicon.svg"
RAW_TYPES = ("image/", "application/octet-stream")
# the OpenAPI description of a route that reads its image with `image_bytes`
IMAGE_ERRORS = {413: {"description": f"body over {MAX_BODY_BYTES // MiB} MiB"},
                415: {"description": "unsupported media type"},
                422: {"description": "undecodable, empty or blank image, or a malformed request"}}
IMAGE_BODY = {"requestBody": {"content": {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "description": "data:image/png;base64,..."}}}},
}, "required": True}}


class PredictionOut(BaseModel):
    digit: int
    confidence: float
    probabilities: list[float]
    unsure: bool
    preprocessed: str | None = None  # the 28x28 view as a PNG data URL, when asked for


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: reads the whole request body first, refusing it with 413 once it passes the limit.

    At most `at_once` bodies are read at the same time: a crowd of slow or stalled uploads then holds at
    most `at_once` x `limit` bytes here, while the rest wait unread (uvicorn stops reading a socket once
    64 kB of a request are buffered)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES, at_once: int = MAX_BODIES_IN_FLIGHT):
        self.app = app
        self.limit = limit
        self.slots = anyio.Semaphore(at_once)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self.refuse(send)
        if declared in (None, b"0") and b"transfer-encoding" not in headers:
            return await self.app(scope, receive, send)  # no body to read
        try:
            async with self.slots:
                body = await self.read(receive)
        except BodyTooLarge:
            return await self.refuse(send)
        if body is None:
            return  # the client went away
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def read(self, receive) -> bytes | None:
        """The whole body, or None if the client went away; raises `BodyTooLarge` once it passes the limit."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise BodyTooLarge
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def refuse(self, send):
        response = JSONResponse({"detail": f"request body over {self.limit / MiB:g} MiB"}, status_code=413)
        await response({"type": "http"}, None, send)


class HeadAsGet:
    """ASGI middleware: HEAD on any GET route answers as GET would, headers only (the server drops the
    body of a response to HEAD, as HTTP requires)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def png_data_url(pixels) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png(pixels)).decode()


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
        uploads = form.getlist("image") + form.getlist("file")
        if len(uploads) > 1:
            raise HTTPException(422, f"the form has {len(uploads)} image fields: send one, named 'image'")
        if not uploads or isinstance(uploads[0], str):
            raise HTTPException(422, "the form needs a file field named 'image' (or 'file')")
        return await uploads[0].read()
    if content_type == "application/json":
        try:
            document = json.loads(await request.body())
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            raise HTTPException(422, "the body is not valid JSON (or is nested too deep)") from None
        if not isinstance(document, dict):
            raise HTTPException(422, "expected a JSON object")
        try:
            return decode_data_url(document.get("image"))
        except ValueError as problem:
            raise HTTPException(422, str(problem)) from None
    if content_type.startswith(RAW_TYPES):
        return await request.body()
    raise HTTPException(415, f"unsupported media type {content_type or '(none)'}: send an image, multipart form or JSON")


routes = APIRouter()


async def on_image(request: Request, work, *args):
    """Read the request's image and run `work(recognizer, image_bytes, *args)` in a thread, at most
    `app.state.limiter` at once, with the model in use now; an image that holds no answer, or a model
    that gives none for it (a non-finite output), is a 422. Every route that reads an image runs here."""
    raw = await image_bytes(request)
    try:
        return await anyio.to_thread.run_sync(work, request.app.state.recognizer, raw, *args,
                                              limiter=request.app.state.limiter)
    except (ImageError, ModelError) as problem:
        raise HTTPException(422, str(problem)) from None


@routes.post("/api/predict", response_model=PredictionOut, responses=IMAGE_ERRORS, openapi_extra=IMAGE_BODY,
          description=f"Recognize one digit. `unsure` is true when the top probability is below {UNSURE_BELOW}.")
async def predict(request: Request, preprocessed: bool = Query(False, description="include the 28x28 view")):
    result = await on_image(request, Recognizer.predict, "upload")
    return PredictionOut(
        digit=result.digit,
        confidence=result.confidence,
        probabilities=result.probabilities,
        unsure=result.unsure,
        preprocessed=png_data_url(result.preprocessed) if preprocessed else None,
    )


@routes.get("/api/health")
def health():
    return {"status": "ok"}


@routes.get("/api/model")
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


@routes.get("/", include_in_schema=False)
def page():
    return FileResponse(STATIC_DIR / "index.html")


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI lists each invalid parameter in a JSON list; here they become one string, the `detail` of
    every other error."""
    problems = "; ".join(f"{' '.join(map(str, problem['loc']))}: {problem['msg']}" for problem in error.errors())
    return JSONResponse({"detail": problems}, status_code=422)


def create_app(recognizer: Recognizer, threads: int = os.cpu_count() or 1, runs_dir: Path | None = None,
               host: str = "127.0.0.1", allow_training: bool = False, workers: int = 1,
               reader: Runtime | None = None, corrections_db: Path | None = None) -> FastAPI:
    """The app around `recognizer` and the number reader `reader` (None: the bundled one); at most
    `threads` requests are recognized at once, in threads.

    With `runs_dir`, the page lists the runs there and, when the server listens on a loopback `host` (or
    `allow_training`) in one process (`workers`) with torch installed, trains new ones (web/training.py).
    Corrections go to the database at `corrections_db` (default: corrections.default_path()), and learning
    from them runs as one of those runs (web/corrections.py).

    Decoding an image releases the GIL, so a few threads overlap; many (anyio's default is 40) only
    fight over the GIL and the cores (the README's serving table: p50 and throughput before and after).
    """
    app = FastAPIOffline(
        title="digitrec",
        summary="Handwritten-digit recognition",
        description="POST an image of a handwritten digit to /api/predict; the page at / lets you draw one.",
        favicon_url=FAVICON_URL,
    )
    app.state.recognizer = recognizer  # routes read it from here, so the model in use can be replaced
    app.state.reader = reader or runtime.load(None, NUMBERS, threads=1)  # what /api/read reads numbers with
    app.state.limiter = anyio.CapacityLimiter(threads)  # at most `threads` recognitions at once, whichever route asks
    app.include_router(routes)
    from digitrec.web.explain import router as explain_routes  # imported here: it imports this module
    from digitrec.web.numbers import router as number_routes  # the same

    app.include_router(explain_routes)
    app.include_router(number_routes)
    from digitrec.corrections import Store
    from digitrec.web.corrections import router as correction_routes  # imports this module

    runs_routes = training.router(runs_dir, host, allow_training, workers)
    app.include_router(runs_routes)
    app.include_router(correction_routes(Store(corrections_db), runs_routes.runs))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(BodyLimit)
    app.add_middleware(HeadAsGet)
    return app


def serving_app() -> FastAPI:
    """The app as each `digitrec serve` process builds it, from the model named in $DIGITREC_SERVE_MODEL
    (empty: the bundled one) and the training settings in $DIGITREC_SERVE_TRAINING. uvicorn starts its
    worker processes from an import string, so these travel in the environment. One thread per forward
    pass: requests run side by side instead."""
    keep_freed_memory()
    settings = json.loads(os.environ.get(TRAINING_VARIABLE) or "{}")
    runs_dir = settings.pop("runs_dir", None)
    corrections_db = settings.pop("corrections_db", None)
    recognizer = Recognizer.load(os.environ.get(MODEL_VARIABLE) or None, threads=1)
    reader = runtime.load(os.environ.get(READER_VARIABLE) or None, NUMBERS, threads=1)  # a bad one fails at start
    return create_app(recognizer, reader=reader, runs_dir=Path(runs_dir) if runs_dir else None,
                      corrections_db=Path(corrections_db) if corrections_db else None, **settings)
