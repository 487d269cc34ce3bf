"""Protocol version 2's X-Wing suite against parts we did not write: the hybrid-KEM test vectors
shipped with cryptography_vectors (draft-ietf-hpke-pq), and pycryptodome (Crypto.Protocol.HPKE with
Crypto.PublicKey.Hybrid), an independent X-Wing and HPKE, both ways; then a whole receiver built on
pycryptodome alone (its HPKE and its Ed25519, the standard library's MIME parser), served over HTTP
on 127.0.0.1, to which `palm send-test` uploads."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import secrets
import tarfile
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cryptography_vectors
import pytest
from Crypto.Protocol import HPKE
from Crypto.PublicKey import Hybrid
from Crypto.Signature import eddsa
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device import cli
from device.protocol import SUITE_XWING
from device.protocol.keys import b64, new_recipient_key, recipient_public, xwing_from_seed
from device.protocol.seal import ENC_LEN, info_for, open_sealed, signed_message
from tests.helpers import Keys, frames, new_keys

ROOT = Path(__file__).resolve().parents[1]
XWING_KEM_ID = 0x647A


def pq_vectors() -> list[dict[str, Any]]:
    path = Path(cryptography_vectors.__file__).parent / "HPKE" / "hpke-pq-test-vectors.json"
    found = [v for v in json.loads(path.read_text()) if v["kem_id"] == XWING_KEM_ID and v["mode"] == 0]
    assert found, f"no X-Wing vectors in {path}"
    return found


@pytest.mark.parametrize("v", pq_vectors(), ids=lambda v: f"kdf {v['kdf_id']:#x} aead {v['aead_id']:#x}")
def test_the_xwing_vectors_give_our_key_and_open_with_it(v: dict[str, Any]) -> None:
    """The vectors' skRm is X-Wing's 32-byte private seed: the key this scanner's ingest derives from
    it (SHAKE256, ML-KEM-768 from d || z, X25519) must be the vectors' pkRm, and open their first
    encryption. (They have only ChaCha20-Poly1305 entries for 0x647A: AES-256-GCM, this protocol's,
    is checked against pycryptodome below.) Their ``info`` is hex of ASCII hex, used as the bytes."""
    h = bytes.fromhex
    key = xwing_from_seed(h(v["skRm"]))
    assert key.public_raw == h(v["pkRm"]) and len(h(v["enc"])) == ENC_LEN[SUITE_XWING]
    kdf = {1: hpke.KDF.HKDF_SHA256, 0x11: hpke.KDF.SHAKE256}[v["kdf_id"]]
    assert v["aead_id"] == 3
    suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, kdf, hpke.AEAD.CHACHA20_POLY1305)
    e = v["encryptions"][0]  # the single-shot API opens sequence number 0 only
    plain = rust_openssl.hpke._decrypt_with_aad(
        suite, h(v["enc"]) + h(e["ct"]), key.key, info=h(v["info"]), aad=h(e["aad"])
    )
    assert plain == h(e["pt"])


def pycryptodome_key(seed: bytes) -> Any:
    """pycryptodome's X-Wing key from the same 32-byte seed, by its public API."""
    return Hybrid.generate(param_set=Hybrid.MLKEM768_X25519, randfunc=lambda n: seed[:n])


def test_pycryptodome_and_we_derive_the_same_xwing_key_from_a_seed() -> None:
    for seed in (bytes(32), bytes(range(32)), hashlib.sha256(b"palm").digest()):
        ours = xwing_from_seed(seed).public_raw
        theirs = pycryptodome_key(seed).public_key()._pk  # no public export yet ("not public yet")
        assert ours == theirs and len(ours) == 1216


