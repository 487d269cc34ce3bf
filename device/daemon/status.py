"""Local status for an operator's monitoring: /healthz and /metrics on 127.0.0.1 only.

/metrics is Prometheus text exposition format 0.0.4: counts and timings, never a
capture, a score of a particular shopper or anything biometric. /healthz answers
200 while the scanner can serve shoppers and 503 with the reason while it cannot
(starting, a fault, or an upload stuck past its deadline).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: upload latency histogram bounds, seconds
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: an upload this long past its attempt's deadline is stuck: the deadline's timer fires within
#: milliseconds, so this much later something it cannot cut holds the loop
STUCK_AFTER_S = 2.0


class Metrics:
    """What the daemon counts; thread-safe, read by the status server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.scans: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.uploads: Counter[str] = Counter()
        self.upload_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.upload_sum_s = 0.0
        self.camera_restarts = 0
        self.outbox_depth = 0
        self.outbox_dropped: Counter[str] = Counter()
        self.state = "starting"
        self.fault: str | None = None
        self._overdue: Callable[[], float] = lambda: 0.0

    def watch_upload(self, overdue_s: Callable[[], float]) -> None:
        """How long the upload under way is past its deadline (Uplink.overdue_s): /healthz says 503
        once it is more than STUCK_AFTER_S."""
        self._overdue = overdue_s

    def scan(self, outcome: str, reasons: list[str]) -> None:
        with self._lock:
            self.scans[outcome] += 1
            for r in reasons:
                self.reasons[r] += 1

    def upload(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self.uploads[outcome] += 1
            i = next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
            self.upload_buckets[i] += 1
            self.upload_sum_s += seconds

    def camera_restarted(self) -> None:
        with self._lock:
            self.camera_restarts += 1

    def set(self, **values: Any) -> None:
        with self._lock:
            for k, v in values.items():
                setattr(self, k, v)

    def exposition(self) -> str:
        overdue = self._overdue()
        with self._lock:
            out: list[str] = []

            def family(name: str, kind: str, doc: str) -> None:
                out.append(f"# HELP {name} {doc}")
                out.append(f"# TYPE {name} {kind}")

            family("palm_scans_total", "counter", "Scans by outcome.")
            for k, v in sorted(self.scans.items()):
                out.append(f'palm_scans_total{{outcome="{k}"}} {v}')
            family("palm_reject_reasons_total", "counter", "Reasons given for scans not accepted.")
            for k, v in sorted(self.reasons.items()):
                out.append(f'palm_reject_reasons_total{{reason="{_label(k)}"}} {v}')
            family("palm_uploads_total", "counter", "Upload attempts that ended, by outcome.")
            for k, v in sorted(self.uploads.items()):
                out.append(f'palm_uploads_total{{outcome="{k}"}} {v}')
            family("palm_upload_latency_seconds", "histogram", "Time from sealing to the server's answer.")
            total = 0
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.upload_buckets, strict=True):
                total += n
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                out.append(f'palm_upload_latency_seconds_bucket{{le="{le}"}} {total}')
            out.append(f"palm_upload_latency_seconds_sum {self.upload_sum_s:.6f}")
            out.append(f"palm_upload_latency_seconds_count {total}")
            family("palm_outbox_depth", "gauge", "Sealed captures waiting for delivery.")
            out.append(f"palm_outbox_depth {self.outbox_depth}")
            family("palm_outbox_dropped_total", "counter", "Sealed captures dropped undelivered, by reason.")
            for k, v in sorted(self.outbox_dropped.items()):
                out.append(f'palm_outbox_dropped_total{{reason="{_label(k)}"}} {v}')
            family("palm_camera_restarts_total", "counter", "Times the camera was reopened after a fault.")
            out.append(f"palm_camera_restarts_total {self.camera_restarts}")
            family("palm_up", "gauge", "1 while the scanner can serve shoppers.")
            up = not (self.fault or self.state == "starting" or overdue > STUCK_AFTER_S)
            out.append(f"palm_up {int(up)}")
            return "\n".join(out) + "\n"

    def health(self) -> tuple[int, dict[str, Any]]:
        overdue = self._overdue()
        with self._lock:
            if self.fault:
                return 503, {"status": "fault", "state": self.state, "fault": self.fault}
            if overdue > STUCK_AFTER_S:  # the deadline did not end the upload: the loop is held
                return 503, {"status": "stuck", "state": self.state, "upload_overdue_s": round(overdue, 1)}
            if self.state == "starting":  # no frame from the camera yet: not serving
                return 503, {"status": "starting", "state": self.state}
            return 200, {"status": "ok", "state": self.state}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: connections served at once; more are closed at once (a scraper needs one)
MAX_CONNECTIONS = 8
#: a connection's whole life, from accept to the last byte, whatever the client does
CONNECTION_DEADLINE_S = 5.0


class _BoundedServer(ThreadingHTTPServer):
    """At most MAX_CONNECTIONS threads, each connection shut after CONNECTION_DEADLINE_S: a
    thousand idle connections held a thousand threads (and 91 MB) for ever."""

    request_queue_size = 64  # listen(2)'s backlog: past it a connect waits on SYN retries

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        timer = threading.Timer(CONNECTION_DEADLINE_S, _shut, (request,))
        timer.daemon = True
        timer.start()
        try:
            thread = threading.Thread(target=self._serve, args=(request, client_address, timer), daemon=True)
            thread.start()
        except RuntimeError:  # no thread to be had: the slot and the socket go back
            timer.cancel()
            self._slots.release()
            self.shutdown_request(request)

    def _serve(self, request: Any, client_address: Any, timer: threading.Timer) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            timer.cancel()
            self._slots.release()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class StatusServer:
    """HTTP on 127.0.0.1:port (0: any free port) in a daemon thread."""

    def __init__(self, metrics: Metrics, port: int) -> None:
        self.metrics = metrics
        handler = type("Handler", (_Handler,), {"metrics": metrics})
        self._server = _BoundedServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="status", daemon=True)

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics
    server_version = "palm-status"
    sys_version = ""
    timeout = 2.0  # each read and write; the connection's deadline bounds the whole

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.exposition())
        elif self.path == "/healthz":
            code, body = self.metrics.health()
            self._send(code, "application/json", json.dumps(body) + "\n")
        else:
            self._send(404, "text/plain; charset=utf-8", "not found: try /healthz or /metrics\n")

    def _send(self, code: int, ctype: str, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would drown the journal
