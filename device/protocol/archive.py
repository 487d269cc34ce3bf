"""The plaintext P: a POSIX ustar archive in memory, manifest.json then one PNG per frame.

The scanner builds it from cropped frames; the receiver validates it (plain
names, at most 16 members, 8-bit greyscale PNGs within 4096 x 4096, roles as
in the envelope) without ever decoding an image whose header promises too much.
"""

from __future__ import annotations

import io
import json
import re
import struct
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from device import inputs
from device.errors import ProtocolError
from device.inputs import cut
from device.protocol import MAX_MEMBERS, MAX_SIDE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MEMBER_NAME = re.compile(r"(manifest\.json|(ambient|flood|sector-[0-9])\.png)")
MANIFEST_FIELDS = {"role", "width", "height", "roi", "exposure_us", "gain", "leds", "timestamp_ns"}


@dataclass(frozen=True, eq=False)
class CaptureFrame:
    """A frame handed to the sealer: the palm crop and how it was taken."""

    role: str
    pixels: np.ndarray  # uint8, 2-D, the crop
    roi: tuple[int, int, int, int]  # x, y, w, h in sensor pixels
    exposure_us: int
    gain: float
    leds: str
    timestamp_ns: int

    def __repr__(self) -> str:  # never the pixels
        return f"CaptureFrame({self.role}, {self.pixels.shape[1]}x{self.pixels.shape[0]}, roi={self.roi})"


BLOCK = 512
RECORD = 20 * BLOCK
STORED_MAX = 65535  # bytes in one stored deflate block


