"""The uplink against a server that answers anything (protocol v2 issue): nested or huge JSON, odd
Retry-After values, redirects, wrong content types, no status line. Each is a counted outcome within
the retry rules, never a crash; a shopper always gets an answer."""

# ruff: noqa: E501 - the table reads best one reply a line

from __future__ import annotations

import json
import socket
import ssl
import threading
from pathlib import Path

import pytest

from device.clock import FakeClock
from tests.helpers import Keys, make_ca, new_keys
from tests.test_uplink import FAST, Listener, seal, tls_context, uplink


@pytest.fixture(scope="module")
def keys() -> Keys:
    return new_keys()


class Canned(Listener):
    """A server that reads each request and answers with the raw bytes it was given (over TLS
    with ``tls``)."""

    def __init__(self, answer: bytes, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        super().__init__()

    @property
    def url(self) -> str:
        return super().url.replace("http://", "https://") if self.tls else super().url

    def took(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.read_request(conn)
            conn.sendall(self.answer)
        except OSError:
            pass
        finally:
            conn.close()


def _reply(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


NESTED = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
HOSTILE_REPLIES = [
    # (what, raw reply, the delivery's outcome, its error)
    ("201 with JSON nested 100000 deep", _reply("201 Created", NESTED[:60000]), "pending", "bad_reply"),
    ("503 with JSON nested 100000 deep", _reply("503 Busy", NESTED[:60000], "Retry-After: 1"), "pending", "http_503"),
    ("400 with JSON nested 100000 deep", _reply("400 Bad", NESTED[:60000]), "rejected", "http_400"),
    ("201 with a 5000-digit number", _reply("201 Created", b'{"capture_id": ' + b"9" * 5000 + b"}"), "pending", "bad_reply"),
    ("503 with Retry-After: \u00b2", _reply("503 Busy", b"{}", "Retry-After: \u00b2".encode().decode("latin-1")), "pending", "http_503"),
    ("503 with Retry-After: 1e999", _reply("503 Busy", b"{}", "Retry-After: 1e999"), "pending", "http_503"),
    ("503 with Retry-After: -5", _reply("503 Busy", b"{}", "Retry-After: -5"), "pending", "http_503"),
    ("503 with a 40-digit Retry-After", _reply("503 Busy", b"{}", "Retry-After: " + "9" * 40), "pending", "http_503"),
    ("503 with Retry-After: a broken date", _reply("503 Busy", b"{}", "Retry-After: Mon, 99 Foo 99999 99:99:99 GMT"), "pending", "http_503"),
    ("503 with a Retry-After date in year 9999", _reply("503 Busy", b"{}", "Retry-After: Fri, 31 Dec 9999 23:59:59 GMT"), "pending", "http_503"),
    ("a redirect to elsewhere", _reply("307 Temporary Redirect", b"", "Location: http://example.com/"), "rejected", "http_307"),
    ("a 301 redirect", _reply("301 Moved", b"", "Location: /v1/other"), "rejected", "http_301"),
    ("201 as text/html", _reply("201 Created", b"<html>ok</html>", "Content-Type: text/html"), "pending", "bad_reply"),
    ("201 with null", _reply("201 Created", b"null"), "pending", "bad_reply"),
    ("201 with invalid UTF-8", _reply("201 Created", b'{"capture_id": "\xff\xfe"}'), "pending", "bad_reply"),
    ("204 No Content", _reply("204 No Content", b""), "rejected", "http_204"),
    ("an HTTP/0.9 answer", b"garbage without a status line\r\n", "pending", "unreachable"),
    ("a status of 999", _reply("999 What", b"{}"), "rejected", "http_999"),
]  # fmt: skip


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    ca = make_ca(tmp_path_factory.mktemp("ca"), "hostile")
    return tls_context(ca), ca.ca_pem


@pytest.mark.parametrize("over", ["http", "tls"])
@pytest.mark.parametrize(
    ("what", "answer", "outcome", "error"), HOSTILE_REPLIES, ids=[r[0] for r in HOSTILE_REPLIES]
)
def test_the_uplink_survives_any_reply(
    keys: Keys,
    clock: FakeClock,
    tls: tuple[ssl.SSLContext, Path],
    over: str,
    what: str,
    answer: bytes,
    outcome: str,
    error: str,
) -> None:
    """The review's cases: nested JSON (201 or 503) and `Retry-After: ²` killed `palm run` mid-upload
    with a traceback. Each reply is now a counted outcome within the retry rules, over plain HTTP
    and over TLS (a private CA the uplink is told to trust)."""
    server = Canned(answer, tls[0] if over == "tls" else None)
    try:
        up = uplink(server.url, clock, ca=tls[1] if over == "tls" else None)
        d = up.deliver(seal(keys, clock), wait_s=0.5)
    finally:
        server.close()
    assert (d.outcome, d.error) == (outcome, error), d
    assert not d.delivered
    if outcome == "pending":  # a retry is scheduled within the policy's cap, whatever Retry-After said
        pending = next(iter(up.outbox._items.values()))
        assert 0 <= pending.next_try_ns - clock.monotonic_ns() <= FAST.retry_after_cap_s * 1e9


def test_a_deep_but_bounded_result_is_passed_on(keys: Keys, clock: FakeClock) -> None:
    capture = seal(keys, clock)
    result = {"token": "abc", "nested": [[[[1]]]]}
    body = json.dumps({"capture_id": capture.capture_id, "status": "accepted", "result": result}).encode()
    server = Canned(_reply("201 Created", body, "Content-Type: application/json"))
    try:
        d = uplink(server.url, clock).deliver(capture, wait_s=0.5)
    finally:
        server.close()
    assert d.delivered and d.result == result
