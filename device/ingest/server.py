"""``POST /v1/captures`` exactly as protocol v1's receiver order of checks says.

For development and tests only: keys come from the command line, state lives
in memory, and it can be told to answer 503 or to be slow for its first
requests so that retries can be watched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.errors import ProtocolError
from device.protocol import MAX_BODY, STALE_AFTER_S, multipart
from device.protocol.archive import ArchiveSummary, validate_archive
from device.protocol.envelope import header_of, parse_envelope
from device.protocol.keys import RecipientPrivate
from device.protocol.seal import open_sealed, verify_signature


@dataclass
class Faults:
    """Misbehaviour on purpose, for the first requests."""

    busy_first: int = 0  # answer 503 busy with Retry-After to this many requests
    retry_after_s: int = 1
    slow_first: int = 0  # wait slow_s before answering this many requests
    slow_s: float = 0.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)


class Ingest:
    """The receiver's logic, free of HTTP: headers and body in, an answer out."""

    def __init__(
        self,
        *,
        recipients: list[RecipientPrivate],
        devices: Mapping[str, Ed25519PublicKey],
        wall_clock: Callable[[], float] = time.time,
        faults: Faults | None = None,
        result: Callable[[str, dict[str, Any], ArchiveSummary], Any] | None = None,
    ) -> None:
        """``result``: what the answer's ``result`` says of an accepted capture, given its device, its
        envelope and its archive with the flood frame decoded (a `gallery.Gallery`); else null."""
        self._recipients = {k.kid: k for k in recipients}  # several at once: keys rotate
        self._devices = dict(devices)
        self._wall = wall_clock
        self.faults = faults or Faults()
        self._result = result
        self._seen: dict[str, tuple[bytes, float, Any]] = {}
        self._lock = threading.Lock()
        self.requests = 0

    def handle(self, headers: Mapping[str, str], body: bytes) -> Answer:
        with self._lock:
            self.requests += 1
            n = self.requests
        if n <= self.faults.busy_first:
            return Answer(
                503,
                {"error": "busy", "detail": "told to be busy"},
                {"Retry-After": str(self.faults.retry_after_s)},
                {"error": "busy"},
            )
        try:
            return self._check(headers, body)
        except ProtocolError as exc:
            return Answer(exc.status, {"error": exc.code, "detail": exc.detail}, log={"error": exc.code})

    def _check(self, headers: Mapping[str, str], body: bytes) -> Answer:
        # 1. size and the two parts, in order
        if len(body) > MAX_BODY:
            raise ProtocolError("too_large", f"body is over {MAX_BODY} bytes", 413)
        envelope, sealed = multipart.decode(body, headers.get("content-type", ""))
        # 2. the device and its signature
        device_id, version = header_of(envelope)
        key = self._devices.get(device_id)
        if key is None:
            raise ProtocolError("unauthenticated", f"unknown device {device_id!r}", 401)
        verify_signature(envelope, sealed, headers.get("palm-signature", ""), key, version)
        # 3. version, suite, time window, capture id
        env = parse_envelope(envelope, now_unix=self._wall())
        capture_id = env["capture_id"]
        log: dict[str, Any] = {
            "capture_id": capture_id,
            "device": device_id,
            "roles": env["content"]["frames"],
            "v": version,
            "suite": env["suite"],
        }
        if headers.get("idempotency-key") != capture_id:
            raise ProtocolError("malformed", "Idempotency-Key differs from the envelope's capture_id")
        # 4. idempotency
        digest = hashlib.sha256(sealed).digest()
        with self._lock:
            self._forget_old()
            seen = self._seen.get(capture_id)
        if seen is not None:
            if seen[0] != digest:
                raise ProtocolError("conflict", "this capture id was seen with other content", 409)
            return Answer(
                200,
                {"capture_id": capture_id, "status": "duplicate", "result": seen[2]},
                log={**log, "duplicate": True},
            )
        # 5. the recipient key and the seal
        recipient = self._recipients.get(env["recipient"])
        if recipient is None:
            raise ProtocolError("undecryptable", f"unknown recipient key {env['recipient']}", 422)
        plaintext = open_sealed(envelope, sealed, recipient, version=version, suite=env["suite"])
        # 6. the archive
        keep = "flood" if self._result is not None else None
        summary = validate_archive(plaintext, env["content"]["frames"], keep=keep)
        log["sizes"] = [list(s) for s in summary.sizes]
        # 7. accepted
        result = self._result(device_id, env, summary) if self._result is not None else None
        with self._lock:
            if capture_id in self._seen:  # a concurrent twin got here first
                return self._check(headers, body)
            self._seen[capture_id] = (digest, self._wall(), result)
        if result is not None:
            log["result"] = result
        return Answer(201, {"capture_id": capture_id, "status": "accepted", "result": result}, log=log)

    def _forget_old(self) -> None:
        # Past twice the window a capture id can only come back stale, so it can be forgotten.
        cutoff = self._wall() - 2 * STALE_AFTER_S
        for cid in [c for c, (_, t, _) in self._seen.items() if t < cutoff]:
            del self._seen[cid]


