"""The till's API over real HTTPS on 127.0.0.1, with a client that pins the scanner's certificate
fingerprint (the standard library's http.client and ssl; and curl where present): arming, states in
order, events, cancel, timeout, busy, a wrong token, a malformed body, a till that vanishes."""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.clock import FakeClock
from device.errors import KeyFileError
from device.till.api import TillAPI
from device.till.checkouts import CheckoutError, Checkouts
from device.till.tills import Tills, server_context, tls_files


class Pinned:
    """A till: HTTPS to the scanner, trusting only the certificate whose SHA-256 it was given."""

    def __init__(self, port: int, token: str, fingerprint: str, cert: Path | None = None) -> None:
        self.port, self.token, self.fingerprint = port, token, fingerprint
        if cert is None:  # as a till set up with the fingerprint alone: fetch, check, then trust only it
            pem = ssl.get_server_certificate(("127.0.0.1", port))
            assert hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest() == fingerprint
            self.ctx = ssl.create_default_context(cadata=pem)
        else:
            self.ctx = ssl.create_default_context(cafile=str(cert))  # the self-signed certificate alone

    def connect(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=10)
        conn.connect()
        der = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert hashlib.sha256(der).hexdigest() == self.fingerprint, "not the pinned scanner"
        return conn

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        conn = self.connect()
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        conn.close()
        return r.status, json.loads(raw) if raw else None


@pytest.fixture
def scanner(tmp_path: Path) -> Iterator[tuple[TillAPI, Pinned, FakeClock, list[dict[str, Any]]]]:
    clock = FakeClock()
    tills = Tills(tmp_path)
    token = tills.add("till-1")
    key, cert, fp = tls_files(tmp_path, ["127.0.0.1"])
    events: list[dict[str, Any]] = []
    api: TillAPI

    def emit(e: dict[str, Any]) -> None:
        events.append(e)
        api.publish(e)

    checkouts = Checkouts(clock=clock, wall=time.time, emit=emit)
    device = {"id": "store-0042-lane-3", "firmware": "test", "protocol": 2, "status": "ready"}
    api = TillAPI(checkouts=checkouts, tills=tills, device=lambda: device, tls=server_context(cert, key))
    with api:
        yield api, Pinned(api.port, token, fp, cert), clock, events


def test_a_till_arms_follows_and_gets_the_result(scanner: Any) -> None:
    api, till, _, events = scanner
    status, c = till.call("POST", "/v1/checkouts", {"checkout_id": "sale:0042.7", "timeout_s": 30})
    assert status == 201 and c["state"] == "armed" and c["result"] is None
    assert till.call("POST", "/v1/checkouts", {"checkout_id": "sale:0042.7", "timeout_s": 30}) == (
        201,
        c,
    )  # idempotent
    busy = till.call("POST", "/v1/checkouts", {"checkout_id": "sale:0043", "timeout_s": 30})
    assert busy[0] == 409 and busy[1]["error"] == "busy"
    # the scanner's side moves it on; the till reads each state
    current = api.checkouts.current()
    for state, kw in (
        ("guiding", {"reasons": ["move_closer"]}),
        ("capturing", {}),
        ("sent", {"capture_id": "01a2"}),
    ):
        assert api.checkouts.advance(current, state, **kw)
        assert till.call("GET", "/v1/checkouts/sale:0042.7")[1]["state"] == state
    assert api.checkouts.advance(current, "accepted", result={"match": "token-abc"})
    final = till.call("GET", "/v1/checkouts/sale:0042.7")[1]
    assert (
        final["state"] == "accepted"
        and final["result"] == {"match": "token-abc"}
        and final["capture_id"] == "01a2"
    )
    assert [e["state"] for e in events] == ["armed", "guiding", "capturing", "sent", "accepted"]
    assert events[1]["reasons"] == ["move_closer"] and all(e["till"] == "till-1" for e in events)
    # final: a new checkout may be armed, and the old one cannot be cancelled
    assert till.call("DELETE", "/v1/checkouts/sale:0042.7")[0] == 409
    assert till.call("POST", "/v1/checkouts", {"checkout_id": "sale:0043", "timeout_s": 5})[0] == 201
    assert "pixels" not in json.dumps(events) and till.call("GET", "/v1/device")[1]["status"] == "ready"


def test_cancel_and_timeout(scanner: Any) -> None:
    api, till, clock, _ = scanner
    till.call("POST", "/v1/checkouts", {"checkout_id": "c1", "timeout_s": 10})
    status, c = till.call("DELETE", "/v1/checkouts/c1")
    assert status == 200 and c["state"] == "cancelled" and api.checkouts.current() is None
    till.call("POST", "/v1/checkouts", {"checkout_id": "c2", "timeout_s": 10})
    clock.advance(10.5)
    c = till.call("GET", "/v1/checkouts/c2")[1]
    assert c["state"] == "timed_out" and c["reasons"]
    assert api.checkouts.finished == {"cancelled": 1, "timed_out": 1}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{", 400, "not valid JSON"),
        (b"[" * 1000 + b"]" * 1000, 400, "nests"),
        ({"checkout_id": "has space", "timeout_s": 30}, 400, "checkout_id"),
        ({"checkout_id": "x" * 65, "timeout_s": 30}, 400, "checkout_id"),
        ({"checkout_id": "c", "timeout_s": 4}, 400, "timeout_s"),
        ({"checkout_id": "c", "timeout_s": True}, 400, "timeout_s"),
        ({"checkout_id": "c", "timeout_s": 30, "amount": 5}, 400, "unknown field"),
        ([1, 2], 400, "JSON object"),
        (b"x" * 5000, 413, "at most"),
    ],
)
def test_a_malformed_body_is_named(scanner: Any, body: Any, status: int, says: str) -> None:
    _, till, _, _ = scanner
    got, answer = till.call("POST", "/v1/checkouts", body)
    assert got == status and says in answer["detail"], answer


