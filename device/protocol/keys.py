"""Key files: the device's Ed25519 signing key and a development cloud's X25519 recipient key.

Private keys are PKCS#8 PEM files (so keys made by any standard tool work),
created with mode 0600 and never overwritten. A private key file that group or
others can read is refused. Key material never appears in a message or a log.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from device.errors import KeyFileError

PrivateKey = Ed25519PrivateKey | X25519PrivateKey


def kid(public_raw: bytes) -> str:
    """Key id of a recipient key: first 16 bytes of SHA-256 of the raw key, lowercase hex."""
    return hashlib.sha256(public_raw).digest()[:16].hex()


def raw_public(key: Ed25519PrivateKey | X25519PrivateKey | Ed25519PublicKey | X25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey | X25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write a PKCS#8 PEM private key with mode 0600; refuse to replace an existing file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{str(path)!r} already exists: a key is never overwritten") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {str(path)!r}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pem)
    finally:
        os.close(fd)


def _load_private(path: Path, what: str) -> PrivateKey:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{what} {str(path)!r} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{what} {str(path)!r} can be read by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"make it mode 0600 with `chmod 600 {path}`"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    if b"ENCRYPTED PRIVATE KEY" in data:
        raise KeyFileError(f"{what} {str(path)!r} is encrypted: the scanner needs an unencrypted PKCS#8 key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(
            f"{what} {str(path)!r} is not a PEM private key: expected a PKCS#8 PEM file "
            "('-----BEGIN PRIVATE KEY-----')"
        ) from None
    except Exception:  # cryptography's UnsupportedAlgorithm and friends
        raise KeyFileError(f"{what} {str(path)!r} holds a key of an unsupported kind") from None
    if not isinstance(key, Ed25519PrivateKey | X25519PrivateKey):
        kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey")
        raise KeyFileError(f"{what} {str(path)!r} holds an {kind} key: expected Ed25519 or X25519")
    return key


def load_device_key(path: Path) -> Ed25519PrivateKey:
    key = _load_private(path, "device key")
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"device key {str(path)!r} is an X25519 key: the device key must be Ed25519")
    return key


def load_recipient_key(path: Path) -> X25519PrivateKey:
    key = _load_private(path, "recipient key")
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError(f"recipient key {str(path)!r} is an Ed25519 key: a recipient key must be X25519")
    return key


def recipient_public(raw: bytes) -> X25519PublicKey:
    if len(raw) != 32:
        raise KeyFileError(f"a recipient public key is 32 raw bytes, not {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def device_public_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"a device public key is base64 of 32 raw bytes: {text[:60]!r} is not")
    return Ed25519PublicKey.from_public_bytes(raw)
