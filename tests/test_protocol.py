"""The receiver's checks of envelope, archive and multipart body, one rule at a time."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from typing import Any

import cv2
import numpy as np
import pytest

from device.errors import ProtocolError
from device.protocol import archive as arch
from device.protocol.envelope import parse_envelope
from tests.helpers import frames, new_keys

NOW = 1795000000.0


def envelope(**change: Any) -> bytes:
    keys = new_keys()
    c = keys.sealer(wall_clock=lambda: NOW).seal(
        frames(2), checks={"quality": {"score": 0.5}}, calibration=None
    )
    obj = json.loads(c.envelope)
    for k, v in change.items():
        if v is ...:
            del obj[k]
        else:
            obj[k] = v
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"v": 3}, "v is 3"),
        ({"v": True}, "v is True"),
        ({"v": "2"}, "v is '2': this ingest"),
        ({"v": 1}, r"version 1: missing \[\], unknown \['checkout'\]"),
        ({"v": 1, "checkout": ...}, "suite 'XWING-SHA256-AES256GCM' is not one of version 1's"),
        ({"checkout": ...}, r"missing \['checkout'\]"),
        ({"checkout": {"id": "c-1", "till": "till-1"}}, "checkout is not null or"),
        ({"checkout": {"id": "c 1", "till": "t", "armed_at": "2026-11-18T11:06:40.000Z"}}, "checkout.id"),
        ({"checkout": {"id": "c", "till": "t:1", "armed_at": "2026-11-18T11:06:40.000Z"}}, "checkout.till"),
        ({"checkout": {"id": "c", "till": "t", "armed_at": "2026-11-18T11:06:40Z"}}, "checkout.armed_at"),
        ({"checkout": {"id": "x" * 65, "till": "t", "armed_at": "2026-11-18T11:06:40.000Z"}}, "checkout.id"),
        ({"checks": {"a": float("nan")}}, "NaN"),
        ({"checks": {"a": 10**50}}, "at most 40 characters"),
        ({"suite": "X25519-SHA256-CHACHA20"}, "suite"),
        ({"capture_id": "0193F0A4-6C1E-7B3A-9F0E-2D4C5B6A7E81"}, "capture_id"),
        ({"capture_id": "0193f0a4-6c1e-1b3a-9f0e-2d4c5b6a7e81"}, "capture_id"),
        ({"created_at": "2026-11-18T11:06:40Z"}, "created_at is not RFC 3339"),
        ({"created_at": "2026-13-18T11:06:40.000Z"}, "not a real date"),
        ({"created_at": "2026-11-18T11:01:39.000Z"}, r"stale: created_at is \+301 s"),
        ({"created_at": "2026-11-18T11:11:41.000Z"}, r"stale: created_at is -301 s"),
        ({"recipient": "ABC"}, "recipient"),
        ({"content": {"type": "application/zip", "frames": ["flood"]}}, "content"),
        ({"content": {"type": "application/x-tar", "frames": ["ambient"]}}, "including flood"),
        ({"content": {"type": "application/x-tar", "frames": ["flood", "flood"]}}, "distinct"),
        ({"content": {"type": "application/x-tar", "frames": ["flood", "../x"]}}, "frame roles"),
        ({"checks": {"img": [[1]]}}, "lists hold"),
        ({"calibration": 7}, "calibration"),
        ({"extra": 1}, r"unknown \['extra'\]"),
        ({"firmware": ...}, r"missing \['firmware'\]"),
    ],
)
def test_envelope_rules(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_envelope(envelope(**change), now_unix=NOW)


def test_envelope_within_the_window_passes() -> None:
    assert parse_envelope(envelope(created_at="2026-11-18T11:01:41.000Z"), now_unix=NOW)["v"] == 2
    armed = {"id": "sale:0042.7", "till": "till-3", "armed_at": "2026-11-18T11:06:00.000Z"}
    assert parse_envelope(envelope(checkout=armed), now_unix=NOW)["checkout"] == armed
    v1 = envelope(v=1, suite="X25519-SHA256-AES256GCM", checkout=...)
    assert parse_envelope(v1, now_unix=NOW)["v"] == 1
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        parse_envelope(b"\xff{", now_unix=NOW)
    with pytest.raises(ProtocolError, match="nests arrays or tables more than 32 deep"):
        parse_envelope(b"[" * 100_000 + b"]" * 100_000, now_unix=NOW)
    with pytest.raises(ProtocolError, match="not a JSON object"):
        parse_envelope(b"[1]", now_unix=NOW)


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def tar_of(members: list[tuple[str, bytes]], *, kind: bytes = tarfile.REGTYPE) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members:
            data = content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.type = kind if name != "manifest.json" else tarfile.REGTYPE
            if kind == tarfile.SYMTYPE and name != "manifest.json":
                info.linkname = "/etc/passwd"
                info.size = 0
                data = b""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def manifest(roles: list[str], w: int = 8, h: int = 8) -> bytes:
    return json.dumps(
        {
            "frames": [
                {
                    "role": r,
                    "width": w,
                    "height": h,
                    "roi": [0, 0, w, h],
                    "exposure_us": 1,
                    "gain": 1.0,
                    "leds": "all",
                    "timestamp_ns": 0,
                }
                for r in roles
            ]
        }
    ).encode()


GREY = png(np.zeros((8, 8), np.uint8))


def bomb_png(w: int, h: int) -> bytes:
    """A PNG header promising w x h pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\0" * 1000)
    return (
        arch.PNG_SIGNATURE
        + chunk
        + struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
        + b"\0\0\0\0IEND\xaeB`\x82"
    )


