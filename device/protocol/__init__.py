"""Capture upload protocol, versions 1 and 2 (see shared/docs/protocol.md): shared by the scanner
and the ingest.

Everything here works on bytes in memory. The scanner side builds, seals and signs;
the receiving side checks and opens. Nothing here touches the camera, the network
or the disk (key files excepted, in keys.py).
"""

VERSIONS = (1, 2)
#: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM: version 1's only suite
SUITE_X25519 = "X25519-SHA256-AES256GCM"
#: X-Wing (ML-KEM-768 + X25519, KEM 0x647A), HKDF-SHA256, AES-256-GCM: version 2's default
SUITE_XWING = "XWING-SHA256-AES256GCM"
SUITES = {1: (SUITE_X25519,), 2: (SUITE_X25519, SUITE_XWING)}
MAX_BODY = 8 * 1024 * 1024
MAX_MEMBERS = 16
MAX_SIDE = 4096
STALE_AFTER_S = 300


def info_prefix(version: int) -> bytes:
    """The HPKE ``info`` label of a version, before SHA-256(E)."""
    return f"palm-capture/v{version}".encode() + b"\x00"


def sig_prefix(version: int) -> bytes:
    """The signed message's label of a version, before SHA-256(E) and SHA-256(S)."""
    return f"palm-capture/v{version}/sig".encode() + b"\x00"
