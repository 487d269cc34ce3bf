"""`palm ingest` (waitress, device/ingest/wsgi.py) under the review's hostile requests, over real
HTTP, as a process of its own whose memory is read from /proc: each fault is answered with a 4xx
or cut off, in bounded time and memory, and a real capture still goes through afterwards."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from device.protocol import multipart
from device.protocol.keys import recipient_public, xwing_pem
from device.protocol.seal import SealedCapture, hpke_suite, info_for, signed_message
from tests.helpers import DEVICE_ID, Keys, frames, new_keys
from tests.test_protocol import _png_raw, manifest, tar_of

SEED = bytes(range(32))


@pytest.fixture(scope="module")
def keys() -> Keys:
    from device.protocol.keys import xwing_from_seed

    k = new_keys()
    return Keys(k.device, xwing_from_seed(SEED))


class Running:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url

    def kib(self, field: str = "VmRSS") -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1))  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def ingest(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    d = tmp_path_factory.mktemp("ingest")
    key = d / "cloud.pem"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, xwing_pem(SEED))
    os.close(fd)
    err = (d / "stderr").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "device", "ingest", "--port", "0", "--recipient-key", str(key),
         "--device", f"{DEVICE_ID}={keys.device_pub_b64}"],
        stdout=subprocess.PIPE, stderr=err, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    m = re.search(r"on (http://[0-9.]+:\d+)/v1/captures", first)
    assert m, (first, (d / "stderr").read_text())
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()  # its log lines drained: a full pipe would stop the ingest
    try:
        yield Running(proc, m.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)
        proc.stdout.close()
        err.close()
    assert "Traceback" not in (d / "stderr").read_text() + "".join(lines)


def capture(keys: Keys) -> SealedCapture:
    return keys.sealer().seal(frames(2), checks={"test": True}, calibration=None)


def post_capture(
    url: str,
    c: SealedCapture,
    envelope: bytes | None = None,
    sealed: bytes | None = None,
    keys: Keys | None = None,
) -> requests.Response:
    e, s = envelope or c.envelope, sealed or c.sealed
    sig = c.signature
    if keys is not None:  # re-signed over what is sent, so the fault reaches the step it is for
        sig = base64.b64encode(keys.device.sign(signed_message(e, s, 2))).decode()
    body, ctype = multipart.encode(e, s)
    headers = {"Content-Type": ctype, "Palm-Signature": sig, "Idempotency-Key": c.capture_id}
    return requests.post(url + "/v1/captures", data=body, headers=headers, timeout=30)


def sealed_plaintext(keys: Keys, c: SealedCapture, plaintext: bytes) -> bytes:
    pub = recipient_public(keys.recipient.public_raw)
    return hpke_suite(pub.suite).encrypt(plaintext, pub.key, info=info_for(c.envelope, 2))


def raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    return s


def request_head(length: int) -> bytes:
    return (
        b"POST /v1/captures HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


def held_open_s(s: socket.socket, limit_s: float = 30) -> float:
    """How long the server keeps a connection that sends nothing more, until it closes it."""
    start = time.monotonic()
    s.settimeout(limit_s)
    try:
        while s.recv(65536):
            pass
    except (TimeoutError, OSError):
        pass
    return time.monotonic() - start


def test_the_ingest_takes_a_real_capture(ingest: Running, keys: Keys) -> None:
    c = capture(keys)
    r = post_capture(ingest.url, c)
    assert r.status_code == 201 and r.json()["capture_id"] == c.capture_id, r.text
    again = post_capture(ingest.url, c)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


@pytest.mark.parametrize(
    ("what", "envelope"),
    [
        ("an envelope nested 100000 deep", b"[" * 100_000 + b"]" * 100_000),
        ("an envelope with a 4301-digit number", b'{"device_id": "x", "v": ' + b"9" * 4301 + b"}"),
        ("an envelope of NaN", b'{"device_id": "x", "v": NaN}'),
    ],
)
def test_json_that_crashed_the_handler_is_a_400(
    ingest: Running, keys: Keys, what: str, envelope: bytes
) -> None:
    r = post_capture(ingest.url, capture(keys), envelope=envelope)
    assert r.status_code == 400 and r.json()["error"] == "malformed", (what, r.text)


def test_archive_bombs_are_refused(ingest: Running, keys: Keys) -> None:
    """A signed capture whose archive holds a PNG header of 8 x 8 over data for 4096 x 4096, and
    one whose member is PAX sparse and claims 1 TiB: both 400 malformed, the memory unmoved."""
    before = ingest.kib()
    c = capture(keys)
    bomb = _png_raw(8, 8, __import__("zlib").compress(bytes(4096 * 4097)))
    plain = tar_of(
        [("manifest.json", manifest(["flood", "ambient"])), ("flood.png", bomb), ("ambient.png", bomb)]
    )
    r = post_capture(ingest.url, c, sealed=sealed_plaintext(keys, c, plain), keys=keys)
    assert r.status_code == 400 and "inflates to more than" in r.json()["detail"], r.text
    c = capture(keys)
    sparse = tarfile.TarInfo("GNUSparseFile.0/flood.png")
    sparse_map = b"1\n0\n512\n".ljust(512, b"\0")
    sparse.size = len(sparse_map) + 512
    sparse.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "flood.png",
        "GNU.sparse.realsize": str(1 << 40),
    }
    m = manifest(["flood", "ambient"])
    first = tarfile.TarInfo("manifest.json")
    first.size = len(m)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(first, io.BytesIO(m))
        tar.addfile(sparse, io.BytesIO(sparse_map + bytes(512)))
    r = post_capture(ingest.url, c, sealed=sealed_plaintext(keys, c, buf.getvalue()), keys=keys)
    assert r.status_code == 400 and "sparse" in r.json()["detail"], r.text
    assert ingest.kib() - before < 64 * 1024  # KiB: nothing near 1,343 MB


def test_a_body_shorter_than_its_length_and_a_dripped_header_are_cut(ingest: Running) -> None:
    """The review's cases: a body shorter than its Content-Length held a thread 15 s unanswered; a
    header sent a byte every 10 s kept its connection open. Both are cut once idle for IDLE_S."""
    from device.ingest.wsgi import IDLE_S

    short = raw_connection(ingest.url)
    short.sendall(request_head(5000) + b"x" * 100)
    held = held_open_s(short)
    dripped = raw_connection(ingest.url)
    dripped.sendall(b"POST /v1/captures HTTP/1.1\r\nHo")
    held_drip = held_open_s(dripped)
    for s in (short, dripped):
        s.close()
    print(f"short body held {held:.1f} s, dripped header {held_drip:.1f} s (idle limit {IDLE_S} s)")
    assert held < IDLE_S + 3 and held_drip < IDLE_S + 3, (held, held_drip)


def test_sixty_stalled_uploads_of_8_mib_stay_within_bounded_memory(ingest: Running, keys: Keys) -> None:
    """The review's case: 60 stalled uploads of 8 MiB took the server from 74 to 554 MB. waitress
    takes at most MAX_CONNECTIONS at once and cuts each idle one; the rest wait in the backlog."""
    from device.ingest.wsgi import IDLE_S, MAX_CONNECTIONS

    before = ingest.kib()
    head = request_head(8 * 1024 * 1024)
    conns = [raw_connection(ingest.url) for _ in range(60)]

    def stall(s: socket.socket) -> None:
        s.settimeout(3 * IDLE_S)
        with contextlib.suppress(OSError):  # cut by the server, or blocked until our timeout
            s.sendall(head + bytes(8 * 1024 * 1024 - 4096))  # all but the last 4 KiB, then nothing

    senders = [threading.Thread(target=stall, args=(s,), daemon=True) for s in conns]
    for t in senders:
        t.start()
    time.sleep(3)
    peak = ingest.kib("VmHWM")
    for t in senders:
        t.join(timeout=4 * IDLE_S)
    for s in conns:
        s.close()
    time.sleep(IDLE_S + 2)
    c = capture(keys)
    r = post_capture(ingest.url, c)
    grown_mb = (peak - before) / 1024
    print(
        f"60 stalled 8 MiB uploads: {before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB "
        f"(+{grown_mb:.0f} MB, at most {MAX_CONNECTIONS} taken at once)"
    )
    assert r.status_code == 201, r.text  # and it still serves
    assert grown_mb < (MAX_CONNECTIONS + 4) * 8 * 1.5, grown_mb