def test_a_wrong_token_is_refused_and_slowed(scanner: Any) -> None:
    _, till, _, _ = scanner
    times = []
    for _ in range(6):
        t = time.monotonic()
        status, answer = till.call("GET", "/v1/device", token="palm_till_guess")
        times.append(time.monotonic() - t)
        assert status == 401 and answer["error"] == "unauthenticated"
    assert till.call("GET", "/v1/device")[0] == 200  # the right token still works, and resets the count
    assert times[-1] > times[0]  # the sixth guess waited longer than the first (1 s against none)


def test_events_stream_and_a_till_that_vanishes(scanner: Any) -> None:
    api, till, _, _ = scanner
    conn = till.connect()
    conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {till.token}"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    assert r.fp.readline().startswith(b": palm-scanner events")
    r.fp.readline()
    till.call("POST", "/v1/checkouts", {"checkout_id": "c9", "timeout_s": 30})
    assert r.fp.readline() == b"event: checkout\n"
    data = json.loads(r.fp.readline().removeprefix(b"data: "))
    assert data["checkout_id"] == "c9" and data["state"] == "armed"
    r.close()  # the till vanishes mid-checkout
    conn.close()
    c = api.checkouts.current()
    assert api.checkouts.advance(c, "capturing")  # the scanner goes on regardless
    assert till.call("GET", "/v1/checkouts/c9")[1]["state"] == "capturing"


def test_curl_pins_the_certificate_too(scanner: Any, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (.ci/run installs it)")
    _, till, _, _ = scanner
    out = subprocess.run(
        [curl, "-sS", "--cacert", str(tmp_path / "till-tls-cert.pem"),
         "-H", f"Authorization: Bearer {till.token}",
         "-H", "Content-Type: application/json", "-d", '{"checkout_id": "curl-1", "timeout_s": 20}',
         f"https://127.0.0.1:{till.port}/v1/checkouts"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0 and json.loads(out.stdout)["state"] == "armed", out


def test_tokens_are_kept_only_as_hashes(tmp_path: Path) -> None:
    tills = Tills(tmp_path)
    token = tills.add("till-2")
    text = (tmp_path / "tills.json").read_text()
    assert token not in text and hashlib.sha256(token.encode()).hexdigest() in text
    assert (tmp_path / "tills.json").stat().st_mode & 0o777 == 0o600
    assert tills.verify(token) == "till-2" and tills.verify(token + "x") is None
    with pytest.raises(KeyFileError, match="exists"):
        tills.add("till-2")
    with pytest.raises(KeyFileError, match="not 1 to 64"):
        tills.add("bad name")
    tills.remove("till-2")
    assert tills.verify(token) is None and tills.names() == []


def test_the_checkout_state_machine_refuses_what_a_checkout_does_not_do() -> None:
    clock = FakeClock()
    c = Checkouts(clock=clock, wall=time.time)
    one = c.arm("t", {"checkout_id": "a"})
    assert one.timeout_s == 30
    assert not c.advance(one, "accepted")  # not from armed
    with pytest.raises(CheckoutError, match="another till"):
        c.arm("u", {"checkout_id": "a"})
    assert c.advance(one, "capturing") and c.advance(one, "sent") and c.advance(one, "not_accepted")
    assert not c.advance(one, "capturing") and c.current() is None


def test_silent_connections_are_let_go_and_a_till_gets_in(scanner: Any) -> None:
    """20 connections that never start TLS take the 16 slots; each is let go 10 s after it opened,
    so a till that retries gets in soon after, and the scanner never holds more than 16."""
    _, till, _, _ = scanner
    silent = [socket.create_connection(("127.0.0.1", till.port)) for _ in range(20)]
    start = time.monotonic()
    status = None
    try:
        while time.monotonic() - start < 30 and status is None:
            try:
                status, _ = till.call("GET", "/v1/device")
            except (OSError, http.client.HTTPException):
                time.sleep(0.5)
    finally:
        for s in silent:
            s.close()
    waited = time.monotonic() - start
    print(f"a till got in {waited:.1f} s after 20 silent connections")
    assert status == 200 and waited < 14, waited


def test_palm_till_add_list_remove(tmp_path: Path) -> None:
    import sys

    def palm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "device", "till", *args, "--state-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    added = palm("add", "till-7", "--json")
    assert added.returncode == 0, added.stderr
    line = json.loads(added.stdout)
    assert set(line) == {"till", "token", "fingerprint_sha256"} and line["till"] == "till-7"
    assert Tills(tmp_path).verify(line["token"]) == "till-7"
    assert line["fingerprint_sha256"] == tls_files(tmp_path, ["127.0.0.1"])[2]  # made once, the same after
    assert "till-7" in palm("list").stdout and line["token"] not in palm("list").stdout
    again = palm("add", "till-7")
    assert again.returncode == 78 and "exists" in again.stderr and "Traceback" not in again.stderr
    assert palm("remove", "till-7").returncode == 0 and Tills(tmp_path).verify(line["token"]) is None
    nowhere = ["--state-dir", str(tmp_path / "none")]
    missing = subprocess.run([sys.executable, "-m", "device", "till", "add", "x", *nowhere],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "no such folder" in missing.stderr