def test_pycryptodome_opens_what_the_scanner_seals_and_the_ingest_opens_what_it_seals() -> None:
    seed = secrets.token_bytes(32)
    keys = Keys(Ed25519PrivateKey.generate(), xwing_from_seed(seed))
    capture = keys.sealer(protocol=2).seal(frames(), checks={"quality": {"score": 0.9}}, calibration=None)
    info = info_for(capture.envelope, 2)
    enc, ct = capture.sealed[:1120], capture.sealed[1120:]
    theirs = HPKE.new(receiver_key=pycryptodome_key(seed), aead_id=HPKE.AEAD.AES256_GCM, enc=enc, info=info)
    plain = theirs.unseal(ct)
    assert plain[257:262] == b"ustar"
    assert plain == open_sealed(
        capture.envelope, capture.sealed, keys.recipient, version=2, suite=SUITE_XWING
    )
    # and back: pycryptodome seals to the 1216-byte public key as the config holds it
    public = Hybrid._construct(param_set=Hybrid.MLKEM768_X25519, pk=keys.recipient.public_raw)
    sender = HPKE.new(receiver_key=public, aead_id=HPKE.AEAD.AES256_GCM, info=info_for(b"E", 2))
    sealed = sender.enc + sender.seal(b"from pycryptodome")
    assert open_sealed(b"E", sealed, keys.recipient, version=2, suite=SUITE_XWING) == b"from pycryptodome"
    # a changed byte of enc or of the envelope does not open on their side either
    with pytest.raises(ValueError):
        HPKE.new(
            receiver_key=pycryptodome_key(seed), aead_id=HPKE.AEAD.AES256_GCM, enc=enc, info=info[:-1] + b"\0"
        ).unseal(ct)


# -- a receiver built on pycryptodome alone -------------------------------------------------------