@pytest.mark.parametrize(
    ("members", "roles", "match"),
    [
        ([("manifest.json", manifest(["flood"])), ("flood.png", GREY)], ["flood"], None),
        ([("flood.png", GREY), ("manifest.json", manifest(["flood"]))], ["flood"], "first member"),
        ([("manifest.json", manifest(["flood"])), ("../flood.png", GREY)], ["flood"], "plain regular file"),
        ([("manifest.json", manifest(["flood"])), ("d/flood.png", GREY)], ["flood"], "plain regular file"),
        ([("manifest.json", manifest(["flood"])), ("/flood.png", GREY)], ["flood"], "plain regular file"),
        ([("manifest.json", manifest(["flood"])), ("flood.png", GREY)], ["flood", "ambient"], "roles differ"),
        ([("manifest.json", manifest(["flood"])), ("ambient.png", GREY)], ["flood"], "follow the manifest"),
        ([("manifest.json", manifest(["flood"])), ("flood.png", b"not a png")], ["flood"], "not a PNG"),
        (
            [("manifest.json", manifest(["flood"])), ("flood.png", png(np.zeros((8, 8, 3), np.uint8)))],
            ["flood"],
            "8-bit greyscale",
        ),
        (
            [("manifest.json", manifest(["flood"])), ("flood.png", png(np.zeros((8, 8), np.uint16)))],
            ["flood"],
            "8-bit greyscale",
        ),
        (
            [("manifest.json", manifest(["flood"], 5000, 5000)), ("flood.png", bomb_png(5000, 5000))],
            ["flood"],
            "at most 4096x4096",
        ),
        (
            [("manifest.json", manifest(["flood"], 9, 8)), ("flood.png", GREY)],
            ["flood"],
            "manifest says otherwise",
        ),
        ([("manifest.json", b"{nope")], [], "not valid JSON"),
        ([("manifest.json", manifest(["flood"]))] + [("flood.png", GREY)] * 16, ["flood"], "more than 16"),
        (
            [("manifest.json", manifest(["flood"])), ("flood.png", GREY), ("flood.png", GREY)],
            ["flood"],
            "twice",
        ),
    ],
)
def test_archive_rules(members: list[tuple[str, bytes]], roles: list[str], match: str | None) -> None:
    data = tar_of(members)
    if match is None:
        assert arch.validate_archive(data, roles).sizes == [(8, 8)]
    else:
        with pytest.raises(ProtocolError, match=match):
            arch.validate_archive(data, roles)


