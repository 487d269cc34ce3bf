"""The request body: multipart/form-data (RFC 7578) with exactly the parts envelope and sealed.

Both sides are strict: the scanner writes exactly what the protocol says, and
the receiver accepts nothing else.
"""

from __future__ import annotations

import os
import re

from device.errors import ProtocolError

PARTS = (("envelope", "application/json"), ("sealed", "application/octet-stream"))
BOUNDARY = re.compile(
    r'multipart/form-data;\s*boundary=(?:"([^"]{1,70})"|([0-9A-Za-z\'()+_,./:=?-]{1,70}))\s*$', re.IGNORECASE
)


def encode(envelope: bytes, sealed: bytes) -> tuple[bytes, str]:
    """The body and its Content-Type header value."""
    while True:
        boundary = "palm-" + os.urandom(16).hex()
        marker = b"--" + boundary.encode()
        if marker not in envelope and marker not in sealed:
            break
    chunks = []
    for (name, ctype), data in zip(PARTS, (envelope, sealed), strict=True):
        chunks.append(marker + b"\r\n")
        chunks.append(f'Content-Disposition: form-data; name="{name}"\r\n'.encode())
        chunks.append(f"Content-Type: {ctype}\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(marker + b"--\r\n")
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def decode(body: bytes, content_type: str) -> tuple[bytes, bytes]:
    """(envelope, sealed), or ProtocolError('malformed')."""
    m = BOUNDARY.match(content_type or "")
    if not m:
        raise ProtocolError("malformed", "Content-Type is not multipart/form-data with a boundary")
    marker = b"--" + (m.group(1) or m.group(2)).encode()
    if not body.startswith(marker + b"\r\n"):
        raise ProtocolError("malformed", "body does not start with the boundary")
    closing = b"\r\n" + marker + b"--"
    end = body.rfind(closing)
    if end < 0 or body[end + len(closing) :] not in (b"", b"\r\n"):
        raise ProtocolError("malformed", "body does not end with the closing boundary")
    pieces = body[len(marker) + 2 : end].split(b"\r\n" + marker + b"\r\n")
    if len(pieces) != 2:
        raise ProtocolError("malformed", f"body has {len(pieces)} parts: exactly envelope and sealed")
    out = []
    for (name, ctype), piece in zip(PARTS, pieces, strict=True):
        head, sep, data = piece.partition(b"\r\n\r\n")
        if not sep:
            raise ProtocolError("malformed", f"part {name} has no header end")
        headers = {}
        for line in head.split(b"\r\n"):
            key, colon, value = line.partition(b":")
            if not colon:
                raise ProtocolError("malformed", f"part {name} has a bad header line")
            headers[key.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        disposition = headers.get("content-disposition", "")
        if not re.fullmatch(rf'form-data;\s*name="{name}"', disposition):
            raise ProtocolError(
                "malformed", f"expected part {name!r} here (parts in order: envelope, sealed)"
            )
        if headers.get("content-type", "").lower() != ctype:
            raise ProtocolError("malformed", f"part {name} must have Content-Type {ctype}")
        out.append(data)
    return out[0], out[1]
