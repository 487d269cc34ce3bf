"""Key files: the device's Ed25519 signing key and a development cloud's X25519 recipient key.

Private keys are PKCS#8 PEM files (so keys made by any standard tool work),
created with mode 0600 and never overwritten. A private key file that group or
others can read is refused, and so is a symbolic link (whose permissions say nothing of the
file's). Key material never appears in a message or a log.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from device import inputs
from device.errors import KeyFileError
from device.protocol import SUITE_X25519, SUITE_XWING

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


def _read_private(path: Path, what: str) -> bytes:
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
    return data


def _parse_private(data: bytes, path: Path, what: str) -> PrivateKey:
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


def _load_private(path: Path, what: str) -> PrivateKey:
    return _parse_private(_read_private(path, what), path, what)


def load_device_key(path: Path) -> Ed25519PrivateKey:
    key = _load_private(path, "device key")
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"device key {str(path)!r} is an X25519 key: the device key must be Ed25519")
    return key


#: PKCS#8 of an X-Wing private key: its 32-byte seed under the X-Wing OID 1.3.6.1.4.1.62253.25722
#: (draft-connolly-cfrg-xwing-kem): version 0, the algorithm with no parameters, the seed as one
#: OCTET STRING (RFC 8410 wraps an X25519 key in a second one; whether other tools' X-Wing PKCS#8
#: does is not checked here: the key is a development cloud's, read only by `palm ingest`)
XWING_OID_DER = bytes.fromhex("060b2b0601040183e62d81c87a")
_XWING_PKCS8_HEAD = bytes.fromhex("3034020100300d") + XWING_OID_DER + bytes.fromhex("0420")
XWING_SEED_LEN = 32


@dataclass(frozen=True)
class RecipientPrivate:
    """A development cloud's recipient key: its suite, its public key's raw bytes (``kid`` is of
    them) and the key HPKE opens with."""

    suite: str
    public_raw: bytes = field(repr=False)
    key: Any = field(repr=False)

    @property
    def kid(self) -> str:
        return kid(self.public_raw)


def xwing_from_seed(seed: bytes) -> RecipientPrivate:
    """X-Wing's KeyGen from its 32-byte private key (the draft's expandDecapsulationKey): SHAKE256
    of the seed gives 96 bytes, the first 64 the ML-KEM-768 seed (d || z, FIPS 203), the last 32 the
    X25519 private key."""
    if len(seed) != XWING_SEED_LEN:
        raise KeyFileError(f"an X-Wing private key is a {XWING_SEED_LEN}-byte seed, not {len(seed)} bytes")
    if not has_xwing():
        raise _needs_xwing()
    from cryptography.hazmat.primitives.asymmetric import mlkem

    expanded = hashlib.shake_256(seed).digest(96)
    m = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    x = X25519PrivateKey.from_private_bytes(expanded[64:])
    public_raw = m.public_key().public_bytes_raw() + raw_public(x)
    return RecipientPrivate(SUITE_XWING, public_raw, hpke.MLKEM768X25519PrivateKey(m, x))


def xwing_pem(seed: bytes) -> bytes:
    """The PKCS#8 PEM of an X-Wing private key (see XWING_OID_DER)."""
    der = _XWING_PKCS8_HEAD + seed
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN PRIVATE KEY-----\n" + b"\n".join(lines) + b"\n-----END PRIVATE KEY-----\n"


def _xwing_seed_of(pem: bytes) -> bytes | None:
    """The seed of an X-Wing PKCS#8 PEM, None if the PEM is not one."""
    text = pem.strip()
    head, foot = b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----"
    if not (text.startswith(head) and text.endswith(foot)):
        return None
    try:
        der = base64.b64decode(b"".join(text[len(head) : -len(foot)].split()), validate=True)
    except ValueError:
        return None
    if len(der) != len(_XWING_PKCS8_HEAD) + XWING_SEED_LEN or not der.startswith(_XWING_PKCS8_HEAD):
        return None
    return der[len(_XWING_PKCS8_HEAD) :]


def load_recipient_key(path: Path) -> RecipientPrivate:
    """A development cloud's recipient private key: X25519 or X-Wing, PKCS#8 PEM, mode 0600."""
    data = _read_private(path, "recipient key")
    seed = _xwing_seed_of(data)
    if seed is not None:
        return xwing_from_seed(seed)
    key = _parse_private(data, path, "recipient key")
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError(
            f"recipient key {str(path)!r} is an Ed25519 key: a recipient key is X25519 or X-Wing"
        )
    return RecipientPrivate(SUITE_X25519, raw_public(key), key)


def new_recipient_key(suite: str) -> tuple[bytes, RecipientPrivate]:
    """A new recipient key of ``suite``: its PKCS#8 PEM and the key."""
    if suite == SUITE_XWING:
        seed = secrets.token_bytes(XWING_SEED_LEN)
        return xwing_pem(seed), xwing_from_seed(seed)
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, RecipientPrivate(SUITE_X25519, raw_public(key), key)


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


