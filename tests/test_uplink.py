"""The uplink against real HTTP(S) servers on 127.0.0.1: the protocol's retry rules, TLS, pins, the outbox."""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from device.clock import Clock, FakeClock
from device.errors import UplinkError
from device.ingest.server import Answer, Faults, Ingest, IngestServer
from device.protocol.keys import recipient_public
from device.protocol.seal import SealedCapture
from device.uplink.outbox import Outbox
from device.uplink.session import make_session
from device.uplink.uplink import RetryPolicy, Uplink, _Try
from tests.helpers import DEVICE_ID, Keys, frames, make_ca, new_keys

FAST = RetryPolicy(connect_timeout_s=1.0, read_timeout_s=0.3, attempt_deadline_s=2.0)


class RecordingIngest(Ingest):
    """The reference ingest, remembering exactly what each request carried."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.seen: list[tuple[str, str, str, str]] = []

    def handle(self, headers: Mapping[str, str], body: bytes) -> Answer:
        self.seen.append(
            (
                hashlib.sha256(body).hexdigest(),
                headers.get("palm-signature", ""),
                headers.get("idempotency-key", ""),
                headers.get("user-agent", ""),
            )
        )
        return super().handle(headers, body)


@pytest.fixture
def keys() -> Keys:
    return new_keys()


def serve(keys: Keys, *, faults: Faults | None = None, tls: ssl.SSLContext | None = None) -> IngestServer:
    ingest = RecordingIngest(
        recipients=[keys.recipient], devices={DEVICE_ID: keys.device.public_key()}, faults=faults
    )
    return IngestServer(ingest, tls=tls).start()


@pytest.fixture
def server(keys: Keys) -> Iterator[IngestServer]:
    s = serve(keys)
    yield s
    s.stop()


def uplink(
    url: str,
    clock: Clock,
    *,
    ca: Path | None = None,
    pin: str | None = None,
    ttl_s: float = 120,
    policy: RetryPolicy = FAST,
) -> Uplink:
    session = make_session(ca_bundle=ca, pin_sha256=pin, user_agent="palm-scanner/0.1.0-test")
    return Uplink(endpoint=url, session=session, clock=clock, outbox=Outbox(ttl_s=ttl_s), policy=policy)


def seal(keys: Keys, clock: Clock, **kw: Any) -> SealedCapture:
    return keys.sealer(monotonic_ns=clock.monotonic_ns, **kw).seal(
        frames(), checks={"test": True}, calibration=None
    )


def seen(server: IngestServer) -> list[tuple[str, str, str, str]]:
    ingest = server.ingest
    assert isinstance(ingest, RecordingIngest)
    return ingest.seen


def test_success_then_duplicate(keys: Keys, server: IngestServer, clock: FakeClock) -> None:
    capture = seal(keys, clock)
    up = uplink(server.url, clock)
    d = up.deliver(capture, wait_s=5)
    assert (d.outcome, d.status, d.attempts, d.result) == ("accepted", 201, 1, None)
    again = uplink(server.url, clock).deliver(capture, wait_s=5)
    assert (again.outcome, again.status) == ("duplicate", 200)
    assert len(up.outbox) == 0
    line = server.lines[0]
    assert line["status"] == 201 and line["capture_id"] == capture.capture_id and line["device"] == DEVICE_ID
    assert line["sizes"] == [[320, 320]] * 4
    assert seen(server)[0][3] == "palm-scanner/0.1.0-test"


def test_busy_then_success_sends_the_very_same_bytes(keys: Keys, clock: FakeClock) -> None:
    server = serve(keys, faults=Faults(busy_first=2, retry_after_s=3))
    try:
        start = clock.monotonic_ns()
        d = uplink(server.url, clock).deliver(seal(keys, clock), wait_s=30)
    finally:
        server.stop()
    assert (d.outcome, d.attempts) == ("accepted", 3)
    assert len(set(seen(server))) == 1  # body, signature, idempotency key and agent: identical each time
    assert [line["status"] for line in server.lines] == [503, 503, 201]
    waited = (clock.monotonic_ns() - start) / 1e9
    assert 6.0 <= waited <= 2 * RetryPolicy().retry_after_cap_s  # Retry-After honoured, twice


def test_retry_after_is_capped(keys: Keys, clock: FakeClock) -> None:
    server = serve(keys, faults=Faults(busy_first=1, retry_after_s=3600))
    try:
        start = clock.monotonic_ns()
        d = uplink(server.url, clock).deliver(seal(keys, clock), wait_s=60)
    finally:
        server.stop()
    assert d.outcome == "accepted"
    assert (clock.monotonic_ns() - start) / 1e9 == pytest.approx(RetryPolicy().retry_after_cap_s, abs=0.01)


@pytest.mark.parametrize(
    ("how", "status", "error"),
    [
        ("unknown device", 401, "unauthenticated"),
        ("bad signature", 401, "unauthenticated"),
        ("stale", 400, "stale"),
        ("unknown recipient", 422, "undecryptable"),
    ],
)
def test_other_4xx_are_never_retried(
    keys: Keys, server: IngestServer, clock: FakeClock, how: str, status: int, error: str
) -> None:
    import dataclasses
    import time

    other = new_keys()
    if how == "unknown device":
        capture = seal(keys, clock, device_id="stranger-1")
    elif how == "bad signature":
        capture = seal(other, clock)  # signed by another device's key under our device id
    elif how == "stale":
        capture = seal(keys, clock, wall_clock=lambda: time.time() - 400)
    else:
        capture = seal(keys, clock, recipient=recipient_public(other.recipient.public_raw))
    d = uplink(server.url, clock).deliver(capture, wait_s=30)
    assert (d.outcome, d.status, d.error, d.attempts) == ("rejected", status, error, 1)
    assert len(seen(server)) == 1
    assert dataclasses.asdict(d)["detail"]


def test_a_capture_over_the_size_limit_is_not_sent(
    keys: Keys, server: IngestServer, clock: FakeClock
) -> None:
    import dataclasses

    big = dataclasses.replace(seal(keys, clock), sealed=bytes(9 * 1024 * 1024))
    d = uplink(server.url, clock).deliver(big, wait_s=5)
    assert (d.outcome, d.error) == ("rejected", "too_large")
    assert seen(server) == []


def tls_context(ca: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ca.cert_pem, ca.key_pem)
    return ctx


def test_tls_with_a_private_ca_and_a_pin(keys: Keys, clock: FakeClock, tmp_path: Path) -> None:
    a = make_ca(tmp_path, "a")
    b = make_ca(tmp_path, "b")
    wrong_host = make_ca(tmp_path, "h", host="ingest.example.com")
    server = serve(keys, tls=tls_context(a))
    other = serve(keys, tls=tls_context(wrong_host))
    try:
        pin_a = hashlib.sha256(a.cert_der).hexdigest()
        pin_b = hashlib.sha256(b.cert_der).hexdigest()
        outcomes = {
            "right CA": uplink(server.url, clock, ca=a.ca_pem).deliver(seal(keys, clock), wait_s=5),
            "right CA and pin": uplink(server.url, clock, ca=a.ca_pem, pin=pin_a).deliver(
                seal(keys, clock), wait_s=5
            ),
            "wrong CA": uplink(server.url, clock, ca=b.ca_pem).deliver(seal(keys, clock), wait_s=5),
            "system store": uplink(server.url, clock).deliver(seal(keys, clock), wait_s=5),
            "wrong pin": uplink(server.url, clock, ca=a.ca_pem, pin=pin_b).deliver(
                seal(keys, clock), wait_s=5
            ),
            "pin but wrong CA": uplink(server.url, clock, ca=b.ca_pem, pin=pin_a).deliver(
                seal(keys, clock), wait_s=5
            ),
            "wrong host": uplink(other.url, clock, ca=wrong_host.ca_pem).deliver(seal(keys, clock), wait_s=5),
        }
    finally:
        server.stop()
        other.stop()
    assert outcomes["right CA"].outcome == "accepted"
    assert outcomes["right CA and pin"].outcome == "accepted"
    for name in ("wrong CA", "system store", "wrong pin", "pin but wrong CA", "wrong host"):
        assert (outcomes[name].outcome, outcomes[name].attempts) == ("tls", 1), name  # never retried
    assert "not the pinned" in (outcomes["wrong pin"].detail or "")
    assert len(seen(server)) == 2  # nothing reached the server but the two good captures
    assert seen(other) == []


def test_the_environment_cannot_weaken_the_session(
    keys: Keys, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_ca(tmp_path, "a")
    server = serve(keys, tls=tls_context(a))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(a.ca_pem))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(a.ca_pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(a.ca_pem))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    try:
        trusted_by_env = uplink(server.url, clock).deliver(seal(keys, clock), wait_s=5)
        configured = uplink(server.url, clock, ca=a.ca_pem).deliver(seal(keys, clock), wait_s=5)
    finally:
        server.stop()
    assert trusted_by_env.outcome == "tls"  # a CA named only in the environment is not trusted
    assert configured.outcome == "accepted"  # and the proxy variables were not followed


class Listener:
    """A TCP server on 127.0.0.1 in a thread, handing each connection to ``took``."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.took(conn)

    def took(self, conn: socket.socket) -> None:
        raise NotImplementedError

    @staticmethod
    def read_request(conn: socket.socket) -> None:
        """Read one request, its headers and its Content-Length of body, as a server would."""
        got = b""
        while b"\r\n\r\n" not in got:
            got += conn.recv(65536)
        head, _, rest = got.partition(b"\r\n\r\n")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
        )
        while len(rest) < length:
            rest += conn.recv(65536)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