def _png_size(w: int, h: int) -> int:
    raw = h * (w + 1)
    blocks = -(-raw // STORED_MAX)
    return len(PNG_SIGNATURE) + (12 + 13) + (12 + 2 + 5 * blocks + raw + 4) + 12


def _chunk_end(buf: bytearray, start: int, end: int) -> int:
    """Write the length before and the CRC after the chunk type and data at [start + 4, end)."""
    struct.pack_into(">I", buf, start, end - start - 8)
    struct.pack_into(">I", buf, end, zlib.crc32(memoryview(buf)[start + 4 : end]))
    return end + 4


def _write_png(buf: bytearray, at: int, img: np.ndarray) -> int:
    """An 8-bit greyscale PNG of img written into buf at ``at``; returns where it ends.

    The image data goes in stored (uncompressed) deflate blocks: lossless, readable by
    every PNG decoder, a fraction of a millisecond per frame, and written straight into
    the archive buffer, so no copy of the pixels is left in an immutable object.
    """
    h, w = img.shape
    buf[at : at + 8] = PNG_SIGNATURE
    i = at + 8
    buf[i + 4 : i + 8] = b"IHDR"
    struct.pack_into(">IIBBBBB", buf, i + 8, w, h, 8, 0, 0, 0, 0)
    i = _chunk_end(buf, i, i + 8 + 13)
    rows = np.zeros((h, w + 1), np.uint8)  # filter byte 0 (None) before each row
    rows[:, 1:] = img
    raw = memoryview(rows.data).cast("B")
    start = i
    buf[i + 4 : i + 8] = b"IDAT"
    j = i + 8
    buf[j : j + 2] = b"\x78\x01"
    j += 2
    for off in range(0, len(raw), STORED_MAX):
        n = min(STORED_MAX, len(raw) - off)
        buf[j] = 1 if off + n == len(raw) else 0
        struct.pack_into("<HH", buf, j + 1, n, n ^ 0xFFFF)
        buf[j + 5 : j + 5 + n] = raw[off : off + n]
        j += 5 + n
    struct.pack_into(">I", buf, j, zlib.adler32(raw))
    raw.release()
    rows.fill(0)
    i = _chunk_end(buf, start, j + 4)
    buf[i + 4 : i + 8] = b"IEND"
    return _chunk_end(buf, i, i + 8)


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o444
    info.mtime = 0
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def build_archive(frames: Sequence[CaptureFrame]) -> bytearray:
    """P as one bytearray, so that it can be zeroed once sealed: ustar, manifest first, one PNG per frame."""
    manifest = {
        "frames": [
            {
                "role": f.role,
                "width": int(f.pixels.shape[1]),
                "height": int(f.pixels.shape[0]),
                "roi": [int(v) for v in f.roi],
                "exposure_us": int(f.exposure_us),
                "gain": float(f.gain),
                "leds": f.leds,
                "timestamp_ns": int(f.timestamp_ns),
            }
            for f in frames
        ]
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    members = [("manifest.json", len(manifest_bytes))]
    for f in frames:
        if f.pixels.dtype != np.uint8 or f.pixels.ndim != 2:
            raise ProtocolError("malformed", f"frame {f.role} is not 8-bit greyscale")
        members.append((f"{f.role}.png", _png_size(f.pixels.shape[1], f.pixels.shape[0])))
    total = sum(BLOCK + -(-size // BLOCK) * BLOCK for _, size in members) + 2 * BLOCK
    buf = bytearray(-(-total // RECORD) * RECORD)  # zero-filled: padding and the end blocks
    at = 0
    for k, (name, size) in enumerate(members):
        buf[at : at + BLOCK] = _header(name, size)
        at += BLOCK
        if k == 0:
            buf[at : at + size] = manifest_bytes
        else:
            end = _write_png(buf, at, frames[k - 1].pixels)
            assert end - at == size
        at += -(-size // BLOCK) * BLOCK
    return buf


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """Width, height, bit depth and colour type from the IHDR chunk, checked before decoding."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    (length,) = struct.unpack(">I", data[8:12])
    if length != 13 or zlib.crc32(data[12:29]) != struct.unpack(">I", data[29:33])[0]:
        raise ValueError("damaged PNG header")
    w, h, depth, colour = struct.unpack(">IIBB", data[16:26])
    return w, h, depth, colour


#: Adam7's passes: (first column, first row, column step, row step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_data_fits(data: bytes, w: int, h: int) -> None:
    """An 8-bit greyscale PNG's image data inflates to exactly what its header promises (each row
    a filter byte and w bytes, Adam7 passes if interlaced), and nothing follows it: a header saying
    8 x 8 over data for 4096 x 4096 is refused, before anything is decoded. ValueError if not."""
    if len(data) < 33:
        raise ValueError("not a PNG")
    interlaced = data[28] == 1
    if interlaced:
        expected = 0
        for x0, y0, dx, dy in _ADAM7:
            cols, rows = max(0, -(-(w - x0) // dx)), max(0, -(-(h - y0) // dy))
            expected += rows * (cols + 1) if cols else 0
    else:
        expected = h * (w + 1)
    inflate = zlib.decompressobj()
    got, pos = 0, 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            chunk = data[pos + 8 : pos + 8 + length]
            while chunk:
                if inflate.eof:
                    raise ValueError("image data goes on after its zlib stream")
                out = inflate.decompress(chunk, expected + 1 - got)
                got += len(out)
                if got > expected:
                    raise ValueError(f"image data inflates to more than its header's {w}x{h}")
                chunk = inflate.unconsumed_tail
        elif kind == b"IEND":
            break
        pos += 12 + length
    if got != expected or not inflate.eof or inflate.unused_data:
        raise ValueError(f"image data does not inflate to exactly its header's {w}x{h}")


@dataclass(frozen=True)
class ArchiveSummary:
    roles: list[str]
    sizes: list[tuple[int, int]]
    #: the decoded frame of the role asked for (``keep``), for a matcher in the receiver's memory
    kept: np.ndarray | None = field(default=None, repr=False)


def check_ustar_headers(plaintext: bytes) -> None:
    """Walk the archive's 512-byte headers before tarfile parses any: only plain files (typeflag
    0), each size in octal within the archive, at most MAX_MEMBERS. tarfile would first parse PAX,
    GNU long-name and sparse headers, and on Python before 3.11.10 its PAX-header regex takes
    seconds over tens of kB (CVE-2024-6232). ProtocolError('malformed') otherwise."""
    pos, n = 0, 0
    while pos + BLOCK <= len(plaintext):
        block = plaintext[pos : pos + BLOCK]
        if not any(block):
            return  # the end-of-archive blocks
        n += 1
        if n > MAX_MEMBERS:
            raise ProtocolError("malformed", f"archive has more than {MAX_MEMBERS} members")
        if block[156:157] not in (b"0", b"\0"):
            kind = block[156:157].decode("latin-1")
            raise ProtocolError(
                "malformed",
                f"archive member {n} is not a plain regular file (type {kind!r}): no links, sparse "
                "files or extended headers",
            )
        field = block[124:136].strip(b"\0 ")
        if not field or any(c not in b"01234567" for c in field):
            raise ProtocolError("malformed", f"archive member {n} has no octal size")
        size = int(field, 8)
        pos += BLOCK + -(-size // BLOCK) * BLOCK
        if pos > len(plaintext):
            raise ProtocolError("malformed", f"archive member {n} claims more bytes than there are")
    if pos != len(plaintext) and pos + BLOCK > len(plaintext):
        raise ProtocolError("malformed", "the archive ends inside a header")


def validate_archive(plaintext: bytes, roles: list[str], keep: str | None = None) -> ArchiveSummary:
    """Receiver step 6: raise ProtocolError('malformed') on anything outside the protocol. Every
    frame is decoded and then blanked, except the one of role ``keep``, which the summary holds."""
    check_ustar_headers(plaintext)
    try:
        tar = tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:")  # noqa: SIM115 - in memory
        members = tar.getmembers()  # at most MAX_MEMBERS plain files: check_ustar_headers
    except tarfile.TarError as exc:
        raise ProtocolError("malformed", f"plaintext is not a ustar archive: {exc}") from None
    if not members or members[0].name != "manifest.json":
        raise ProtocolError("malformed", "the archive's first member is not manifest.json")
    for m in members:
        if not MEMBER_NAME.fullmatch(m.name):  # its type and size: check_ustar_headers, above
            raise ProtocolError("malformed", f"archive member {m.name[:60]!r} is not a plain regular file")
    if len({m.name for m in members}) != len(members):
        raise ProtocolError("malformed", "archive has a member twice")

    def read(m: tarfile.TarInfo) -> bytes:
        f = tar.extractfile(m)
        assert f is not None
        return f.read()

    try:
        manifest: Any = inputs.load_json(read(members[0]), what="manifest.json")
    except inputs.InputError as exc:
        raise ProtocolError("malformed", str(exc)[:200]) from None
    entries = manifest.get("frames") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ProtocolError("malformed", "manifest.json has no list of frames")
    if [e.get("role") for e in entries] != roles:
        raise ProtocolError("malformed", "manifest roles differ from the envelope's content.frames")
    if [m.name for m in members[1:]] != [f"{r}.png" for r in roles]:
        raise ProtocolError("malformed", "archive members do not follow the manifest's roles")
    sizes = []
    kept = None
    for entry, member in zip(entries, members[1:], strict=True):
        if set(entry) != MANIFEST_FIELDS:
            fields = cut(sorted(str(k) for k in entry))
            raise ProtocolError(
                "malformed", f"manifest entry for {cut(entry.get('role'))} has fields {fields}"
            )
        data = read(member)
        try:
            w, h, depth, colour = png_header(data)
        except ValueError as exc:
            raise ProtocolError("malformed", f"{member.name}: {exc}") from None
        if depth != 8 or colour != 0:
            raise ProtocolError("malformed", f"{member.name} is not 8-bit greyscale")
        if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            raise ProtocolError("malformed", f"{member.name} is {w}x{h}: at most {MAX_SIDE}x{MAX_SIDE}")
        if (entry["width"], entry["height"]) != (w, h):
            raise ProtocolError("malformed", f"{member.name} is {w}x{h}, the manifest says otherwise")
        try:
            png_data_fits(data, w, h)
        except ValueError as exc:
            raise ProtocolError("malformed", f"{member.name}: {exc}") from None
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.dtype != np.uint8 or img.shape != (h, w):
            raise ProtocolError("malformed", f"{member.name} does not decode to {w}x{h} greyscale")
        if entry["role"] == keep:
            kept = img
        else:
            img.fill(0)
        sizes.append((w, h))
    return ArchiveSummary(roles=roles, sizes=sizes, kept=kept)
