"""Structured logs: one JSON object per line on stdout, which journald keeps.

Two guards stand between a caller and the output, so that pixels and key bytes cannot reach a log
even by mistake:

- a filter, before any formatting: an argument or field that is bytes, a buffer, an array or
  anything image-like becomes its type and size; text is cut; a value whose ``str`` raises becomes
  its type; an exception becomes its type and its (guarded) message, never a traceback;
- the handler, on the final text whatever formatter made it: a long run of base64- or hex-like
  characters (a key, an encoded buffer), of escaped or unprintable bytes (a bytes repr), or of
  numbers (an array's or a list's repr, pixels) becomes ``<... withheld>``, and the line is cut.

The handler never raises: a record that cannot be formatted is logged as that fact. Uncaught
exceptions (in the main thread and in others) and ``warnings`` go through the same path.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any

import numpy as np

MAX_TEXT = 500
#: the longest line written, after everything else
MAX_LINE = 4000
#: attributes every LogRecord has; anything else came in through ``extra=``
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

#: What the final text may not hold. Base64 of 24 bytes or more (a key is 32) mixing letters and
#: digits or both cases, or hex of 24 bytes or more: a capture id (dashed), a kid (16 bytes of hex),
#: a path or a word is none of these.
_ENCODED = re.compile(r"[A-Za-z0-9+/=]{32,}")
#: escaped bytes, as a bytes repr (or JSON, doubled) shows them, a few printable characters apart
_ESC = r"\\{1,2}(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[0-7]{3}|[ntr0])"
_ESCAPED = re.compile(rf"(?:{_ESC}[^\\\s]{{0,3}}){{4,}}")
#: raw bytes decoded as text: characters outside printable ASCII, a few printable ones apart
_RAW = re.compile(r"(?:[^\x20-\x7e\t\n][\x20-\x7e]{0,3}){6,}")
#: eight or more numbers in a row (an array's or a list's repr: pixel values)
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_NUMBERS = re.compile(rf"(?:{_NUM}[\s,;.\[\]()]+){{7,}}{_NUM}")


def _looks_encoded(run: str) -> bool:
    if all(c in "0123456789abcdefABCDEF" for c in run):
        return len(run) >= 48
    kinds = any(c.isdigit() for c in run) + any(c.isupper() for c in run) + any(c.islower() for c in run)
    return kinds >= 2


def redact(text: str) -> str:
    """``text`` with every run that could carry a key or pixels replaced by what it was, and cut to
    MAX_LINE characters."""
    if len(text) > 4 * MAX_LINE:
        text = text[: 4 * MAX_LINE]  # no scan of a 50 MB line: what is beyond is never written
    text = _ESCAPED.sub(lambda m: f"<{len(m.group())} chars of escaped bytes withheld>", text)
    text = _RAW.sub(lambda m: f"<{len(m.group())} chars of raw bytes withheld>", text)
    text = _NUMBERS.sub(lambda m: f"<{len(m.group())} chars of numbers withheld>", text)
    text = _ENCODED.sub(
        lambda m: f"<{len(m.group())} encoded chars withheld>" if _looks_encoded(m.group()) else m.group(),
        text,
    )
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + "... (cut)"


def _redacted(value: Any) -> Any:
    """Every text in a scrubbed value `redact`ed (a field, a list of them)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a __str__ that raises must not make logging raise
        return f"<{type(value).__name__}: unprintable>"


