"""Builders shared by the protocol, ingest and uplink tests."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from device.protocol import SUITE_XWING
from device.protocol.archive import CaptureFrame
from device.protocol.keys import RecipientPrivate, new_recipient_key, raw_public, recipient_public
from device.protocol.seal import Sealer

DEVICE_ID = "store-7-lane-2"


def frames(n: int = 4, size: int = 320, seed: int = 0) -> list[CaptureFrame]:
    rng = np.random.default_rng(seed)
    roles = ["flood", "ambient", "sector-0", "sector-1", "sector-2", "sector-3"][:n]
    return [
        CaptureFrame(
            role=r,
            pixels=rng.integers(0, 256, (size, size), dtype=np.uint8),
            roi=(100, 80, size, size),
            exposure_us=3000,
            gain=2.0,
            leds={"flood": "all", "ambient": "none"}.get(r, r),
            timestamp_ns=1_000_000 + i,
        )
        for i, r in enumerate(roles)
    ]


@dataclass
class Keys:
    device: Ed25519PrivateKey
    recipient: RecipientPrivate

    @property
    def device_pub_b64(self) -> str:
        return base64.b64encode(raw_public(self.device)).decode()

    def sealer(self, **kw: object) -> Sealer:
        args: dict[str, object] = {
            "device_id": DEVICE_ID,
            "device_key": self.device,
            "recipient": recipient_public(self.recipient.public_raw),
            "firmware": "0.1.0-test",
        }
        args.update(kw)
        return Sealer(**args)  # type: ignore[arg-type]


def new_keys(suite: str = SUITE_XWING) -> Keys:
    """A device key, and a recipient key of ``suite`` (X-Wing, as a scanner's default)."""
    return Keys(Ed25519PrivateKey.generate(), new_recipient_key(suite)[1])


@dataclass
class TestCA:
    """A certificate authority made in the test, and a server certificate it signed."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path
    cert_der: bytes


def make_ca(tmp: Path, name: str, *, host: str = "127.0.0.1") -> TestCA:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test CA {name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out = TestCA(
        tmp / f"{name}-ca.pem",
        tmp / f"{name}-cert.pem",
        tmp / f"{name}-key.pem",
        cert.public_bytes(serialization.Encoding.DER),
    )
    out.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return out
