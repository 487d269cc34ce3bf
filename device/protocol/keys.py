"""Key files: the device's Ed25519 signing key and a development cloud's X25519 recipient key.

Private keys are PKCS#8 PEM files (so keys made by any standard tool work),
created with mode 0600 and never overwritten. A private key file that group or
others can read is refused, and so is a symbolic link (whose permissions say nothing of the
file's). Key material never appears in a message or a log.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from device import inputs
from device.errors import KeyFileError

PrivateKey = Ed25519PrivateKey | X25519PrivateKey
MAX_KEY_FILE = 64 * 1024  # a PEM key is a few hundred bytes


def kid(public_raw: bytes) -> str:
    """Key id of a recipient key: first 16 bytes of SHA-256 of the raw key, lowercase hex."""
    return hashlib.sha256(public_raw).digest()[:16].hex()


def raw_public(key: Ed25519PrivateKey | X25519PrivateKey | Ed25519PublicKey | X25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey | X25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` holding ``data``, all or nothing: never over an existing file or through a
    symlink, never a truncated file after a power cut. The bytes go to a new file in the same
    folder (``O_EXCL | O_NOFOLLOW``, ``mode`` whatever the umask), every byte checked written and
    fsynced; a hard link gives it its name only if no file of that name exists (a link, unlike a
    rename, never replaces), and the folder is fsynced so the name survives the power cut too."""
    path = Path(path)
    if os.path.lexists(path):
        raise KeyFileError(f"{str(path)!r} already exists: a key is never overwritten")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise KeyFileError(f"cannot create {str(path)!r}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path, follow_symlinks=False)
        except FileExistsError:
            raise KeyFileError(f"{str(path)!r} already exists: a key is never overwritten") from None
        dir_fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise KeyFileError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write a PKCS#8 PEM private key with mode 0600 (`write_new_file`): never over an existing file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_new_file(path, pem, 0o600)


def _load_private(path: Path, what: str) -> PrivateKey:
    """A private key file: a regular file, not a symbolic link (its permissions are the file's own),
    mode 0600 or stricter, at most ``MAX_KEY_FILE`` bytes."""

    def private(st: os.stat_result) -> None:
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{what} {str(path)!r} can be read by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"make it mode 0600 with `chmod 600 {path}`"
            )

    try:
        data = inputs.read_bytes(path, what=what, limit=MAX_KEY_FILE, follow_symlinks=False, check=private)
    except inputs.InputError as exc:
        raise KeyFileError(str(exc)) from None
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


def low_order(raw: bytes) -> bool:
    """An X25519 public key of small order (the all-zero key among them): every private key's
    shared secret with it is all zeros, so a capture sealed to it is open to anyone. RFC 7748
    section 6.1 has the receiver check the shared secret; OpenSSL refuses to compute it, and
    that refusal is the test here (with a throw-away key)."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        return True
    return False


def recipient_public(raw: bytes) -> X25519PublicKey:
    if len(raw) != 32:
        raise KeyFileError(f"a recipient public key is 32 raw bytes, not {len(raw)}")
    if low_order(raw):
        raise KeyFileError(
            "the recipient public key is of small order (such as all zeros): no seal to it is secret"
        )
    return X25519PublicKey.from_public_bytes(raw)


def device_public_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"a device public key is base64 of 32 raw bytes: {text[:60]!r} is not")
    return Ed25519PublicKey.from_public_bytes(raw)
