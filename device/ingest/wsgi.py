"""The reference ingest as a WSGI application, and `palm ingest`'s server for it: waitress.

The protocol's logic stays in :class:`device.ingest.server.Ingest`, free of HTTP; this module only
turns a WSGI request into its headers and body and the answer back. waitress serves it because it
reads each request whole (headers at most ``MAX_HEADER_BYTES``, a body at most the protocol's
8 MiB) before the application sees it, in one process whose threads share the ingest's memory (the
idempotency table, an enrolment gallery), and closes a connection idle for ``IDLE_S``. gunicorn's
only request deadline is killing its worker process, which would wipe that memory; and a client
that drips its request would hold one of gunicorn's few sync workers where here it holds only a
connection, at most ``MAX_CONNECTIONS`` of them. What stays open: a client that sends a byte more
often than every ``IDLE_S`` keeps its connection until its request is whole or over its limit
(at most 16 KiB of headers or 8 MiB of body), bounded in number and memory, not in time.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import IO, Any

from device.ingest.server import Answer, Ingest
from device.protocol import MAX_BODY

#: waitress' limits (see the module's docstring)
MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 16
THREADS = 4
IDLE_S = 5


class IngestApp:
    """``POST /v1/captures`` as a WSGI application; one JSON log line per request."""

    def __init__(self, ingest: Ingest, log_stream: IO[str] | None = None) -> None:
        self.ingest = ingest
        self._log_stream = log_stream
        self._arrivals = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.monotonic()
        answer = self._answer(environ)
        line = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "status": answer.status,
            **answer.log,
            "ms": round((time.monotonic() - started) * 1000, 1),
        }
        if self._log_stream is not None:
            with self._lock:
                self._log_stream.write(json.dumps(line) + "\n")
                self._log_stream.flush()
        data = json.dumps(answer.body).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        headers += list(answer.headers.items())
        start_response(f"{answer.status} {HTTPStatus(answer.status).phrase}", headers)
        return [data]

    def _answer(self, environ: dict[str, Any]) -> Answer:
        if environ.get("PATH_INFO") != "/v1/captures":
            return Answer(404, {"error": "not_found", "detail": "POST /v1/captures"})
        if environ.get("REQUEST_METHOD") != "POST":
            return Answer(405, {"error": "method", "detail": "only POST /v1/captures"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return Answer(
                400,
                {"error": "malformed", "detail": "Content-Length is required"},
                log={"error": "malformed"},
            )
        if length > MAX_BODY:
            return Answer(
                413,
                {"error": "too_large", "detail": f"body is over {MAX_BODY} bytes"},
                log={"error": "too_large"},
            )
        body = environ["wsgi.input"].read(length)
        faults = self.ingest.faults
        with self._lock:
            self._arrivals += 1
            n = self._arrivals
        if n <= faults.slow_first:
            time.sleep(faults.slow_s)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        return self.ingest.handle(headers, body)


def _refusal(status: int, error: str, detail: str) -> Answer:
    return Answer(status, {"error": error, "detail": detail}, log={"error": error})


def make_server(app: IngestApp, *, host: str, port: int) -> Any:
    """A waitress server for ``app`` with the limits above (``.run()`` serves, ``.close()`` stops)."""
    from waitress.server import create_server

    return create_server(
        app,
        host=host,
        port=port,
        threads=THREADS,
        connection_limit=MAX_CONNECTIONS,
        backlog=64,
        channel_timeout=IDLE_S,
        cleanup_interval=1,  # the idle check runs this often: a channel idle for IDLE_S goes within 1 s
        max_request_header_size=MAX_HEADER_BYTES,
        max_request_body_size=MAX_BODY + 1,  # waitress refuses a body of this size or more: 8 MiB passes
        inbuf_overflow=MAX_BODY + 65536,  # bodies stay in memory, never in a temporary file
        asyncore_use_poll=True,
        ident="palm-ingest",
        expose_tracebacks=False,
    )
