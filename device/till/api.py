"""The till's API: HTTPS on the store's LAN, a bearer token per till, the scanner's own certificate.

    POST   /v1/checkouts        {"checkout_id", "timeout_s"}: arm (201; the same again: the same)
    GET    /v1/checkouts/{id}   the checkout's state, reasons, capture id and the cloud's result
    DELETE /v1/checkouts/{id}   cancel one that is not final
    GET    /v1/events           Server-Sent Events: every state change and guidance reason
    GET    /v1/device           id, firmware, calibration, protocol and suite, ready/busy/fault

Never a pixel, crop or template in any answer, event or error: a checkout holds none. Tokens are
checked in constant time (device.till.tills); an address that keeps failing waits longer for
each answer. Every arm, cancel and result is a JSON log line naming the till.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from device import inputs
from device.till.checkouts import CheckoutError, Checkouts
from device.till.tills import MemoryTills, Tills

log = logging.getLogger(__name__)

MAX_BODY = 4096
MAX_CONNECTIONS = 16
MAX_SUBSCRIBERS = 4
#: failures from an address before its answers slow down, and the longest wait
FREE_FAILURES, MAX_DELAY_S = 3, 4.0
KEEPALIVE_S = 15.0


class TillAPI:
    """The API on ``host``:``port`` over TLS, in background threads; a context manager."""

    def __init__(
        self,
        *,
        checkouts: Checkouts,
        tills: Tills | MemoryTills,
        device: Callable[[], dict[str, Any]],
        tls: ssl.SSLContext,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.checkouts = checkouts
        self.tills = tills
        self.device = device
        self._failures: dict[str, int] = {}
        self._subscribers: list[queue.Queue[dict[str, Any] | None]] = []
        self._lock = threading.Lock()
        self._server = _Server((host, port), _Handler, self, tls)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def publish(self, event: dict[str, Any]) -> None:
        """Hand ``event`` to every subscriber of /v1/events (a slow one loses its oldest)."""
        with self._lock:
            for q in self._subscribers:
                if q.full():
                    with contextlib.suppress(queue.Empty):
                        q.get_nowait()
                q.put_nowait(event)

    def start(self) -> TillAPI:
        self._thread = threading.Thread(target=self._server.serve_forever, name="till-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for q in self._subscribers:
                q.put_nowait(None)
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> TillAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- for the handler ------------------------------------------------------------------------

    def authenticate(self, address: str, header: str) -> str | None:
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        till = self.tills.verify(token) if token else None
        with self._lock:
            if till is not None:
                self._failures.pop(address, None)
                return till
            n = self._failures.get(address, 0) + 1
            self._failures[address] = n
        if n > FREE_FAILURES:  # a guesser waits longer each time; the right token resets it
            time.sleep(min(MAX_DELAY_S, 0.25 * 2 ** (n - FREE_FAILURES)))
        return None

    def subscribe(self) -> queue.Queue[dict[str, Any] | None] | None:
        with self._lock:
            if len(self._subscribers) >= MAX_SUBSCRIBERS:
                return None
            q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=256)
            self._subscribers.append(q)
            return q

    def unsubscribe(self, q: queue.Queue[dict[str, Any] | None]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type, api: TillAPI, tls: ssl.SSLContext) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.api = api
        self.tls = tls
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        sock.settimeout(10)  # the handshake and each read: a silent client is let go
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the cap: closed at once
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("till API connection from %s ended with an error", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # arms, cancels and results are logged by name instead

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, code: str, detail: str) -> None:
        self._send(status, {"error": code, "detail": detail})

    def _till(self) -> str | None:
        till = self.server.api.authenticate(self.client_address[0], self.headers.get("Authorization", ""))
        if till is None:
            self.close_connection = True
            self._refuse(
                401, "unauthenticated", "an Authorization: Bearer token of a till on this scanner is needed"
            )
        return till

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise CheckoutError(411, "malformed", "Content-Length is required") from None
        if not 0 <= length <= MAX_BODY:
            raise CheckoutError(413, "too_large", f"a body is at most {MAX_BODY} bytes")
        try:
            return inputs.load_json(self.rfile.read(length), what="the body")
        except inputs.InputError as exc:
            raise CheckoutError(400, "malformed", str(exc)[:200]) from None

    def do_POST(self) -> None:
        till = self._till()
        if till is None:
            return
        if self.path != "/v1/checkouts":
            return self._refuse(404, "not_found", "POST /v1/checkouts")
        try:
            c = self.server.api.checkouts.arm(till, self._body())
        except CheckoutError as exc:
            return self._refuse(exc.status, exc.code, exc.detail)
        log.info(
            "checkout armed", extra={"till": till, "checkout_id": c.checkout_id, "timeout_s": c.timeout_s}
        )
        self._send(201, c.as_json())

    def do_GET(self) -> None:
        till = self._till()
        if till is None:
            return
        api = self.server.api
        if self.path == "/v1/device":
            return self._send(200, api.device())
        if self.path == "/v1/events":
            return self._events()
        if self.path.startswith("/v1/checkouts/"):
            c = api.checkouts.get(self.path.removeprefix("/v1/checkouts/"))
            if c is None or c.till != till:
                return self._refuse(404, "not_found", "no such checkout of this till")
            return self._send(200, c.as_json())
        self._refuse(404, "not_found", "see /v1/checkouts, /v1/events, /v1/device")

    def do_DELETE(self) -> None:
        till = self._till()
        if till is None:
            return
        if not self.path.startswith("/v1/checkouts/"):
            return self._refuse(404, "not_found", "DELETE /v1/checkouts/{id}")
        try:
            c = self.server.api.checkouts.cancel(till, self.path.removeprefix("/v1/checkouts/"))
        except CheckoutError as exc:
            return self._refuse(exc.status, exc.code, exc.detail)
        log.info("checkout cancelled", extra={"till": till, "checkout_id": c.checkout_id})
        self._send(200, c.as_json())

    def _events(self) -> None:
        api = self.server.api
        q = api.subscribe()
        if q is None:
            return self._refuse(503, "busy", f"at most {MAX_SUBSCRIBERS} event streams at once")
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(b": palm-scanner events\n\n")
            self.wfile.flush()
            while True:
                try:
                    event = q.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    self.wfile.write(b": keepalive\n\n")  # and a till that vanished is noticed here
                    self.wfile.flush()
                    continue
                if event is None:
                    return
                kind = str(event.get("event", "message"))
                self.wfile.write(f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
        except OSError:
            return
        finally:
            api.unsubscribe(q)
