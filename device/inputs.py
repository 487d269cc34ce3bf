"""One reader for the files a person hands over: a config, a key, a calibration, a manifest, an image.

A technician's file can be anything: a symbolic link to ``/dev/zero``, a FIFO nobody writes, a
50 MB value, JSON nested a million deep, a 5,000-digit integer, ``nan``, a PNG whose header
promises 20000 x 20000 pixels. Each is refused here, before it costs memory or time, by a
:class:`InputError` whose message names the file and what would be valid:

- regular files only: a device, FIFO, socket or folder is named and never read (a FIFO is opened
  without blocking, so nobody's missing writer hangs the command);
- symbolic links are followed (a store may link its config into place) except where the caller
  forbids them: key files, whose permissions are those of the file itself;
- the size is checked before reading, and the read stops one byte past the limit whatever the
  size the file claimed;
- JSON and TOML are scanned for nesting depth before they are parsed (the parsers recurse), and
  numbers of more than ``MAX_NUMBER_CHARS`` characters, NaN and infinity are refused;
- an image's header (PNG, JPEG, BMP) is read before it is decoded, and an image of more than
  ``MAX_PIXELS`` pixels is never decoded;
- a value quoted in a message is cut (:func:`cut`).

Callers turn :class:`InputError` into their own error class (a config's exit 78, an unreadable
line of ``palm check``). This module reads; it never writes.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import struct
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import ScannerError

KiB, MiB = 1024, 1024 * 1024
#: deepest nesting of arrays and tables accepted in JSON or TOML (the files here need 4)
MAX_DEPTH = 32
#: longest number accepted, in characters (a timestamp in ns has 19 digits)
MAX_NUMBER_CHARS = 40
#: largest image decoded: 24 megapixels (the HQ camera's full frame is 12.3)
MAX_PIXELS = 24_000_000
#: longest value quoted in a message
CUT = 60


class InputError(ScannerError, ValueError):
    """A file a person handed over cannot be used; the message names it and why."""


def cut(value: Any, n: int = CUT) -> str:
    """``repr(value)``, at most ``n`` characters and the length of the rest: a 50 MB value quoted in
    an error message is its first characters and its size."""
    if isinstance(value, str | bytes) and len(value) > 4 * n:  # no repr of 50 MB just to cut it
        unit = "bytes" if isinstance(value, bytes) else "characters"
        return f"{repr(value[: 4 * n])[:n]}... ({len(value):,} {unit})"
    if isinstance(value, int) and value.bit_length() > 128:  # repr() of a huge one raises
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except ValueError:  # an integer inside a container, past int()'s digit limit
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_bytes(
    path: str | os.PathLike[str],
    *,
    what: str,
    limit: int,
    follow_symlinks: bool = True,
    check: Callable[[os.stat_result], None] | None = None,
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ``check`` sees its status first (a
    key's permissions). InputError names ``what`` and the path otherwise."""
    name = f"{what} {cut(str(path), 200)}"
    if "\x00" in os.fspath(path):
        raise InputError(f"{what} path {cut(str(path))} holds a NUL character: no file can have that name")
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        raise InputError(f"{name} does not exist") from None
    except OSError as exc:
        raise InputError(f"{name} cannot be read: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise InputError(f"{name} is a symbolic link: give the file itself")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name} is {_kind(st.st_mode)}: expected a regular file")
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{name} is a symbolic link: give the file itself") from None
        raise InputError(f"{name} cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)  # the file opened, not the one stat() saw: it may have been swapped
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{name} is {_kind(st.st_mode)}: expected a regular file")
        if st.st_size > limit:
            raise InputError(f"{name} is {st.st_size:,} bytes: at most {limit:,} are read")
        if check is not None:
            check(st)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(limit + 1 - total, MiB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise InputError(f"{name} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if total > limit:  # it grew while read, or it is a file that lies about its size
        raise InputError(f"{name} is over {limit:,} bytes: at most {limit:,} are read")
    return b"".join(chunks)


def read_text(path: str | os.PathLike[str], *, what: str, limit: int, follow_symlinks: bool = True) -> str:
    data = read_bytes(path, what=what, limit=limit, follow_symlinks=follow_symlinks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {cut(str(path), 200)} is not UTF-8 text (byte {exc.start})") from None


# -- JSON and TOML --------------------------------------------------------------------------------


def _number_error(what: str, text: str) -> InputError:
    return InputError(f"{what} holds the number {cut(text)}: at most {MAX_NUMBER_CHARS} characters")


def _finite(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        if len(text) > MAX_NUMBER_CHARS:
            raise _number_error(what, text)
        value = float(text)
        if not math.isfinite(value):
            raise InputError(f"{what} holds {text}: only finite numbers are valid (no NaN or infinity)")
        return value

    return parse


def load_json(data: bytes | str, *, what: str) -> Any:
    """JSON with nesting, number length and NaN/infinity checked; InputError otherwise."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 JSON (byte {exc.start})") from None

    def integer(s: str) -> int:
        if len(s) > MAX_NUMBER_CHARS:
            raise _number_error(what, s)
        return int(s)

    def constant(s: str) -> Any:
        raise InputError(f"{what} holds {s}: only finite numbers are valid (no NaN or infinity)")

    try:
        data = json.loads(text, parse_int=integer, parse_float=_finite(what), parse_constant=constant)
    except RecursionError:  # the parser recursed to Python's limit: far deeper than MAX_DEPTH
        raise _too_deep(what) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    _check_tree(data, what, root=1)
    return data


def load_toml(text: str, *, what: str) -> dict[str, Any]:
    """TOML with nesting (arrays, inline tables, dotted keys), number length and NaN/infinity checked."""
    try:
        data = tomllib.loads(text, parse_float=_finite(what))
    except InputError:
        raise
    except RecursionError:  # arrays or inline tables nested to Python's limit
        raise _too_deep(what) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{what} is not valid TOML: {cut(str(exc), 200)}") from None
    except ValueError as exc:  # an integer beyond int()'s digit limit that the scan missed
        raise InputError(f"{what} holds a number that cannot be read: {cut(str(exc))}") from None
    _check_tree(data, what, root=0)
    return data


def _too_deep(what: str) -> InputError:
    return InputError(f"{what} nests arrays or tables more than {MAX_DEPTH} deep")


#: an integer of more bits than this has more than MAX_NUMBER_CHARS digits (TOML's 0x... too)
_MAX_INT_BITS = int(MAX_NUMBER_CHARS * math.log2(10))


def _check_tree(data: Any, what: str, root: int) -> None:
    """What the parsers let through, bounded without recursion: nesting (TOML's dotted keys nest
    tables without brackets) and the size of integers (TOML's hex, octal and binary ones too)."""
    stack: list[tuple[Any, int]] = [(data, root)]  # JSON's outer brackets count, TOML's file does not
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH and isinstance(node, dict | list):
            raise _too_deep(what)
        if isinstance(node, int) and not isinstance(node, bool) and node.bit_length() > _MAX_INT_BITS:
            raise InputError(
                f"{what} holds an integer of {node.bit_length()} bits: at most {MAX_NUMBER_CHARS} digits"
            )
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, depth + 1) for c in children)


def read_json(path: str | os.PathLike[str], *, what: str, limit: int = MiB) -> Any:
    """A JSON file, read as :func:`read_bytes` and parsed as :func:`load_json` do."""
    return load_json(read_bytes(path, what=what, limit=limit), what=f"{what} {cut(str(path), 200)}")


def read_toml(path: str | os.PathLike[str], *, what: str, limit: int = MiB) -> dict[str, Any]:
    """A TOML file, read as :func:`read_text` and parsed as :func:`load_toml` do."""
    return load_toml(read_text(path, what=what, limit=limit), what=f"{what} {cut(str(path), 200)}")


# -- images ---------------------------------------------------------------------------------------


IMAGE_FORMATS = ("PNG", "JPEG", "BMP")


def image_format(data: bytes) -> str | None:
    """PNG, JPEG or BMP by the file's first bytes, else None."""
    from device.protocol.archive import PNG_SIGNATURE

    if data[:8] == PNG_SIGNATURE:
        return "PNG"
    if data[:2] == b"\xff\xd8":
        return "JPEG"
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    return None


def image_size(data: bytes, what: str, formats: tuple[str, ...] = IMAGE_FORMATS) -> tuple[int, int]:
    """Width and height from a PNG, JPEG or BMP header (of ``formats``), read before anything is
    decoded."""
    from device.protocol.archive import png_header

    kind = image_format(data)
    if kind not in formats:
        names = formats[0] if len(formats) == 1 else f"{', '.join(formats[:-1])} or {formats[-1]}"
        raise InputError(f"{what} is not a {names} image")
    if kind == "PNG":
        try:
            w, h, _, _ = png_header(data)
        except ValueError as exc:
            raise InputError(f"{what}: {exc}") from None
        return w, h
    if kind == "JPEG":
        return _jpeg_size(data, what)
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # the OS/2 BITMAPCOREHEADER: 16-bit sizes
        cw, ch = struct.unpack("<HH", data[18:22])
        return cw, ch
    w, h = struct.unpack("<ii", data[18:26])
    return abs(w), abs(h)


def _jpeg_size(data: bytes, what: str) -> tuple[int, int]:
    """The frame size from a JPEG's start-of-frame marker (SOF0 to SOF15 but DHT, JPG and DAC)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 9 <= len(data):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        if marker == 0xDA or length < 2:
            break
        i += 2 + length
    raise InputError(f"{what} is a JPEG without a readable frame header")


def decode_image(
    data: bytes, *, what: str, flags: int, formats: tuple[str, ...] = IMAGE_FORMATS
) -> np.ndarray:
    """An image decoded by OpenCV once its header says it is one of ``formats`` and at most
    ``MAX_PIXELS``."""
    import cv2

    w, h = image_size(data, what, formats)
    if w * h > MAX_PIXELS or w == 0 or h == 0:
        raise InputError(
            f"{what} is {w} x {h} pixels by its header: at most {MAX_PIXELS / 1e6:g} megapixels are decoded"
        )
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None:
        raise InputError(f"{what} does not decode: a damaged or unsupported image (PNG, JPEG, BMP)")
    if img.shape[:2] != (h, w):
        raise InputError(f"{what} decodes to {img.shape[1]} x {img.shape[0]}, its header says {w} x {h}")
    return img


def read_image(
    path: Path, *, what: str, flags: int, limit: int = 64 * MiB, formats: tuple[str, ...] = IMAGE_FORMATS
) -> np.ndarray:
    """An image file a person handed over, checked as :func:`read_bytes` and :func:`decode_image` do."""
    data = read_bytes(path, what=what, limit=limit)
    return decode_image(data, what=f"{what} {cut(str(path), 200)}", flags=flags, formats=formats)