def scrub(value: Any) -> Any:
    """A value safe to log: no bytes, buffers or arrays; long text cut."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{type(value).__name__}: {len(value)} bytes withheld>"
    if isinstance(value, np.ndarray):
        return f"<array {'x'.join(map(str, value.shape))} {value.dtype} withheld>"
    if hasattr(value, "__array__") or hasattr(value, "__array_interface__"):
        return f"<{type(value).__name__} withheld>"
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + f"... ({len(value)} chars)"
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        return {_str(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    return scrub(_str(value))


class Scrub(logging.Filter):
    """Makes every record safe before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._scrub(record)
        except Exception as exc:  # never raise at the caller's logging call
            record.msg, record.args = f"a log record could not be made safe ({type(exc).__name__})", None
        return True

    @staticmethod
    def _scrub(record: logging.LogRecord) -> None:
        if record.args:
            try:
                args: Any = (
                    {k: scrub(v) for k, v in record.args.items()}
                    if isinstance(record.args, Mapping)
                    else tuple(scrub(a) for a in record.args)
                )
                message = _str(record.msg) % args
            except Exception as exc:  # a format that does not fit its arguments
                message = f"{scrub(_str(record.msg))} (arguments did not fit: {type(exc).__name__})"
            record.msg, record.args = scrub(message), None
        else:
            record.msg = scrub(record.msg if isinstance(record.msg, str) else _str(record.msg))
        for key in set(record.__dict__) - _STANDARD:
            record.__dict__[key] = scrub(record.__dict__[key])
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback's locals are not printed, but an exception's message might carry anything.
            error = record.exc_info[1]
            record.exc_text = f"{type(error).__name__}: {scrub(_str(error))}"
            record.exc_info = None
        record.stack_info = None


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(_str(record.getMessage())),
        }
        for key in set(record.__dict__) - _STANDARD:
            out[key] = _redacted(scrub(record.__dict__[key]))
        if record.exc_text:
            out["error"] = redact(record.exc_text)
        return json.dumps(out, default=str)


class Plain(logging.Formatter):
    """One line a person reads in a terminal: level, message, then the fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={record.__dict__[k]}" for k in sorted(set(record.__dict__) - _STANDARD))
        text = f"palm: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_text:
            text += f" ({record.exc_text})"
        return f"{text}  {fields}" if fields else text


class SafeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose every line is `redact`ed after formatting, whatever the formatter,
    and which never raises."""

    def __init__(self, stream: IO[str], *, as_json: bool) -> None:
        super().__init__(stream)
        self.as_json = as_json
        self.addFilter(Scrub())

    def format(self, record: logging.LogRecord) -> str:
        try:
            text = super().format(record)
        except Exception as exc:
            text = f"a log record could not be formatted ({type(exc).__name__})"
            if self.as_json:
                text = json.dumps({"ts": round(time.time(), 3), "level": "error", "msg": text})
        lines = [redact(line) for line in text.splitlines() or [""]]
        if self.as_json and len(lines) == 1:
            return lines[0] if _is_json(lines[0]) else _as_json_line(record, lines[0])
        return " | ".join(lines) if len(lines) > 1 else lines[0]

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass  # a failed write (a closed stream) is not the caller's problem, nor printed with a traceback


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _as_json_line(record: logging.LogRecord, text: str) -> str:
    """A line a redaction cut (or another formatter made) as one JSON object, so journald's
    readers still parse every line."""
    return json.dumps({"ts": round(time.time(), 3), "level": record.levelname.lower(), "msg": text})


def _uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("device").critical("uncaught exception", exc_info=(kind, exc, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def setup(
    stream: IO[str] | None = None, *, as_json: bool = True, level: int = logging.INFO
) -> logging.Handler:
    """Send the logs, scrubbed, to ``stream`` (stdout by default): JSON lines, or plain lines. The
    root logger's handler of this kind is replaced; uncaught exceptions and warnings come to it too."""
    handler = SafeHandler(stream or sys.stdout, as_json=as_json)
    handler.setFormatter(JsonLines() if as_json else Plain())
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, SafeHandler):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    return handler


def teardown(handler: logging.Handler) -> None:
    """Undo `setup` (tests)."""
    logging.getLogger().removeHandler(handler)
    logging.captureWarnings(False)
    sys.excepthook = sys.__excepthook__
    threading.excepthook = threading.__excepthook__