class Silent(Listener):
    """A server that accepts connections, reads, and never answers."""

    def __init__(self) -> None:
        self.conns: list[socket.socket] = []
        self.accepts = 0
        super().__init__()

    def took(self, conn: socket.socket) -> None:
        self.accepts += 1
        self.conns.append(conn)

    def close(self) -> None:
        super().close()
        for c in self.conns:
            c.close()


def test_a_server_that_never_answers_times_out_and_the_capture_waits(keys: Keys, clock: FakeClock) -> None:
    silent = Silent()
    try:
        up = uplink(silent.url, clock)
        d = up.deliver(seal(keys, clock), wait_s=1.0)
    finally:
        silent.close()
    assert d.outcome == "pending" and d.attempts >= 2
    assert d.error == "unreachable" and "timed out" in (d.detail or "")  # says why it still waits
    assert silent.accepts == d.attempts
    assert len(up.outbox) == 1  # sealed, in memory, waiting


def test_a_cloud_down_longer_than_the_time_to_live(keys: Keys, clock: FakeClock) -> None:
    s = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()  # nothing listens there now
    up = uplink(url, clock, ttl_s=20)
    start = clock.monotonic_ns()
    d = up.deliver(seal(keys, clock), wait_s=300)
    assert d.outcome == "expired" and d.attempts > 3
    assert (clock.monotonic_ns() - start) / 1e9 <= 20
    assert up.outbox.dropped["expired"] == 1 and len(up.outbox) == 0
    assert up.counts["expired"] == 1


