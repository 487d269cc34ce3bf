"""Capture upload protocol v1 (see shared/docs/protocol.md): shared by the scanner and the ingest.

Everything here works on bytes in memory. The scanner side builds, seals and signs;
the receiving side checks and opens. Nothing here touches the camera, the network
or the disk (key files excepted, in keys.py).
"""

VERSION = 1
SUITE = "X25519-SHA256-AES256GCM"
INFO_PREFIX = b"palm-capture/v1\x00"
SIG_PREFIX = b"palm-capture/v1/sig\x00"
MAX_BODY = 8 * 1024 * 1024
MAX_MEMBERS = 16
MAX_SIDE = 4096
STALE_AFTER_S = 300
