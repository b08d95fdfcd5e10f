"""How `digitrec serve` runs the app: uvicorn, with the limits that keep one server process bounded in time
and memory whatever its clients do (slow, stalled, endless or crowding requests).

The body limit and the cap on bodies read at once belong to the app (`web/app.py`: they hold for every
route under any server); the limits here belong to the connection, below the app. uvicorn has a
keep-alive timeout but no deadline for reading a request: a client that never finishes its headers or
body holds its connection forever, and the httptools parser buffers a request line or header block
without end (uvicorn caps only its h11 parser). `BoundedHttpToolsProtocol` adds both. uvicorn's own
`limit_concurrency` answers 503 only once a request's headers are in, so it cannot bound connections that
never send them; the protocol refuses a connection over the cap as soon as it is made.
"""

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

READ_TIMEOUT_SECONDS = 10  # a request's line, headers and body must all arrive within this (408 and closed)
KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this
SHUTDOWN_SECONDS = 5  # a stopping server ends responses still streaming (a run's live events) after this
MAX_CONNECTIONS = 100  # open connections per server process; the next one is answered 503 and closed
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together (431 and closed), as uvicorn's h11 parser
MAX_HEADERS = 100  # header fields per request (431 and closed)


class HeadTooLarge(Exception):
    """Raised inside the parser's callback to stop parsing a request refused for its headers."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a read deadline per request, caps on the request line and
    headers, and a cap on open connections."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.deadline = None
        self.reading_head = True  # until the headers of the request now arriving are complete
        self.head_bytes = 0
        self.header_count = 0
        if len(self.connections) > MAX_CONNECTIONS:
            self.refuse(503, f"over {MAX_CONNECTIONS} connections: try again shortly")
            return
        self.start_deadline()  # a connection that never sends anything is closed too

    def connection_lost(self, exc) -> None:
        self.stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.reading_head:
            self.start_deadline()
            room = MAX_HEAD_BYTES - self.head_bytes
            if len(data) > room:  # parse only what the cap allows: the headers must end within it
                super().data_received(data[:room])
                if self.reading_head or self.transport.is_closing():
                    self.refuse(431, f"request line and headers over {MAX_HEAD_BYTES // 1024} KiB")
                    return
                data = data[room:]
            else:
                self.head_bytes += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > MAX_HEADERS:
            self.refuse(431, f"over {MAX_HEADERS} header fields")
            raise HeadTooLarge  # the parser stops; uvicorn's answer to a parser error finds the connection closed
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.stop_deadline()
        self.reading_head, self.head_bytes = True, 0  # the next request on this connection

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():
            super().send_400_response(msg)

    def start_deadline(self) -> None:
        if self.deadline is None:
            self.deadline = self.loop.call_later(READ_TIMEOUT_SECONDS, self.read_timed_out)

    def stop_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def read_timed_out(self) -> None:
        self.deadline = None
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # the app already answered (e.g. 413) while the client still sends
        else:
            self.refuse(408, f"the request did not arrive within {READ_TIMEOUT_SECONDS} s")

    def refuse(self, status: int, detail: str) -> None:
        """Answer `status` with a JSON `detail` and close the connection, whatever state the request is in."""
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": detail}).encode()
        head = (
            f"HTTP/1.1 {status} {REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app, if it is reading this request, sees the client gone
            self.cycle.message_event.set()


REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def uvicorn_settings() -> dict:
    """The keyword arguments of `uvicorn.run`/`uvicorn.Config` that apply these limits."""
    return {
        "http": BoundedHttpToolsProtocol,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "timeout_graceful_shutdown": SHUTDOWN_SECONDS,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,  # the same cap should anyone choose h11
    }
