"""The request body both ways: the scanner's exact layout, and a receiver that accepts any RFC 7578
encoding of the two parts (protocol.md, "Receivers accept any RFC 7578 encoding") and refuses the
rest. Clients we did not write (requests' files=, curl -F) are in tests/test_ingest.py."""

# ruff: noqa: E501 - the tables read best one body a line

from __future__ import annotations

import pytest

from device.errors import ProtocolError
from device.protocol import multipart


def test_multipart_the_scanner_writes_exactly_the_protocols_layout() -> None:
    body, ctype = multipart.encode(b'{"v":1}', b"\x00\xffsealed")
    assert ctype.startswith("multipart/form-data; boundary=palm-")
    assert multipart.decode(body, ctype) == (b'{"v":1}', b"\x00\xffsealed")
    boundary = ctype.split("=", 1)[1]
    text = body.decode("latin-1")
    assert text.startswith(
        f'--{boundary}\r\nContent-Disposition: form-data; name="envelope"\r\n'
        "Content-Type: application/json\r\n\r\n"
    )
    assert text.endswith(f"--{boundary}--\r\n")


ENV, SEALED = b'{"v":2,"x":"\r\n--b"}', bytes(range(256)) * 3 + b"\r\n\r\n--\r\n"


def _body(
    parts: list[tuple[str, bytes]], *, preamble: bytes = b"", epilogue: bytes = b"", b: str = "XyZ"
) -> bytes:
    out = preamble
    for head, data in parts:
        out += f"--{b}\r\n{head}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{b}--\r\n".encode() + epilogue


ENVELOPE = 'Content-Disposition: form-data; name="envelope"\r\nContent-Type: application/json'
SEALED_PART = 'Content-Disposition: form-data; name="sealed"\r\nContent-Type: application/octet-stream'


@pytest.mark.parametrize(
    ("what", "body"),
    [
        ("filenames, as requests' files= sends", _body([
            ('Content-Disposition: form-data; name="envelope"; filename="envelope"\r\nContent-Type: application/json', ENV),
            ('Content-Disposition: form-data; name="sealed"; filename="sealed"\r\nContent-Type: application/octet-stream', SEALED)])),
        ("header names in any case", _body([
            ('content-disposition: form-data; name="envelope"\r\nCONTENT-TYPE: application/json', ENV),
            ('CONTENT-DISPOSITION: FORM-DATA; name="sealed"\r\ncontent-type: Application/Octet-Stream', SEALED)])),
        ("headers in any order", _body([
            ('Content-Type: application/json\r\nContent-Disposition: form-data; name="envelope"', ENV),
            ('Content-Type: application/octet-stream\r\nContent-Disposition: form-data; name=sealed', SEALED)])),
        ("extra part headers", _body([(ENVELOPE + "\r\nX-Extra: 1", ENV), (SEALED_PART + "\r\nContent-Length: 797", SEALED)])),
        ("a charset", _body([(ENVELOPE + "; charset=utf-8", ENV), (SEALED_PART, SEALED)])),
        ("the parts in the other order", _body([(SEALED_PART, SEALED), (ENVELOPE, ENV)])),
        ("a preamble and an epilogue", _body([(ENVELOPE, ENV), (SEALED_PART, SEALED)], preamble=b"This is a preamble.\r\n", epilogue=b"bye\r\n")),
        ("no part Content-Type", _body([('Content-Disposition: form-data; name="envelope"', ENV), ('Content-Disposition: form-data; name="sealed"', SEALED)])),
        ("binary Content-Transfer-Encoding", _body([(ENVELOPE, ENV), (SEALED_PART + "\r\nContent-Transfer-Encoding: binary", SEALED)])),
    ],
)  # fmt: skip
def test_multipart_a_receiver_accepts_any_rfc_7578_encoding(what: str, body: bytes) -> None:
    """The protocol's section "Receivers accept any RFC 7578 encoding": what ordinary clients send."""
    for ctype in ("multipart/form-data; boundary=XyZ", 'Multipart/Form-Data; boundary="XyZ"; charset=utf-8'):
        assert multipart.decode(body, ctype) == (ENV, SEALED), what