def test_pending_captures_are_flushed_when_the_cloud_returns(keys: Keys, clock: FakeClock) -> None:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    up = uplink(f"http://127.0.0.1:{port}", clock)
    first, second = seal(keys, clock), seal(keys, clock)
    waiting = up.deliver(first, wait_s=0.5)
    assert (waiting.outcome, waiting.error) == ("pending", "unreachable")
    assert "refused" in (waiting.detail or "")
    assert up.deliver(second, wait_s=0.5).outcome == "pending"
    ingest = RecordingIngest(recipients=[keys.recipient], devices={DEVICE_ID: keys.device.public_key()})
    server = IngestServer(ingest, port=port).start()
    try:
        clock.advance(10)
        done = up.flush(budget_s=5)
    finally:
        server.stop()
    assert sorted(d.capture_id for d in done) == sorted([first.capture_id, second.capture_id])
    assert all(d.outcome == "accepted" for d in done) and len(up.outbox) == 0


def test_garbage_replies_are_never_taken_for_acceptance(keys: Keys, clock: FakeClock) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Garbage(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b"<html>welcome to the shop wifi</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        up = uplink(f"http://127.0.0.1:{httpd.server_address[1]}", clock, ttl_s=10)
        d = up.deliver(seal(keys, clock), wait_s=60)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert d.outcome == "expired" and d.error == "bad_reply" and d.attempts > 1


def test_plain_http_only_to_loopback(clock: FakeClock) -> None:
    with pytest.raises(UplinkError, match="only for a loopback"):
        Uplink(endpoint="http://ingest.example.com", session=requests.Session(), clock=clock, outbox=Outbox())


def test_outbox_bounds_drop_the_oldest_and_count(keys: Keys, clock: FakeClock) -> None:
    box = Outbox(max_count=3, max_bytes=10**9, ttl_s=120)
    caps = [seal(keys, clock) for _ in range(5)]
    for c in caps:
        box.add(c)
    assert len(box) == 3 and box.dropped["overflow"] == 2
    assert caps[0].capture_id not in box and caps[4].capture_id in box
    small = Outbox(max_count=100, max_bytes=int(caps[0].size * 2.5), ttl_s=120)
    for c in caps:
        small.add(c)
    assert len(small) == 2 and small.dropped["overflow"] == 3
    clock.advance(121)
    assert small.expire(clock.monotonic_ns()) == 2 and small.dropped["expired"] == 2


def test_a_slow_cloud_times_out_and_the_retry_gets_through(keys: Keys, clock: FakeClock) -> None:
    server = serve(keys, faults=Faults(slow_first=1, slow_s=1.0))
    try:
        d = uplink(server.url, clock).deliver(seal(keys, clock), wait_s=30)
        assert server.wait_for_lines(2, timeout_s=10)
    finally:
        server.stop()
    assert (d.outcome, d.attempts) == ("accepted", 2)  # the first attempt hit the 0.3 s read timeout
    assert len(set(seen(server))) == 1
    # The slow first request was still taken, later: the same bytes make it a duplicate, not a second capture.
    assert [line["status"] for line in server.lines] == [201, 200]


class Dripper(Listener):
    """A hostile server: reads the request, then sends its answer a few bytes at a time, each
    sooner than the read timeout (so no single read ever times out), or a huge body fast. It
    records how long each connection stayed open before the client let go."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.held_s: list[float] = []
        super().__init__()

    def took(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        import time

        start = time.monotonic()
        conn.settimeout(30)
        try:
            self.read_request(conn)
            if self.mode == "headers":
                answer = (
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n" + b"X-Drip: x\r\n" * 500
                )
                for i in range(len(answer)):
                    conn.sendall(answer[i : i + 1])
                    time.sleep(0.1)
            elif self.mode == "body":
                conn.sendall(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
                )
                for _ in range(60000):
                    conn.sendall(b" ")
                    time.sleep(0.1)
            elif self.mode == "huge":
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n")
                for _ in range(100_000):  # 6.5 GB if it were all read
                    conn.sendall(b"{" * 65536)
        except OSError:
            pass  # the client let go: what is measured
        finally:
            self.held_s.append(time.monotonic() - start)
            conn.close()


@pytest.mark.parametrize("mode", ["headers", "body", "huge"])
def test_a_hostile_server_holds_an_attempt_no_longer_than_its_deadline(keys: Keys, mode: str) -> None:
    """The review's case: the 10 s deadline was checked only between 4 KiB chunks, so headers or a
    body dripped a byte every few seconds held one upload for over 600 s. Now the deadline, on the
    clock, shuts the connection down whatever it is waiting for. (The scanner's own clock here:
    the attempts take real time.)"""
    from device.clock import MonotonicClock

    clock = MonotonicClock()
    dripper = Dripper(mode)
    policy = RetryPolicy(connect_timeout_s=1.0, read_timeout_s=0.5, attempt_deadline_s=1.0, base_s=0.05)
    try:
        up = uplink(dripper.url, clock, policy=policy)
        d = up.deliver(seal(keys, clock), wait_s=2.5)
        for _ in range(50):  # the server notices the close
            if len(dripper.held_s) >= d.attempts:
                break
            threading.Event().wait(0.1)
    finally:
        dripper.close()
    assert d.outcome == "pending" and d.attempts >= 2, d
    if mode == "huge":  # read up to the cap and judged: not the protocol's reply
        assert d.error == "bad_reply"
    else:
        # the last attempt had only what was left of the delivery's wait
        assert d.error == "deadline" and re.search(r"within the attempt's (1|0\.\d+) s", d.detail or ""), d
    # each connection was let go about when the deadline passed, not when the server finished
    assert len(dripper.held_s) >= d.attempts and max(dripper.held_s) < 4.0, dripper.held_s


def test_many_failed_attempts_keep_the_backoff_at_its_cap() -> None:
    """A cloud that fails fast gets a thousand tries within a time-to-live; 2.0 ** 1024 overflowed."""
    from device.uplink.outbox import Pending

    clock = FakeClock()
    keys = new_keys()
    up = uplink("http://127.0.0.1:9", clock, policy=RetryPolicy(base_s=0.25, max_backoff_s=8.0))
    capture = seal(keys, clock)
    pending = up.outbox.add(capture)
    assert isinstance(pending, Pending)
    pending.attempts = 5000
    up._attempt = lambda c, limit_s=None: _Try(final=False, error="unreachable")  # type: ignore[method-assign]
    assert up._step(pending, clock.monotonic_ns()) is None
    assert 0 <= pending.next_try_ns - clock.monotonic_ns() <= 8e9


def test_healthz_says_stuck_while_an_upload_outlives_its_deadline(keys: Keys, clock: FakeClock) -> None:
    """The deadline shuts the attempt's sockets; what it cannot cut (a name lookup, a driver) must
    still show: /healthz answers 503 "stuck" while an attempt runs past its deadline, 200 again once
    it ends."""
    from device.daemon.status import STUCK_AFTER_S, Metrics

    metrics = Metrics()
    metrics.set(state="serving")
    health: list[tuple[int, dict[str, Any]]] = []

    class Held(requests.Session):
        def post(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
            health.append(metrics.health())  # under way, on time
            clock.advance(FAST.attempt_deadline_s + STUCK_AFTER_S / 2)
            health.append(metrics.health())  # past the deadline, within the grace
            clock.advance(STUCK_AFTER_S)
            health.append(metrics.health())  # held: stuck
            raise requests.exceptions.ConnectionError("let go at last")

    up = Uplink(endpoint="http://127.0.0.1:9", session=Held(), clock=clock, outbox=Outbox(), policy=FAST)
    metrics.watch_upload(up.overdue_s)
    d = up.deliver(seal(keys, clock), wait_s=FAST.attempt_deadline_s)
    assert [code for code, _ in health] == [200, 200, 503], health
    assert health[2][1]["status"] == "stuck" and health[2][1]["upload_overdue_s"] > STUCK_AFTER_S
    assert "palm_up 0" not in metrics.exposition() and metrics.health()[0] == 200
    assert d.outcome == "pending" and up.overdue_s() == 0.0
