"""Sealing a capture for the cloud, and (on the receiving side) opening one.

The scanner holds only the cloud's public recipient key: it can seal a capture
but never open one, not even its own. After sealing, the frame buffers and every
plaintext buffer the sealer made are overwritten with zeros; what survives is the
envelope, the ciphertext and the signature.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from device.errors import ProtocolError
from device.protocol import SUITE_X25519, SUITE_XWING, SUITES, info_prefix, sig_prefix
from device.protocol.archive import CaptureFrame, build_archive
from device.protocol.envelope import build_envelope, rfc3339_ms, uuid7
from device.protocol.keys import RecipientPrivate, RecipientPublic, has_xwing

#: each suite's HPKE and the length of its ``enc``
ENC_LEN = {SUITE_X25519: 32, SUITE_XWING: 1120}


def hpke_suite(suite: str) -> hpke.Suite:
    kem = hpke.KEM.X25519 if suite == SUITE_X25519 else hpke.KEM.MLKEM768_X25519
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def info_for(envelope: bytes, version: int = 1) -> bytes:
    return info_prefix(version) + hashlib.sha256(envelope).digest()


def signed_message(envelope: bytes, sealed: bytes, version: int = 1) -> bytes:
    return sig_prefix(version) + hashlib.sha256(envelope).digest() + hashlib.sha256(sealed).digest()


@dataclass(frozen=True, eq=False)
class SealedCapture:
    """What leaves the scanner: envelope E, HPKE output S, the signature. No pixels."""

    capture_id: str
    envelope: bytes
    sealed: bytes
    signature: str  # standard base64 of the 64-byte Ed25519 signature
    roles: tuple[str, ...]
    sealed_at_ns: int  # monotonic, for the outbox's time-to-live

    @property
    def size(self) -> int:
        return len(self.envelope) + len(self.sealed)

    def __repr__(self) -> str:
        return f"SealedCapture({self.capture_id}, {self.size} bytes, roles={list(self.roles)})"


class Sealer:
    """Seals captures to one recipient key and signs them with the device key."""

    def __init__(
        self,
        *,
        device_id: str,
        device_key: Ed25519PrivateKey,
        recipient: RecipientPublic,
        firmware: str,
        protocol: int = 0,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``protocol``: 0 sends what the protocol page says (version 2 for an X-Wing key or a
        checkout a till armed, else version 1, so a cloud of version 1 keeps taking an X25519
        scanner's captures); 1 or 2 pins it. The suite is the recipient key's."""
        if protocol != 0 and recipient.suite not in SUITES.get(protocol, ()):
            raise ProtocolError(
                "malformed",
                f"protocol {protocol} cannot seal with {recipient.suite}: it has "
                + ", ".join(SUITES.get(protocol, ("no suite",))),
            )
        self._device_id = device_id
        self._key = device_key
        self._recipient = recipient
        self._kid = recipient.kid
        self._hpke = hpke_suite(recipient.suite)
        self.protocol = protocol
        self._firmware = firmware
        self._monotonic_ns = monotonic_ns
        self._wall = wall_clock

    @property
    def recipient_kid(self) -> str:
        return self._kid

    @property
    def suite(self) -> str:
        return self._recipient.suite

    def seal(
        self,
        frames: Sequence[CaptureFrame],
        *,
        checks: Mapping[str, Any],
        calibration: str | None,
        checkout: Mapping[str, str] | None = None,
    ) -> SealedCapture:
        """Seal and sign ``frames``; ``checkout``: the checkout a till armed the scan for (version 2)."""
        if not any(f.role == "flood" for f in frames):
            raise ProtocolError("malformed", "a capture needs a flood frame")
        now = self._wall()
        capture_id = uuid7(int(now * 1000))
        roles = [f.role for f in frames]
        version = self.protocol or (2 if self.suite == SUITE_XWING or checkout is not None else 1)
        envelope = build_envelope(
            device_id=self._device_id,
            capture_id=capture_id,
            created_at=rfc3339_ms(now),
            firmware=self._firmware,
            recipient=self._kid,
            roles=roles,
            checks=checks,
            calibration=calibration,
            version=version,
            suite=self._recipient.suite,
            checkout=checkout,
        )
        plaintext = build_archive(frames)
        try:
            sealed = self._hpke.encrypt(plaintext, self._recipient.key, info=info_for(envelope, version))
        finally:
            plaintext[:] = bytes(len(plaintext))
            for f in frames:
                f.pixels.fill(0)
        signature = self._key.sign(signed_message(envelope, sealed, version))
        return SealedCapture(
            capture_id=capture_id,
            envelope=envelope,
            sealed=sealed,
            signature=base64.b64encode(signature).decode("ascii"),
            roles=tuple(roles),
            sealed_at_ns=self._monotonic_ns(),
        )


def verify_signature(
    envelope: bytes, sealed: bytes, signature_b64: str, key: Ed25519PublicKey, version: int = 1
) -> None:
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        sig = b""
    if len(sig) != 64:
        raise ProtocolError("unauthenticated", "Palm-Signature is not base64 of 64 bytes", 401)
    try:
        key.verify(sig, signed_message(envelope, sealed, version))
    except InvalidSignature:
        raise ProtocolError("unauthenticated", "the signature does not verify", 401) from None


def open_sealed(
    envelope: bytes,
    sealed: bytes,
    recipient: RecipientPrivate,
    *,
    version: int = 1,
    suite: str = SUITE_X25519,
) -> bytes:
    """Receiver step 5: open S with ``info`` bound to these envelope bytes, by the envelope's
    version and suite (the recipient key must be of that suite)."""
    if recipient.suite != suite:
        raise ProtocolError(
            "undecryptable", f"recipient key {recipient.kid} is {recipient.suite}, the capture {suite}", 422
        )
    if suite == SUITE_XWING and not has_xwing():
        raise ProtocolError("undecryptable", "this ingest's cryptography has no X-Wing (48 or newer)", 422)
    if len(sealed) < ENC_LEN[suite] + 16:
        raise ProtocolError("undecryptable", "sealed part is shorter than enc and a tag", 422)
    try:
        return hpke_suite(suite).decrypt(sealed, recipient.key, info=info_for(envelope, version))
    except (InvalidTag, ValueError):
        raise ProtocolError(
            "undecryptable", "the sealed part does not open with this recipient key", 422
        ) from None
