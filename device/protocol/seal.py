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
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from device.errors import ProtocolError
from device.protocol import INFO_PREFIX, SIG_PREFIX
from device.protocol.archive import CaptureFrame, build_archive
from device.protocol.envelope import build_envelope, rfc3339_ms, uuid7
from device.protocol.keys import kid, raw_public

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def info_for(envelope: bytes) -> bytes:
    return INFO_PREFIX + hashlib.sha256(envelope).digest()


def signed_message(envelope: bytes, sealed: bytes) -> bytes:
    return SIG_PREFIX + hashlib.sha256(envelope).digest() + hashlib.sha256(sealed).digest()


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
        recipient: X25519PublicKey,
        firmware: str,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._device_id = device_id
        self._key = device_key
        self._recipient = recipient
        self._kid = kid(raw_public(recipient))
        self._firmware = firmware
        self._monotonic_ns = monotonic_ns
        self._wall = wall_clock

    @property
    def recipient_kid(self) -> str:
        return self._kid

    def seal(
        self, frames: Sequence[CaptureFrame], *, checks: Mapping[str, Any], calibration: str | None
    ) -> SealedCapture:
        if not any(f.role == "flood" for f in frames):
            raise ProtocolError("malformed", "a capture needs a flood frame")
        now = self._wall()
        capture_id = uuid7(int(now * 1000))
        roles = [f.role for f in frames]
        envelope = build_envelope(
            device_id=self._device_id,
            capture_id=capture_id,
            created_at=rfc3339_ms(now),
            firmware=self._firmware,
            recipient=self._kid,
            roles=roles,
            checks=checks,
            calibration=calibration,
        )
        plaintext = build_archive(frames)
        try:
            sealed = SUITE.encrypt(plaintext, self._recipient, info=info_for(envelope))
        finally:
            plaintext[:] = bytes(len(plaintext))
            for f in frames:
                f.pixels.fill(0)
        signature = self._key.sign(signed_message(envelope, sealed))
        return SealedCapture(
            capture_id=capture_id,
            envelope=envelope,
            sealed=sealed,
            signature=base64.b64encode(signature).decode("ascii"),
            roles=tuple(roles),
            sealed_at_ns=self._monotonic_ns(),
        )


def verify_signature(envelope: bytes, sealed: bytes, signature_b64: str, key: Ed25519PublicKey) -> None:
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        sig = b""
    if len(sig) != 64:
        raise ProtocolError("unauthenticated", "Palm-Signature is not base64 of 64 bytes", 401)
    try:
        key.verify(sig, signed_message(envelope, sealed))
    except InvalidSignature:
        raise ProtocolError("unauthenticated", "the signature does not verify", 401) from None


def open_sealed(envelope: bytes, sealed: bytes, recipient: X25519PrivateKey) -> bytes:
    """Receiver step 5: open S with info bound to these envelope bytes."""
    if len(sealed) < 32 + 16:
        raise ProtocolError("undecryptable", "sealed part is shorter than enc and a tag", 422)
    try:
        return SUITE.decrypt(sealed, recipient, info=info_for(envelope))
    except (InvalidTag, ValueError):
        raise ProtocolError(
            "undecryptable", "the sealed part does not open with this recipient key", 422
        ) from None
