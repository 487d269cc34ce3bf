"""The tills allowed to arm this scanner, each with its own bearer token, and the scanner's TLS key.

``palm till add NAME`` makes a token and prints it once; only its SHA-256 is kept, in
``tills.json`` in the state directory (mode 0600, written whole: a new file, fsync, rename). A
token is checked against every till's hash in constant time. The scanner's TLS certificate is
self-signed over an ECDSA P-256 key made once, like the device key; a till pins the certificate's
SHA-256 fingerprint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from device import inputs
from device.errors import KeyFileError
from device.protocol.keys import write_new_file
from device.till.checkouts import TILL_NAME

TILLS_FILE = "tills.json"
TLS_KEY_FILE = "till-tls-key.pem"
TLS_CERT_FILE = "till-tls-cert.pem"
TOKEN_PREFIX = "palm_till_"


class TillError(KeyFileError):
    """The tills file or the TLS key cannot be used, or a till name is wrong (exit 78)."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Tills:
    """The tills file of a state directory."""

    state_dir: Path

    @property
    def path(self) -> Path:
        return self.state_dir / TILLS_FILE

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            data = inputs.read_json(self.path, what="tills file", limit=inputs.MiB)
        except inputs.InputError as exc:
            raise TillError(str(exc)) from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
            for k, v in data.items()
        ):
            raise TillError(f"{self.path} is not a tills file: remove it and add the tills again")
        return data

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        tmp = self.path.with_name(f".{TILLS_FILE}.{secrets.token_hex(4)}")
        write_new_file(tmp, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), 0o600)
        try:
            os.replace(tmp, self.path)
            dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TillError(f"cannot write {self.path}: {exc.strerror}") from None

    def add(self, name: str) -> str:
        """A new till and its token (shown once; only its hash is kept)."""
        if not TILL_NAME.fullmatch(name):
            raise TillError(f"till name {name[:70]!r} is not 1 to 64 of [A-Za-z0-9._-]")
        data = self._read()
        if name in data:
            raise TillError(f"till {name} exists: remove it first (palm till remove {name})")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        data[name] = {
            "sha256": _hash(token),
            "added_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        self._write(data)
        return token

    def remove(self, name: str) -> None:
        data = self._read()
        if name not in data:
            raise TillError(f"no till {name[:70]!r}: palm till list shows them")
        del data[name]
        self._write(data)

    def names(self) -> list[tuple[str, str]]:
        return sorted((k, v.get("added_at", "")) for k, v in self._read().items())

    def verify(self, token: str) -> str | None:
        """The till whose token this is, else None; every till's hash is compared, in constant time."""
        return _verify(self._read(), token)


class MemoryTills:
    """Tills kept in memory only: the simulated scanner's own till (nothing written to disk)."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}

    def add(self, name: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._data[name] = {"sha256": _hash(token)}
        return token

    def verify(self, token: str) -> str | None:
        return _verify(self._data, token)


def _verify(entries: dict[str, dict[str, str]], token: str) -> str | None:
    given = _hash(token)
    found = None
    for name, entry in entries.items():  # no early exit: the time does not say which till
        if hmac.compare_digest(given, entry["sha256"]):
            found = name
    return found


def tls_files(state_dir: Path, hosts: list[str]) -> tuple[Path, Path, str]:
    """The scanner's till TLS key and certificate (made once), and the certificate's SHA-256
    fingerprint (lowercase hex) that tills pin."""
    key_path, cert_path = state_dir / TLS_KEY_FILE, state_dir / TLS_CERT_FILE
    if not key_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_new_file(key_path, pem, 0o600)
        write_new_file(cert_path, _self_signed(key, hosts).public_bytes(serialization.Encoding.PEM), 0o644)
    try:
        cert = x509.load_pem_x509_certificate(
            inputs.read_bytes(cert_path, what="till certificate", limit=65536)
        )
    except (inputs.InputError, ValueError) as exc:
        raise TillError(
            f"{cert_path} is not a certificate ({exc}): remove it and {key_path} to make new ones"
        ) from None
    return key_path, cert_path, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The API's TLS: TLS 1.2 or newer with the scanner's certificate and key."""
    ctx = _server_tls()
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TillError(
            f"cannot use the till API's certificate {cert} and key {key} ({exc}): remove both to make "
            "new ones (tills must then pin the new fingerprint)"
        ) from None
    return ctx


def memory_context(hosts: list[str]) -> tuple[ssl.SSLContext, str]:
    """A TLS context over a key made now and never written (the simulated scanner), and the
    certificate's fingerprint. OpenSSL loads a chain only from a path: the certificate and the key
    each go through a pipe (/proc/self/fd), read once, so no file holds them."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, hosts)
    pems = (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    reads: list[int] = []
    try:
        for pem in pems:  # each under a pipe's buffer (64 KiB): they are a few hundred bytes
            read, write = os.pipe()
            reads.append(read)
            try:
                os.write(write, pem)
            finally:
                os.close(write)
        ctx = _server_tls()
        ctx.load_cert_chain(f"/proc/self/fd/{reads[0]}", f"/proc/self/fd/{reads[1]}")
    finally:
        for fd in reads:
            os.close(fd)
    return ctx, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _server_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _self_signed(key: ec.EllipticCurvePrivateKey, hosts: list[str]) -> x509.Certificate:
    names: list[Any] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "palm-scanner till API")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(
            now + dt.timedelta(days=3650)
        )  # pinned, not trusted by a CA: it lives with the scanner
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
