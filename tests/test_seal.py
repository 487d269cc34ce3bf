"""Sealing and opening, checked against RFC 9180 vectors and an independent HPKE (pyhpke)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import cryptography_vectors
import numpy as np
import pytest
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

from device.errors import ProtocolError
from device.protocol import SUITE_X25519, SUITE_XWING
from device.protocol import archive as arch
from device.protocol.envelope import parse_envelope
from device.protocol.keys import RecipientPrivate, kid, raw_public
from device.protocol.seal import ENC_LEN, hpke_suite, info_for, open_sealed, signed_message, verify_signature
from tests.helpers import frames, new_keys

#: (version, suite) pairs a scanner may send: version 1's one suite, and version 2's two
SENT = [(1, SUITE_X25519), (2, SUITE_X25519), (2, SUITE_XWING)]

PYHPKE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)


def rfc_vector() -> dict[str, str]:
    path = Path(cryptography_vectors.__file__).parent / "HPKE" / "test-vectors.json"
    vectors = json.loads(path.read_text())
    (v,) = [
        x
        for x in vectors
        if (int(x["mode"]), int(x["kem_id"]), int(x["kdf_id"]), int(x["aead_id"])) == (0, 0x20, 1, 2)
    ]
    return v


def test_the_independent_implementation_reproduces_the_rfc_vectors() -> None:
    v = rfc_vector()
    b = bytes.fromhex
    eks = PYHPKE.kem.derive_key_pair(b(v["ikmE"]))
    rkp = PYHPKE.kem.derive_key_pair(b(v["ikmR"]))
    assert rkp.public_key.to_public_bytes() == b(v["pkRm"])
    enc, ctx = PYHPKE.create_sender_context(rkp.public_key, b(v["info"]), eks=eks)
    assert enc == b(v["enc"])
    for e in v["encryptions"][:4]:
        assert ctx.seal(b(e["pt"]), b(e["aad"])) == b(e["ct"])


def test_what_rfc_vector_keys_seal_with_pyhpke_opens_with_ours() -> None:
    """Deterministic: the RFC's own ephemeral and recipient keys, this protocol's info, empty aad."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    v = rfc_vector()
    b = bytes.fromhex
    eks = PYHPKE.kem.derive_key_pair(b(v["ikmE"]))
    key = X25519PrivateKey.from_private_bytes(b(v["skRm"]))
    assert raw_public(key) == b(v["pkRm"])
    recipient = RecipientPrivate(SUITE_X25519, raw_public(key), key)
    envelope = b'{"v":1}'
    enc, ctx = PYHPKE.create_sender_context(
        KEMKey.from_pyca_cryptography_key(key.public_key()), info_for(envelope), eks=eks
    )
    sealed = enc + ctx.seal(b"palm plaintext", b"")
    assert enc == b(v["enc"])
    assert open_sealed(envelope, sealed, recipient) == b"palm plaintext"


@pytest.mark.parametrize("version", [1, 2])
def test_pyhpke_opens_what_the_scanner_seals_and_the_ingest_opens_what_pyhpke_seals(version: int) -> None:
    keys = new_keys(SUITE_X25519)
    sealer = keys.sealer(protocol=version)
    capture = sealer.seal(frames(), checks={"quality": {"score": 0.9}}, calibration=None)
    info = info_for(capture.envelope, version)
    assert info.startswith(f"palm-capture/v{version}\x00".encode())
    skr = KEMKey.from_pyca_cryptography_key(keys.recipient.key)
    ctx = PYHPKE.create_recipient_context(capture.sealed[:32], skr, info=info)
    plain = ctx.open(capture.sealed[32:], b"")
    assert plain[257:262] == b"ustar"  # the first header block's magic
    assert plain == open_sealed(capture.envelope, capture.sealed, keys.recipient, version=version)
    enc, sender = PYHPKE.create_sender_context(
        KEMKey.from_pyca_cryptography_key(keys.recipient.key.public_key()), info=info_for(b"E", version)
    )
    opened = open_sealed(b"E", enc + sender.seal(b"other side", b""), keys.recipient, version=version)
    assert opened == b"other side"
    # The suite object is cryptography's, as the protocol's test-vector section names it.
    again = hpke_suite(SUITE_X25519).encrypt(b"x", keys.recipient.key.public_key(), info=b"i")
    assert len(again) == 32 + 1 + 16