@pytest.mark.parametrize(
    ("what", "body", "says"),
    [
        ("a third part", _body([(ENVELOPE, ENV), (SEALED_PART, SEALED), ('Content-Disposition: form-data; name="x"', b"z")]), "only envelope and sealed"),
        ("a part twice", _body([(ENVELOPE, ENV), (ENVELOPE, ENV), (SEALED_PART, SEALED)]), "twice"),
        ("no sealed part", _body([(ENVELOPE, ENV)]), "exactly one envelope and one sealed"),
        ("another content type", _body([(ENVELOPE.replace("application/json", "text/plain"), ENV), (SEALED_PART, SEALED)]), "Content-Type application/json"),
        ("no closing boundary", _body([(ENVELOPE, ENV), (SEALED_PART, SEALED)])[:-8], "well-formed"),
        ("no opening boundary", b"junk" + _body([(ENVELOPE, ENV), (SEALED_PART, SEALED)]), "exactly one envelope"),
        ("base64 transfer encoding", _body([(ENVELOPE, ENV), (SEALED_PART + "\r\nContent-Transfer-Encoding: base64", b"AAAA")]), "Transfer-Encoding"),
        ("not form-data", _body([(ENVELOPE.replace("form-data", "attachment"), ENV), (SEALED_PART, SEALED)]), "form-data"),
        ("a nested multipart", _body([(ENVELOPE, ENV), ('Content-Disposition: form-data; name="sealed"\r\nContent-Type: multipart/mixed; boundary=in', b"--in\r\n\r\nx\r\n--in--")]), "multipart"),
        ("nothing", b"", "well-formed"),
    ],
)  # fmt: skip
def test_multipart_a_receiver_still_refuses_what_the_protocol_refuses(
    what: str, body: bytes, says: str
) -> None:
    with pytest.raises(ProtocolError, match="malformed") as err:
        multipart.decode(body, "multipart/form-data; boundary=XyZ")
    assert says in err.value.detail, (what, err.value.detail)


def test_multipart_the_content_type_must_be_form_data_with_a_boundary() -> None:
    body, _ = multipart.encode(ENV, SEALED)
    for bad in ("application/json", "multipart/form-data", "", "multipart/form-data; boundary=a\r\nX: y"):
        with pytest.raises(ProtocolError, match="multipart/form-data with a boundary"):
            multipart.decode(body, bad)


@pytest.mark.parametrize(
    ("what", "body", "says"),
    [
        ("200000 empty parts", b"--XyZ\r\n\r\n\r\n" * 200_000 + b"--XyZ--\r\n", "more than 2 parts"),
        ("8 MB of line feeds", _body([(ENVELOPE, ENV), (SEALED_PART, b"\n" * 8_000_000)]), "line breaks"),
        ("a header folded 200000 times", _body([(ENVELOPE + "\r\n x" * 200_000, ENV), (SEALED_PART, SEALED)]), "line breaks"),
        ("a part header of 20 kB", _body([(ENVELOPE + "\r\nX-Pad: " + "p" * 20_000, ENV), (SEALED_PART, SEALED)]), "headers take more than"),
        ("3000 parentheses in a header", _body([(ENVELOPE + " " + "(" * 3000, ENV), (SEALED_PART, SEALED)]), "RecursionError"),
        ("a Content-Type of 7 kB", _body([(ENVELOPE.replace("application/json", "a/" + "b" * 7000), ENV), (SEALED_PART, SEALED)]), "... ("),
        ("two Content-Transfer-Encodings", _body([(ENVELOPE, ENV), (SEALED_PART + "\r\nContent-Transfer-Encoding: binary\r\nContent-Transfer-Encoding: base64", SEALED)]), "twice"),
    ],
)  # fmt: skip
def test_multipart_bodies_the_mime_parser_is_slow_on_are_refused_first(
    what: str, body: bytes, says: str
) -> None:
    """The review's cases: each took the standard library's parser seconds to minutes (or raised
    RecursionError) before any signature was checked; now each is refused at once, named, and a
    detail never echoes a long value."""
    with pytest.raises(ProtocolError, match="malformed") as err:
        multipart.decode(body, "multipart/form-data; boundary=XyZ")
    assert says in err.value.detail and len(err.value.detail) < 300, (what, err.value.detail[:300])
