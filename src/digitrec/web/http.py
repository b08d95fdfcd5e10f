"""What every route shares: the ASGI middlewares that check each request before any route sees it, the
reading of an uploaded image, and the one error shape (a JSON `detail` that is one string).

Checked on every request, in this order (docs/web.md says why, after Jupyter and OWASP's CSRF advice):

- `Host` (`HostCheck`): an IP address, `localhost`, or a name given with `--allowed-host`; any other
  name is 403, so a page on a rebound DNS name cannot reach the server through the browser.
- `Origin` (`OriginCheck`): a request that may change something (any method but GET, HEAD and OPTIONS)
  from a browser must come from this server's own page: an `Origin` other than the server's own (or
  `null`: a local file, a sandboxed frame), or `Sec-Fetch-Site: cross-site`, is 403. Clients that are no
  browser send neither and pass.
- the body (`BodyLimit`): at most MAX_BODY_BYTES, counted as received, and at most MAX_BODIES_IN_FLIGHT
  read at once (413 beyond).

Routes that change the server's state take only `application/json` bodies (`json_only`, 415 otherwise), so
no cross-site form or `text/plain` request can reach them without the CORS preflight this server never
grants. The page is sent with PAGE_POLICY (no inline script); a run's HTML report with REPORT_POLICY (a
sandbox: it runs no script and cannot call the API as the page).
"""

import base64
import binascii
import ipaddress
import json
import traceback

import anyio
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from digitrec.errors import ImageError, ModelError
from digitrec.preprocess import to_png

MiB = 1024 * 1024
MAX_BODY_BYTES = 2 * MiB  # a 280x280 canvas PNG is 5-20 kB; a phone photo as JPEG fits too
MAX_BODIES_IN_FLIGHT = 16  # request bodies read at once; the others wait with their bytes in the socket
LOCAL_NAMES = ("localhost",)  # names always allowed in `Host`, besides IP addresses
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
REPORT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox; frame-ancestors 'none'"
RAW_TYPES = ("image/", "application/octet-stream")
# the OpenAPI description of a route that reads its image with `image_bytes`
IMAGE_ERRORS = {
    413: {"description": f"body over {MAX_BODY_BYTES // MiB} MiB"},
    415: {"description": "unsupported media type"},
    422: {"description": "undecodable, empty or blank image, or a malformed request"},
}
IMAGE_BODY = {
    "requestBody": {
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "description": "data:image/png;base64,..."}},
                }
            },
        },
        "required": True,
    }
}
NOT_JSON = "the body is not valid JSON (or is nested too deep)"


# ---- the one error shape


def problems_text(errors: list[dict]) -> str:
    """pydantic's list of problems as one line: `body steps: Input should be ...; query target: ...`."""
    if any(error["type"] == "json_invalid" for error in errors):
        return NOT_JSON
    return "; ".join(f"{' '.join(map(str, error['loc']))}: {error['msg']}" for error in errors)


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI lists each invalid parameter in a JSON list; here they become one string, the `detail` of
    every other error."""
    return JSONResponse({"detail": problems_text(error.errors())}, status_code=422)


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Every HTTP error as `{"detail": "..."}`; a JSON body FastAPI could not parse (nested too deep for the
    parser: it raises RecursionError) is the 422 of any other bad JSON, not a 400."""
    if error.status_code == 400 and isinstance(error.__cause__, RecursionError):
        return JSONResponse({"detail": NOT_JSON}, status_code=422)
    return JSONResponse({"detail": str(error.detail)}, status_code=error.status_code, headers=error.headers)


def refusal(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


# ---- middlewares: pure ASGI, each checks one thing before the app sees the request


def header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def host_name(host: str) -> str:
    """`Host`'s name without its port: `[::1]:8000` -> `::1`, `localhost:8000` -> `localhost`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware: a request's `Host` must be an IP address, `localhost`, or one of `allowed` ("*":
    any); else 403. A request without `Host` (HTTP/1.0, a bare client) passes: browsers always send it."""

    def __init__(self, app, allowed: tuple[str, ...] = ()):
        self.app = app
        self.allowed = {name.lower().rstrip(".") for name in (*LOCAL_NAMES, *allowed)}

    def allows(self, host: str) -> bool:
        name = host_name(host).rstrip(".")
        return "*" in self.allowed or name in self.allowed or is_ip_address(name)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (host := header(scope, b"host")) is not None and not self.allows(host):
            response = refusal(
                403,
                f"this server does not answer to the name {host_name(host)!r} (Host header): "
                "open it by its IP address or localhost, or start it with --allowed-host NAME",
            )
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


class OriginCheck:
    """ASGI middleware: a request that may change something (any method but GET, HEAD, OPTIONS) and comes
    from a browser page must come from this server's own page; else 403. See the module's docstring."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and (problem := self.problem(scope)):
            return await refusal(403, problem)(scope, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    def problem(scope) -> str | None:
        if header(scope, b"sec-fetch-site") == "cross-site":
            return "a request from another site's page is refused (Sec-Fetch-Site: cross-site)"
        origin = header(scope, b"origin")
        if origin is None:
            return None  # not a browser, or a browser's same-origin request that leaves it out
        own = f"{scope.get('scheme', 'http')}://{(header(scope, b'host') or '').lower()}"
        if origin.lower() != own:
            return f"a request from the page {origin!r} is refused: only this server's own page ({own}) may send it"
        return None


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
        response = refusal(413, f"request body over {self.limit / MiB:g} MiB")
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


# ---- bodies


def json_only(request: Request) -> None:
    """A dependency of the routes that change the server's state: a body, if any, must be `application/json`
    (a cross-site page can send `text/plain` or a form without asking first; it cannot send JSON)."""
    content_type = request.headers.get("content-type")
    declared = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if content_type is None and not declared:
        return
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise HTTPException(
            415, f"unsupported media type {content_type or '(none)'}: this route takes application/json"
        )


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
    raise HTTPException(
        415, f"unsupported media type {content_type or '(none)'}: send an image, multipart form or JSON"
    )


async def on_image(request: Request, work, *args):
    """Read the request's image and run `work(recognizer, image_bytes, *args)` in a thread, at most
    `app.state.limiter` at once, with the model in use now; an image that holds no answer, or a model
    that gives none for it (a non-finite output), is a 422. Every route that reads an image runs here."""
    raw = await image_bytes(request)
    try:
        return await anyio.to_thread.run_sync(
            work, request.app.state.recognizer, raw, *args, limiter=request.app.state.limiter
        )
    except (ImageError, ModelError) as problem:
        message = str(problem)
        # the error's frames hold the decoded image (100 MB for 25 megapixels as RGBA) in a reference cycle that
        # only the garbage collector breaks, whenever it next runs: free them now
        traceback.clear_frames(problem.__traceback__)
        problem.__traceback__ = None
    raise HTTPException(422, message)  # raised outside the `except`: it does not carry the error as its context
