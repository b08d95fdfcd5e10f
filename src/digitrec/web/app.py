"""The app factory: `create_app(recognizer)` puts together the middlewares and error shape of web/http.py
and one router per route group, and serves the page's static files and the API documentation at `/docs`
and `/redoc` (their scripts from the `fastapi_offline` package: no CDN). `serving_app()` builds the app
as each `digitrec serve` process does.

Route groups: web/predict.py (`/api/predict`, `/api/health`, `/api/model`, the page), web/explain.py
(`/api/explain`), web/numbers.py (`/api/read`), web/training.py (`/api/training`, `/api/runs...`,
`PUT /api/model`), web/corrections.py (`/api/corrections...`). Every bad request gets a 4xx with a JSON `detail` that is one string, never a 500.
HEAD is answered on every GET route. The limits on connections (timeouts, header sizes, how many) are
the server's: web/server.py. docs/web.md describes the API and every limit.
"""

import json
import os
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from digitrec import runtime
from digitrec.corrections import Store
from digitrec.preprocess import keep_freed_memory
from digitrec.recognizer import Recognizer
from digitrec.runtime import Runtime
from digitrec.tasks import NUMBERS
from digitrec.web import corrections, explain, numbers, predict, training
from digitrec.web.http import (
    BodyLimit,
    HeadAsGet,
    HostCheck,
    OriginCheck,
    http_error,
    validation_error,
)

MODEL_VARIABLE = "DIGITREC_SERVE_MODEL"  # the model path, for each process of `digitrec serve`
READER_VARIABLE = "DIGITREC_SERVE_READER"  # the number reader's path
TRAINING_VARIABLE = (
    "DIGITREC_SERVE_TRAINING"  # JSON: create_app's runs_dir, host, allow_training, workers, allowed_hosts
)
FAVICON_URL = "/static/favicon.svg"


def runs_error(status: int):
    async def handler(request, error) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=status)

    return handler


def create_app(
    recognizer: Recognizer,
    threads: int = os.cpu_count() or 1,
    runs_dir: Path | None = None,
    host: str = "127.0.0.1",
    allow_training: bool = False,
    workers: int = 1,
    allowed_hosts: tuple[str, ...] = (),
    reader: Runtime | None = None,
    corrections_db: Path | None = None,
) -> FastAPI:
    """The app around `recognizer` and the number reader `reader` (None: the bundled one); at most
    `threads` requests are recognized at once, in threads.

    With `runs_dir`, the page lists the runs there and, when the server listens on a loopback `host` (or
    `allow_training`) in one process (`workers`) with torch installed, trains new ones (web/runs.py).
    Requests must name the server by an IP address, `localhost`, the name it is bound to (`host`) or one of
    `allowed_hosts` (web/http.py). Corrections go to the database at `corrections_db` (default:
    corrections.default_path()); learning from them is one of the runs (web/corrections.py).

    Decoding an image releases the GIL, so a few threads overlap; many (anyio's default is 40) only
    fight over the GIL and the cores (docs/benchmarks.md's serving table).
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
    app.include_router(predict.router)
    app.include_router(explain.router)
    app.include_router(numbers.router)
    runs_routes = training.router(runs_dir, host, allow_training, workers)
    app.include_router(runs_routes)
    app.include_router(corrections.router(Store(corrections_db), runs_routes.runs))
    app.mount("/static", StaticFiles(directory=predict.STATIC_DIR), name="static")
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for error, status in {**training.STATUS_OF, **corrections.STATUS_OF}.items():
        app.add_exception_handler(error, runs_error(status))
    app.add_middleware(BodyLimit)
    app.add_middleware(OriginCheck)
    app.add_middleware(HostCheck, allowed=(host, *allowed_hosts))  # the outermost but HEAD: checked first
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
    settings["allowed_hosts"] = tuple(settings.get("allowed_hosts", ()))
    corrections_db = settings.pop("corrections_db", None)
    recognizer = Recognizer.load(os.environ.get(MODEL_VARIABLE) or None, threads=1)
    reader = runtime.load(os.environ.get(READER_VARIABLE) or None, NUMBERS, threads=1)  # a bad one fails at start
    return create_app(
        recognizer,
        reader=reader,
        runs_dir=Path(runs_dir) if runs_dir else None,
        corrections_db=Path(corrections_db) if corrections_db else None,
        **settings,
    )