@pytest.mark.parametrize(("version", "suite"), SENT)
def test_a_changed_envelope_byte_fails_both_signature_and_decryption(version: int, suite: str) -> None:
    keys = new_keys(suite)
    c = keys.sealer(protocol=version).seal(frames(), checks={}, calibration=None)
    pub = keys.device.public_key()
    verify_signature(c.envelope, c.sealed, c.signature, pub, version)
    assert open_sealed(c.envelope, c.sealed, keys.recipient, version=version, suite=suite)
    other = 3 - version  # the other version's labels: neither the signature nor the seal holds
    with pytest.raises(ProtocolError, match="unauthenticated"):
        verify_signature(c.envelope, c.sealed, c.signature, pub, other)
    with pytest.raises(ProtocolError, match="undecryptable"):
        open_sealed(c.envelope, c.sealed, keys.recipient, version=other, suite=suite)
    for i in (0, 10, len(c.envelope) // 2, len(c.envelope) - 1):
        changed = bytearray(c.envelope)
        changed[i] ^= 0x01
        with pytest.raises(ProtocolError, match="unauthenticated"):
            verify_signature(bytes(changed), c.sealed, c.signature, pub, version)
        with pytest.raises(ProtocolError, match="undecryptable"):
            open_sealed(bytes(changed), c.sealed, keys.recipient, version=version, suite=suite)
    flipped = bytearray(c.sealed)
    flipped[40] ^= 0x80
    with pytest.raises(ProtocolError, match="unauthenticated"):
        verify_signature(c.envelope, bytes(flipped), c.signature, pub, version)


@pytest.mark.parametrize(("version", "suite"), SENT)
def test_envelope_follows_the_protocol_to_the_byte(version: int, suite: str) -> None:
    keys = new_keys(suite)
    sealer = keys.sealer(wall_clock=lambda: 1795000000.1234, protocol=version)
    c = sealer.seal(
        frames(), checks={"quality": {"score": 0.93}, "liveness": {"score": 0.99}}, calibration="cal-1"
    )
    env = json.loads(c.envelope)
    assert list(env) == [
        "v",
        "device_id",
        "capture_id",
        "created_at",
        "firmware",
        "recipient",
        "suite",
        "content",
        "checks",
        "calibration",
        *(["checkout"] if version == 2 else []),
    ]
    assert env["v"] == version and env.get("checkout") is None
    assert env["created_at"] == "2026-11-18T11:06:40.123Z"
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", env["capture_id"]
    )
    assert int(env["capture_id"].replace("-", "")[:12], 16) == 1795000000123  # v7: Unix milliseconds
    pub = keys.recipient.public_raw
    assert len(pub) == {SUITE_X25519: 32, SUITE_XWING: 1216}[suite]
    assert env["recipient"] == hashlib.sha256(pub).digest()[:16].hex() == kid(pub)
    assert env["suite"] == suite
    assert env["content"] == {
        "type": "application/x-tar",
        "frames": ["flood", "ambient", "sector-0", "sector-1"],
    }
    assert b" " not in c.envelope and c.envelope.decode("utf-8")
    parse_envelope(c.envelope, now_unix=1795000000.0)
    label = f"palm-capture/v{version}".encode()
    assert info_for(c.envelope, version) == label + b"\x00" + hashlib.sha256(c.envelope).digest()
    assert signed_message(c.envelope, c.sealed, version) == (
        label + b"/sig\x00" + hashlib.sha256(c.envelope).digest() + hashlib.sha256(c.sealed).digest()
    )
    assert len(base64.b64decode(c.signature)) == 64 and c.signature.endswith("=")
    enc = {SUITE_X25519: 32, SUITE_XWING: 1120}[suite]
    assert ENC_LEN[suite] == enc and c.sealed[:enc] != bytes(enc) and len(c.sealed) > enc + 16


def test_sealing_wipes_the_frames_and_leaves_only_ciphertext() -> None:
    keys = new_keys()
    given = frames(seed=3)
    originals = [f.pixels.copy() for f in given]
    c = keys.sealer().seal(given, checks={}, calibration=None)
    assert all(not f.pixels.any() for f in given)
    assert b"\x89PNG" not in c.sealed and b"ustar" not in c.sealed
    assert b"\x89PNG" not in c.envelope
    plain = open_sealed(c.envelope, c.sealed, keys.recipient, version=2, suite=SUITE_XWING)
    summary = arch.validate_archive(plain, list(c.roles))
    assert summary.sizes == [(320, 320)] * 4
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        names = tar.getnames()
        assert names == ["manifest.json", "flood.png", "ambient.png", "sector-0.png", "sector-1.png"]
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        import cv2

        flood = cv2.imdecode(
            np.frombuffer(tar.extractfile("flood.png").read(), np.uint8),  # type: ignore[union-attr]
            cv2.IMREAD_UNCHANGED,
        )
    assert np.array_equal(flood, originals[0])  # lossless
    assert manifest["frames"][0] == {
        "role": "flood",
        "width": 320,
        "height": 320,
        "roi": [100, 80, 320, 320],
        "exposure_us": 3000,
        "gain": 2.0,
        "leds": "all",
        "timestamp_ns": 1000000,
    }
    assert "pixels" not in repr(c) and "array" not in repr(given[0])


def test_a_capture_without_flood_or_with_pixel_like_checks_is_refused() -> None:
    keys = new_keys()
    with pytest.raises(ProtocolError, match="flood"):
        keys.sealer().seal(frames()[1:], checks={}, calibration=None)
    with pytest.raises(ProtocolError, match="at most 64"):
        keys.sealer().seal(frames(), checks={"blob": "x" * 500}, calibration=None)
    with pytest.raises(ProtocolError, match="lists hold"):
        keys.sealer().seal(frames(), checks={"rows": [[1, 2], [3, 4]]}, calibration=None)
    with pytest.raises(ProtocolError, match="only numbers"):
        keys.sealer().seal(frames(), checks={"img": np.zeros(3)}, calibration=None)


def test_the_version_sent_follows_the_protocol_page_unless_pinned() -> None:
    """protocol.md: version 2 when the key is a version 2 suite or a till armed the scan, else
    version 1, so a scanner upgraded without touching its X25519 config keeps talking to a cloud
    of version 1."""
    armed = {"id": "sale-1", "till": "till-1", "armed_at": "2026-12-03T10:00:00.000Z"}
    x25519, xwing = new_keys(SUITE_X25519), new_keys(SUITE_XWING)

    def version(keys: Any, **kw: Any) -> int:
        c = keys.sealer(**kw.pop("sealer", {})).seal(frames(), checks={}, calibration=None, **kw)
        return int(json.loads(c.envelope)["v"])

    assert version(x25519) == 1 and version(xwing) == 2
    assert version(x25519, checkout=armed) == 2
    assert version(x25519, sealer={"protocol": 2}) == 2
    with pytest.raises(ProtocolError, match="version 2"):
        version(x25519, sealer={"protocol": 1}, checkout=armed)
    with pytest.raises(ProtocolError, match="cannot seal"):
        xwing.sealer(protocol=1)
