"""The reference ingest over HTTP on 127.0.0.1: every status of the protocol, and fuzzed requests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.ingest.server import Faults, Ingest, IngestServer
from device.protocol import multipart
from device.protocol.keys import recipient_public
from device.protocol.seal import SealedCapture, hpke_suite, info_for, signed_message
from tests.helpers import DEVICE_ID, Keys, frames, new_keys

KEYS = new_keys()


@pytest.fixture(scope="module")
def server() -> Iterator[IngestServer]:
    ingest = Ingest(recipients=[KEYS.recipient], devices={DEVICE_ID: KEYS.device.public_key()})
    s = IngestServer(ingest).start()
    yield s
    s.stop()


def capture(keys: Keys = KEYS, **kw: Any) -> SealedCapture:
    return keys.sealer(**kw).seal(frames(2), checks={"test": True}, calibration=None)


def post(
    url: str, envelope: bytes, sealed: bytes, signature: str, key: str, **headers: str
) -> requests.Response:
    body, ctype = multipart.encode(envelope, sealed)
    h = {"Content-Type": ctype, "Palm-Signature": signature, "Idempotency-Key": key, **headers}
    return requests.post(url + "/v1/captures", data=body, headers=h, timeout=10)


def send(url: str, c: SealedCapture) -> requests.Response:
    return post(url, c.envelope, c.sealed, c.signature, c.capture_id)


def resign(envelope: bytes, sealed: bytes, version: int = 2) -> str:
    import base64

    return base64.b64encode(KEYS.device.sign(signed_message(envelope, sealed, version))).decode()


def reseal(plaintext: bytes, envelope: bytes, version: int = 2) -> bytes:
    """``plaintext`` sealed to the ingest's key as a scanner would (KEYS' suite, these labels)."""
    suite = KEYS.recipient.suite
    return hpke_suite(suite).encrypt(
        plaintext, recipient_public(KEYS.recipient.public_raw).key, info=info_for(envelope, version)
    )


def test_accepted_duplicate_and_conflict(server: IngestServer) -> None:
    c = capture()
    r = send(server.url, c)
    assert r.status_code == 201
    assert r.json() == {"capture_id": c.capture_id, "status": "accepted", "result": None}
    r = send(server.url, c)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    # The same capture id with other (validly signed) content is a conflict.
    other = reseal(b"other plaintext", c.envelope)
    r = post(server.url, c.envelope, other, resign(c.envelope, other), c.capture_id)
    assert r.status_code == 409 and r.json()["error"] == "conflict"


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("bad multipart", 400, "malformed"),
        ("idempotency key", 400, "malformed"),
        ("stale", 400, "stale"),
        ("unknown device", 401, "unauthenticated"),
        ("bad signature", 401, "unauthenticated"),
        ("unknown recipient", 422, "undecryptable"),
        ("does not open", 422, "undecryptable"),
        ("bad archive", 400, "malformed"),
    ],
)
def test_every_error_status(server: IngestServer, name: str, status: int, error: str) -> None:
    c = capture()
    if name == "bad multipart":
        r = requests.post(
            server.url + "/v1/captures",
            data=b"--x\r\n",
            timeout=10,
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
    elif name == "idempotency key":
        r = post(server.url, c.envelope, c.sealed, c.signature, "not-the-id")
    elif name == "stale":
        r = send(server.url, capture(wall_clock=lambda: time.time() - 301))
    elif name == "unknown device":
        r = send(server.url, capture(device_id="nobody"))
    elif name == "bad signature":
        r = send(server.url, capture(new_keys()))
    elif name == "unknown recipient":
        r = send(server.url, capture(recipient=recipient_public(new_keys().recipient.public_raw)))
    elif name == "does not open":
        junk = bytes(range(256))
        r = post(server.url, c.envelope, junk, resign(c.envelope, junk), c.capture_id)
    else:
        sealed = reseal(b"not a tar archive" * 40, c.envelope)
        r = post(server.url, c.envelope, sealed, resign(c.envelope, sealed), c.capture_id)
    assert r.status_code == status
    assert r.json()["error"] == error and r.json()["detail"]


def test_too_large_busy_and_wrong_paths(server: IngestServer) -> None:
    r = requests.post(
        server.url + "/v1/captures",
        data=bytes(8 * 1024 * 1024 + 1),
        timeout=30,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert requests.get(server.url + "/v1/captures", timeout=5).status_code == 405
    assert requests.post(server.url + "/v1/other", data=b"", timeout=5).status_code == 404
    busy = IngestServer(
        Ingest(recipients=[KEYS.recipient], devices={}, faults=Faults(busy_first=1, retry_after_s=7))
    ).start()
    try:
        r = requests.post(busy.url + "/v1/captures", data=b"x", timeout=5)
    finally:
        busy.stop()
    assert r.status_code == 503 and r.headers["Retry-After"] == "7" and r.json()["error"] == "busy"


def test_log_lines_say_who_and_what_but_never_pixels(server: IngestServer) -> None:
    c = capture()
    send(server.url, c)
    line = next(line for line in server.lines if line.get("capture_id") == c.capture_id)
    assert set(line) == {"time", "status", "capture_id", "device", "roles", "sizes", "ms", "v", "suite"}
    assert line["roles"] == ["flood", "ambient"] and line["sizes"] == [[320, 320], [320, 320]]
    assert (line["v"], line["suite"]) == (2, "XWING-SHA256-AES256GCM")
    assert len(json.dumps(line)) < 400
    assert KEYS.recipient.kid not in json.dumps(server.lines)


def _valid_body() -> tuple[bytes, dict[str, str]]:
    c = capture()
    body, ctype = multipart.encode(c.envelope, c.sealed)
    return body, {"Content-Type": ctype, "Palm-Signature": c.signature, "Idempotency-Key": c.capture_id}


VALID_BODY, VALID_HEADERS = _valid_body()
VALID_PARTS = multipart.decode(VALID_BODY, VALID_HEADERS["Content-Type"])

HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)

# Small descriptions of a malformed request; the test builds it (the bodies are too big to print).
mutations = st.one_of(
    st.tuples(st.just("random body"), st.binary(max_size=2048)),
    st.tuples(st.just("flip"), st.integers(0, len(VALID_BODY) - 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(VALID_BODY) - 1)),
    st.tuples(st.just("header"), st.sampled_from(sorted(VALID_HEADERS)), HEADER_TEXT),
    st.tuples(st.just("drop header"), st.sampled_from(sorted(VALID_HEADERS))),
    st.tuples(st.just("splice"), st.integers(0, len(VALID_BODY) - 1), st.binary(min_size=1, max_size=64)),
)


def build(case: tuple[Any, ...]) -> tuple[bytes, dict[str, str]]:
    kind, *args = case
    headers = dict(VALID_HEADERS)
    if kind == "random body":
        return args[0], headers
    if kind == "flip":
        i, x = args
        return VALID_BODY[:i] + bytes([VALID_BODY[i] ^ x]) + VALID_BODY[i + 1 :], headers
    if kind == "truncate":
        return VALID_BODY[: args[0]], headers
    if kind == "header":
        headers[args[0]] = args[1]
        return VALID_BODY, headers
    if kind == "drop header":
        del headers[args[0]]
        return VALID_BODY, headers
    i, extra = args
    return VALID_BODY[:i] + extra + VALID_BODY[i:], headers


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutations)
def test_fuzzed_requests_get_a_4xx_never_a_5xx(server: IngestServer, case: tuple[Any, ...]) -> None:
    body, headers = build(case)
    r = requests.post(server.url + "/v1/captures", data=body, headers=headers, timeout=10)
    if r.status_code in (200, 201):
        # Only a request that still means exactly the valid capture may succeed.
        assert multipart.decode(body, headers.get("Content-Type", "")) == VALID_PARTS
        assert headers.get("Palm-Signature") == VALID_HEADERS["Palm-Signature"]
        assert headers.get("Idempotency-Key") == VALID_HEADERS["Idempotency-Key"]
        return
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.json()["error"]


def test_the_ingest_still_serves_after_the_fuzzing(server: IngestServer) -> None:
    assert send(server.url, capture()).status_code == 201


def test_the_ingest_takes_the_bodies_of_clients_we_did_not_write(
    server: IngestServer, tmp_path: Path
) -> None:
    """The protocol's "Receivers accept any RFC 7578 encoding": requests' files= (a filename on
    every part; with bare bytes, no part Content-Type) and curl -F, each its own multipart writer."""
    import shutil
    import subprocess

    def headers(c: SealedCapture) -> dict[str, str]:
        return {"Palm-Signature": c.signature, "Idempotency-Key": c.capture_id}

    c = capture()
    typed = {
        "envelope": ("envelope.json", c.envelope, "application/json"),
        "sealed": ("sealed.bin", c.sealed, "application/octet-stream"),
    }
    r = requests.post(server.url + "/v1/captures", files=typed, headers=headers(c), timeout=10)
    assert r.status_code == 201, r.text
    c = capture()
    r = requests.post(
        server.url + "/v1/captures",
        files={"sealed": c.sealed, "envelope": c.envelope},
        headers=headers(c),
        timeout=10,
    )
    assert r.status_code == 201, r.text
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (.ci/run installs it)")
    c = capture()
    (tmp_path / "e.json").write_bytes(c.envelope)
    (tmp_path / "s.bin").write_bytes(c.sealed)  # ciphertext: nothing here can open it
    form = [
        "-F", f"envelope=@{tmp_path / 'e.json'};type=application/json",
        "-F", f"sealed=@{tmp_path / 's.bin'};type=application/octet-stream",
        "-H", f"Palm-Signature: {c.signature}",
        "-H", f"Idempotency-Key: {c.capture_id}",
    ]  # fmt: skip
    out = subprocess.run(
        [curl, "-sS", "-o", "-", "-w", "\n%{http_code}", *form, server.url + "/v1/captures"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "201" and json.loads(body)["capture_id"] == c.capture_id, out.stdout