class PycryptodomeReceiver:
    """Protocol version 2's receiver steps written against the protocol page with pycryptodome's
    HPKE and Ed25519 and the standard library's MIME parser: nothing of this package's own."""

    def __init__(self, seed: bytes, device_id: str, device_public: bytes) -> None:
        self.key = pycryptodome_key(seed)
        self.kid = hashlib.sha256(self.key.public_key()._pk).digest()[:16].hex()
        self.devices = {device_id: eddsa.import_public_key(device_public)}
        self.opened: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, answer = receiver.receive(dict(self.headers), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def receive(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        msg = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body
        )
        parts = {
            p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
            for p in msg.iter_parts()
        }
        e, s = parts["envelope"], parts["sealed"]
        env = json.loads(e)
        sha_e, sha_s = hashlib.sha256(e).digest(), hashlib.sha256(s).digest()
        verifier = eddsa.new(self.devices[env["device_id"]], "rfc8032")
        try:
            verifier.verify(
                b"palm-capture/v2/sig\x00" + sha_e + sha_s, base64.b64decode(headers["Palm-Signature"])
            )
        except ValueError:
            return 401, {"error": "unauthenticated", "detail": "pycryptodome: bad signature"}
        if (env["v"], env["suite"], env["recipient"]) != (2, "XWING-SHA256-AES256GCM", self.kid):
            return 400, {"error": "malformed", "detail": "not a version 2 X-Wing capture to this key"}
        cipher = HPKE.new(
            receiver_key=self.key,
            aead_id=HPKE.AEAD.AES256_GCM,
            enc=s[:1120],
            info=b"palm-capture/v2\x00" + sha_e,
        )
        plain = cipher.unseal(s[1120:])
        with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
            names = tar.getnames()
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert (
            names[0] == "manifest.json"
            and [m["role"] for m in manifest["frames"]] == env["content"]["frames"]
        )
        self.opened.append({"envelope": env, "members": names})
        return 201, {"capture_id": env["capture_id"], "status": "accepted", "result": {"by": "pycryptodome"}}


@contextlib.contextmanager
def receiving(seed: bytes, device_id: str, device_public: bytes) -> Iterator[PycryptodomeReceiver]:
    r = PycryptodomeReceiver(seed, device_id, device_public)
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def test_send_test_uploads_to_a_receiver_built_on_pycryptodome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's "done when": a scanner on protocol 2 with an X-Wing key uploads to an independent
    receiver; the scanner's own path (config, key file, sealer, uplink), the receiver nothing of ours."""
    from device.protocol.keys import raw_public, write_private_key

    device = Ed25519PrivateKey.generate()
    write_private_key(tmp_path / "device-key.pem", device)
    seed = secrets.token_bytes(32)
    public = xwing_from_seed(seed).public_raw
    with receiving(seed, "store-0042-lane-3", raw_public(device)) as receiver:
        text = (ROOT / "config.example.toml").read_text()
        text = text.replace("/var/lib/palm-scanner/device-key.pem", str(tmp_path / "device-key.pem"))
        text = text.replace('endpoint = "https://ingest.example.com"', f'endpoint = "{receiver.url}"')
        start = text.index('recipient_public_key = "') + len('recipient_public_key = "')
        text = text[:start] + b64(public) + text[text.index('"', start) :]
        (tmp_path / "config.toml").write_text(text)
        code = cli.main(["send-test", "--config", str(tmp_path / "config.toml"), "--wait", "5"])
    out = capsys.readouterr()
    assert code == 0, out
    (opened,) = receiver.opened
    assert opened["envelope"]["v"] == 2 and opened["envelope"]["suite"] == SUITE_XWING
    assert opened["envelope"]["checkout"] is None and opened["members"][0] == "manifest.json"
    assert recipient_public(public).kid == receiver.kid


def test_the_reference_ingest_takes_a_version_1_capture_unchanged() -> None:
    """A scanner left on protocol 1 (X25519, version 1 labels) still uploads: the ingest opens both."""
    from device.ingest.server import Ingest

    v1 = new_keys("X25519-SHA256-AES256GCM")
    v2 = new_keys(SUITE_XWING)
    ingest = Ingest(
        recipients=[v1.recipient, v2.recipient],  # rotation: both suites at once
        devices={"store-0042-lane-3": v1.device.public_key(), "lane-2": v2.device.public_key()},
    )
    from device.protocol import multipart

    for keys, version, device in ((v1, 1, "store-0042-lane-3"), (v2, 2, "lane-2")):
        c = keys.sealer(protocol=version, device_id=device).seal(frames(), checks={}, calibration=None)
        body, ctype = multipart.encode(c.envelope, c.sealed)
        headers = {"content-type": ctype, "palm-signature": c.signature, "idempotency-key": c.capture_id}
        answer = ingest.handle(headers, body)
        assert answer.status == 201, answer.body
        assert json.loads(c.envelope)["v"] == version
        assert signed_message(c.envelope, c.sealed, version).startswith(
            f"palm-capture/v{version}/sig".encode()
        )


def test_a_new_recipient_key_of_each_suite_seals_and_opens() -> None:
    for suite in ("X25519-SHA256-AES256GCM", SUITE_XWING):
        pem, key = new_recipient_key(suite)
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----") and key.suite == suite
        assert recipient_public(key.public_raw).kid == key.kid


def test_scanners_on_either_protocol_upload_over_http_to_one_ingest() -> None:
    """Over real HTTP, with the scanner's own uplink: a scanner left on protocol 1 (X25519) and one
    on protocol 2 (X-Wing) upload to one reference ingest holding both recipient keys."""
    from device.clock import FakeClock
    from device.ingest.server import Ingest, IngestServer
    from device.uplink.outbox import Outbox
    from device.uplink.session import make_session
    from device.uplink.uplink import Uplink

    v1, v2 = new_keys("X25519-SHA256-AES256GCM"), new_keys(SUITE_XWING)
    ingest = Ingest(
        recipients=[v1.recipient, v2.recipient],
        devices={"lane-1": v1.device.public_key(), "lane-2": v2.device.public_key()},
    )
    with IngestServer(ingest) as server:
        for keys, version, device in ((v1, 1, "lane-1"), (v2, 2, "lane-2")):
            clock = FakeClock()
            up = Uplink(
                endpoint=server.url,
                session=make_session(ca_bundle=None, pin_sha256=None, user_agent="palm-scanner/test"),
                clock=clock,
                outbox=Outbox(),
            )
            c = keys.sealer(protocol=version, device_id=device).seal(frames(), checks={}, calibration=None)
            d = up.deliver(c, wait_s=5)
            assert d.delivered and d.status == 201, d
    assert [line["v"] for line in server.lines] == [1, 2]
    assert [line["suite"] for line in server.lines] == ["X25519-SHA256-AES256GCM", SUITE_XWING]