class _Handler(BaseHTTPRequestHandler):
    server: IngestServer
    protocol_version = "HTTP/1.1"
    timeout = 15  # a client that stops sending mid-body is dropped

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one JSON line per request instead, from _answer

    def do_POST(self) -> None:
        started = time.monotonic()
        if self.path != "/v1/captures":
            self._answer(Answer(404, {"error": "not_found", "detail": "POST /v1/captures"}), started)
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length > MAX_BODY:
            # Drain what a client sends before it reads the answer, up to a bound, so that it
            # sees 413 rather than a reset connection.
            self.close_connection = True
            self._drain(min(length, 2 * MAX_BODY))
            self._answer(
                Answer(
                    413,
                    {"error": "too_large", "detail": f"body is over {MAX_BODY} bytes"},
                    log={"error": "too_large"},
                ),
                started,
            )
            return
        if length < 0:
            self.close_connection = True
            self._answer(
                Answer(
                    400,
                    {"error": "malformed", "detail": "Content-Length is required"},
                    log={"error": "malformed"},
                ),
                started,
            )
            return
        try:
            body = self.rfile.read(length)
        except OSError:
            return
        faults = self.server.ingest.faults
        if self.server.arrived() <= faults.slow_first:
            time.sleep(faults.slow_s)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._answer(self.server.ingest.handle(headers, body), started)

    def _drain(self, n: int) -> None:
        try:
            while n > 0:
                chunk = self.rfile.read(min(n, 65536))
                if not chunk:
                    return
                n -= len(chunk)
        except OSError:
            return

    def do_GET(self) -> None:
        self._answer(Answer(405, {"error": "method", "detail": "only POST /v1/captures"}), time.monotonic())

    def _answer(self, answer: Answer, started: float) -> None:
        # Logged before it is sent: whoever has the answer can find its line.
        self.server.log(
            {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "status": answer.status,
                **answer.log,
                "ms": round((time.monotonic() - started) * 1000, 1),
            }
        )
        data = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in answer.headers.items():
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass


class IngestServer(ThreadingHTTPServer):
    """The ingest on a socket, in a background thread; a context manager."""

    daemon_threads = True

    def __init__(
        self,
        ingest: Ingest,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        log_stream: IO[str] | None = None,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.ingest = ingest
        self.tls = tls
        self._log_stream = log_stream
        self._log_lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self.lines: list[dict[str, Any]] = []
        self._arrivals = 0

    def arrived(self) -> int:
        """Count a request with a body as it arrives; its number."""
        with self._log_lock:
            self._arrivals += 1
            return self._arrivals

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            # The handshake happens on first read, in the request's own thread.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError | ConnectionError | TimeoutError):
            return  # a client that failed its handshake or hung up: nothing to report
        super().handle_error(request, client_address)

    def log(self, line: dict[str, Any]) -> None:
        with self._log_lock:
            self.lines.append(line)
            if len(self.lines) > 10_000:
                del self.lines[:5_000]
            if self._log_stream is not None:
                self._log_stream.write(json.dumps(line) + "\n")
                self._log_stream.flush()
            self._log_lock.notify_all()

    def wait_for_lines(self, n: int, timeout_s: float) -> bool:
        """Wait until n requests have been answered (for tests and tools that watch)."""
        with self._log_lock:
            return self._log_lock.wait_for(lambda: len(self.lines) >= n, timeout_s)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def start(self) -> IngestServer:
        self._thread = threading.Thread(target=self.serve_forever, name="ingest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> IngestServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
