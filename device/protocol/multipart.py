"""The request body: multipart/form-data (RFC 7578) with exactly the parts envelope and sealed.

The scanner writes exactly what the protocol says (``encode``). The receiver (``decode``) accepts
every valid RFC 7578 encoding of those two parts, as ordinary HTTP clients send them (``requests``'
``files=``, ``curl -F``, Go's ``mime/multipart``): a ``filename`` or other parameter in
Content-Disposition, header names in any case and order, extra part headers, a ``charset``
parameter, the parts in either order, a preamble or an epilogue. It parses with the standard
library's MIME parser (``email`` with the HTTP policy) rather than by hand, and still refuses what
the protocol refuses: anything but exactly one ``envelope`` and one ``sealed`` part. Each part's
bytes are taken exactly as received.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
from email.message import EmailMessage

from device.errors import ProtocolError
from device.inputs import cut

PARTS = (("envelope", "application/json"), ("sealed", "application/octet-stream"))
#: Content-Transfer-Encoding values that leave the bytes as they are (RFC 7578 4.7 deprecates the rest)
_IDENTITY = {"", "7bit", "8bit", "binary"}


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


def _malformed(detail: str) -> ProtocolError:
    return ProtocolError("malformed", detail)


#: at most this many delimiter lines (two parts and the close, and one spare), this much header per
#: part, and this many line breaks per byte: the MIME parser is line-based and slow on pathological
#: bodies (200,000 empty parts, folded headers, megabytes of line feeds), and it runs before the
#: signature is checked
MAX_DELIMITERS, MAX_PART_HEADER, MAX_LINES_PER_KIB = 4, 8192, 64


def decode(body: bytes, content_type: str) -> tuple[bytes, bytes]:
    """(envelope, sealed) from any valid RFC 7578 body, or ProtocolError('malformed')."""
    if not content_type or "\r" in content_type or "\n" in content_type or len(content_type) > 1024:
        raise _malformed("Content-Type is not multipart/form-data with a boundary")
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    try:
        outer = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head)
        boundary = outer.get_boundary() if outer.get_content_type() == "multipart/form-data" else None
    except (RecursionError, ValueError, LookupError, TypeError):
        boundary = None
    if not boundary:
        raise _malformed("Content-Type is not multipart/form-data with a boundary")
    _screen(body, boundary.encode("latin-1", "replace"))
    try:
        return _parts(head, body)
    except (RecursionError, ValueError, LookupError, TypeError, IndexError) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise _malformed(f"body is not multipart/form-data ({type(exc).__name__})") from None


def _screen(body: bytes, boundary: bytes) -> None:
    """Refuse, in linear time, what no valid body of two parts looks like."""
    marker = b"--" + boundary
    if body.count(marker) > MAX_DELIMITERS:
        raise _malformed(f"body has more than {MAX_DELIMITERS - 2} parts: exactly envelope and sealed")
    if body.count(b"\n") > MAX_LINES_PER_KIB * (len(body) // 1024 + 16):
        raise _malformed("body has more line breaks than two parts of JSON and ciphertext hold")
    at = body.find(marker)
    while at >= 0:
        end = body.find(b"\r\n\r\n", at)
        nxt = body.find(marker, at + len(marker))
        if end >= 0 and (nxt < 0 or end < nxt) and end - at > MAX_PART_HEADER:
            raise _malformed(f"a part's headers take more than {MAX_PART_HEADER} bytes")
        at = nxt


def _parts(head: bytes, body: bytes) -> tuple[bytes, bytes]:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if msg.defects:  # no opening or closing boundary, a part without headers' end, ...
        raise _malformed(f"body is not well-formed multipart: {type(msg.defects[0]).__name__}")
    parts = msg.get_payload()
    if not isinstance(parts, list):
        raise _malformed("body has no parts")
    found: dict[str, bytes] = {}
    for part in parts:
        if not isinstance(part, EmailMessage):
            raise _malformed("body holds something that is not a part")
        name = _name(part)
        if name in found:
            raise _malformed(f"body has the part {name!r} twice")
        found[name] = _data(part, name)
    names = [n for n, _ in PARTS]
    if sorted(found) != sorted(names):
        raise _malformed(
            f"body has the parts {sorted(found)[:4]}: exactly one envelope and one sealed are needed"
        )
    return found["envelope"], found["sealed"]


def _name(part: EmailMessage) -> str:
    if part.defects:
        raise _malformed(f"a part is not well-formed: {type(part.defects[0]).__name__}")
    if part.get_content_disposition() != "form-data":
        raise _malformed("a part has no Content-Disposition: form-data")
    name = part.get_param("name", header="content-disposition")
    if not isinstance(name, str) or name not in ("envelope", "sealed"):
        shown = name[:40] if isinstance(name, str) else None
        raise _malformed(f"a part is named {shown!r}: only envelope and sealed belong in the body")
    return name


def _data(part: EmailMessage, name: str) -> bytes:
    if part.is_multipart():
        raise _malformed(f"part {name} is itself multipart")
    want = dict(PARTS)[name]
    ctype = part.get("content-type")
    if ctype is not None and part.get_content_type() != want:
        raise _malformed(f"part {name} must have Content-Type {want}, not {cut(part.get_content_type())}")
    if (
        len(part.get_all("content-transfer-encoding") or []) > 1
        or len(part.get_all("content-disposition") or []) > 1
    ):
        raise _malformed(f"part {name} has a header twice")
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte not in _IDENTITY:
        raise _malformed(
            f"part {name} has Content-Transfer-Encoding {cte[:20]}: RFC 7578 sends bytes as they are"
        )
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        raise _malformed(f"part {name} has no content")
    return data