#: raw recipient public keys: X25519 32 bytes; X-Wing the ML-KEM-768 encapsulation key then X25519's
X25519_PUBLIC_LEN, MLKEM768_PUBLIC_LEN, XWING_PUBLIC_LEN = 32, 1184, 1216


@functools.cache
def has_xwing() -> bool:
    """Whether this ``cryptography`` can seal with X-Wing: hpke.KEM.MLKEM768_X25519 and a backend
    with ML-KEM (48 and newer; 47 names the KEM, but its OpenSSL has no ML-KEM)."""
    if not (hasattr(hpke.KEM, "MLKEM768_X25519") and hasattr(hpke, "MLKEM768X25519PublicKey")):
        return False
    try:
        from cryptography.hazmat.primitives.asymmetric import mlkem

        mlkem.MLKEM768PrivateKey.generate()
    except (ImportError, UnsupportedAlgorithm):
        return False
    return True


def _needs_xwing() -> KeyFileError:
    import cryptography

    return KeyFileError(
        f"an X-Wing recipient key needs cryptography 48 or newer (hpke.KEM.MLKEM768_X25519); this is "
        f"{cryptography.__version__}: upgrade it, or use a 32-byte X25519 key with [cloud] protocol = 1"
    )


@dataclass(frozen=True)
class RecipientPublic:
    """The cloud's public recipient key as a scanner holds it: its suite, its raw bytes (as in the
    config; ``kid`` is of them) and the key HPKE seals to."""

    suite: str
    raw: bytes = field(repr=False)
    key: Any = field(repr=False)

    @property
    def kid(self) -> str:
        return kid(self.raw)


def recipient_public(raw: bytes) -> RecipientPublic:
    """A recipient public key from its raw bytes: 32 (X25519) or 1216 (X-Wing); KeyFileError else."""
    if len(raw) not in (X25519_PUBLIC_LEN, XWING_PUBLIC_LEN):
        raise KeyFileError(
            f"a recipient public key is {XWING_PUBLIC_LEN} bytes (X-Wing) or {X25519_PUBLIC_LEN} bytes "
            f"(X25519), not {len(raw)} bytes"
        )
    x_raw = raw[-X25519_PUBLIC_LEN:]
    if low_order(x_raw):
        raise KeyFileError(
            "the recipient public key's X25519 part is of small order (all zeros is one), to which no seal "
            "is secret; give the cloud's real key (palm keys recipient prints one for a development cloud)"
        )
    x = X25519PublicKey.from_public_bytes(x_raw)
    if len(raw) == X25519_PUBLIC_LEN:
        return RecipientPublic(SUITE_X25519, raw, x)
    if not has_xwing():
        raise _needs_xwing()
    from cryptography.hazmat.primitives.asymmetric import mlkem

    try:
        m = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC_LEN])
    except ValueError:
        raise KeyFileError("the recipient public key's first 1184 bytes are not an ML-KEM-768 key") from None
    return RecipientPublic(SUITE_XWING, raw, hpke.MLKEM768X25519PublicKey(m, x))


def device_public_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"a device public key is base64 of 32 raw bytes: {text[:60]!r} is not")
    return Ed25519PublicKey.from_public_bytes(raw)


def describe_key_file(path: Path) -> list[str]:
    """What `palm keys show` prints of a key file: a device key's public half, or a recipient key's
    suite, kid and public half (its private file, or the PATH.pub that `palm keys recipient` wrote)."""
    path = Path(path)
    try:
        head = inputs.read_bytes(path, what="key file", limit=MAX_KEY_FILE, follow_symlinks=False)
    except inputs.InputError as exc:
        raise KeyFileError(str(exc)) from None
    if not head.lstrip().startswith(b"-----"):  # PATH.pub: base64 of the raw public key
        try:
            raw = base64.b64decode(head.strip(), validate=True)
        except ValueError:
            raw = b""
        if len(raw) not in (X25519_PUBLIC_LEN, XWING_PUBLIC_LEN):
            raise KeyFileError(
                f"{str(path)!r} is not a PEM private key ('-----BEGIN PRIVATE KEY-----') nor a recipient "
                f"public key (base64 of {XWING_PUBLIC_LEN} or {X25519_PUBLIC_LEN} bytes, as PATH.pub)"
            )
        pub = recipient_public(raw)
        return [f"recipient public key: {pub.suite}, kid {pub.kid}", f"public key: {b64(raw)}"]
    data = _read_private(path, "key file")
    seed = _xwing_seed_of(data)
    if seed is not None:
        rec = xwing_from_seed(seed)
        return [f"recipient key: {rec.suite}, kid {rec.kid}", f"public key: {b64(rec.public_raw)}"]
    key = _parse_private(data, path, "key file")
    if isinstance(key, X25519PrivateKey):
        raw = raw_public(key)
        return [f"recipient key: {SUITE_X25519}, kid {kid(raw)}", f"public key: {b64(raw)}"]
    return ["device key: Ed25519", f"public key: {b64(raw_public(key))}"]