def test_archive_refuses_links_and_non_tar() -> None:
    data = tar_of([("manifest.json", manifest(["flood"])), ("flood.png", GREY)], kind=tarfile.SYMTYPE)
    with pytest.raises(ProtocolError, match="plain regular file"):
        arch.validate_archive(data, ["flood"])
    with pytest.raises(ProtocolError, match=r"not a ustar archive|no octal size"):
        arch.validate_archive(b"\x1f\x8b" + b"\0" * 600, ["flood"])


def _png_raw(w: int, h: int, image_data: bytes, *, interlace: int = 0, after: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, interlace)
    return (
        arch.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", image_data + after) + chunk(b"IEND", b"")
    )


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_png_whose_data_does_not_fit_its_header_is_refused_before_decoding() -> None:
    """The review's case: a header saying 8 x 8 over data for 4096 x 4096 was accepted."""
    good = zlib.compress(bytes(8 * 9))
    arch.png_data_fits(_png_raw(8, 8, good), 8, 8)
    for what, data, says in [
        ("data for 4096 x 4096", _png_raw(8, 8, zlib.compress(bytes(4096 * 4097))), "more than"),
        ("too little data", _png_raw(8, 8, zlib.compress(bytes(8 * 8))), "exactly"),
        ("data after the stream", _png_raw(8, 8, good, after=b"\x00" * 10), "after its zlib stream|exactly"),
        ("a cut stream", _png_raw(8, 8, good[:-6]), "exactly"),
    ]:
        with pytest.raises(ValueError, match=says):
            arch.png_data_fits(data, 8, 8)
        assert what
    with pytest.raises(ProtocolError, match="inflates to more than"):
        member = _png_raw(8, 8, zlib.compress(bytes(4096 * 4097)))
        arch.validate_archive(
            tar_of([("manifest.json", manifest(["flood"])), ("flood.png", member)]), ["flood"]
        )


@pytest.mark.parametrize(("w", "h"), [(1, 1), (7, 5), (33, 17), (320, 240)])
def test_an_interlaced_png_of_the_right_size_is_what_libpng_decodes(w: int, h: int) -> None:
    """Adam7's sizes, checked by libpng (through OpenCV) rather than by the formula itself."""
    expected = 0
    for x0, y0, dx, dy in arch._ADAM7:
        cols, rows = max(0, -(-(w - x0) // dx)), max(0, -(-(h - y0) // dy))
        expected += rows * (cols + 1) if cols else 0
    data = _png_raw(w, h, zlib.compress(bytes(expected)), interlace=1)
    arch.png_data_fits(data, w, h)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape == (h, w)
    with pytest.raises(ValueError):
        arch.png_data_fits(_png_raw(w, h, zlib.compress(bytes(expected - 1)), interlace=1), w, h)


def test_sparse_and_extended_members_are_refused_before_they_are_read() -> None:
    """The review's case: a PAX sparse member of 10.9 kB expanded to 1,343 MB in the ingest; one
    claiming 1 TiB ended in MemoryError."""
    m = manifest(["flood"])
    sparse = tarfile.TarInfo("GNUSparseFile.0/flood.png")
    sparse_map = b"1\n0\n512\n".ljust(512, b"\0")
    sparse.size = len(sparse_map) + 512
    sparse.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "flood.png",
                          "GNU.sparse.realsize": str(1 << 40)}  # fmt: skip
    first = tarfile.TarInfo("manifest.json")
    first.size = len(m)
    with pytest.raises(ProtocolError, match="sparse"):
        arch.validate_archive(_tar([(first, m), (sparse, sparse_map + bytes(512))]), ["flood"])
    extended = tarfile.TarInfo("flood.png")
    extended.size = len(GREY)
    extended.pax_headers = {"comment": "x" * 200}
    with pytest.raises(ProtocolError, match="sparse"):
        arch.validate_archive(_tar([(first, m), (extended, GREY)]), ["flood"])
    whole = tar_of([("manifest.json", m), ("flood.png", GREY)])
    assert arch.validate_archive(whole, ["flood"]).sizes == [(8, 8)]
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        cut_at = tar.getmember("flood.png").offset_data + 10
    with pytest.raises(ProtocolError, match=r"claims more bytes|ustar archive"):
        arch.validate_archive(whole[:cut_at], ["flood"])
