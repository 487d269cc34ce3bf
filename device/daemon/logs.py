"""Structured logs: one JSON object per line on stdout, which journald keeps.

A filter stands between every record and the output: an argument or field that
is bytes, a buffer, an array or anything image-like is replaced by its type and
size, and a message itself longer than a line is cut. Pixels and key bytes
cannot reach a log even by mistake.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

MAX_TEXT = 500
#: attributes every LogRecord has; anything else came in through ``extra=``
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


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
        return {str(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    return scrub(str(value))


class Scrub(logging.Filter):
    """Makes every record safe before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            record.msg = str(scrub(record.msg))
        if record.args:
            if isinstance(record.args, Mapping):
                record.args = {k: scrub(v) for k, v in record.args.items()}
            else:
                record.args = tuple(scrub(a) for a in record.args)
        for key in set(record.__dict__) - _STANDARD:
            record.__dict__[key] = scrub(record.__dict__[key])
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback's locals are not printed, but an exception's message might carry anything.
            exc = record.exc_info[1]
            record.exc_text = f"{type(exc).__name__}: {scrub(str(exc))}"
            record.exc_info = None
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for key in set(record.__dict__) - _STANDARD:
            out[key] = record.__dict__[key]
        if record.exc_text:
            out["error"] = record.exc_text
        return json.dumps(out, default=str)


class Plain(logging.Formatter):
    """One line a person reads in a terminal: level, message, then the fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={record.__dict__[k]}" for k in sorted(set(record.__dict__) - _STANDARD))
        text = f"palm: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_text:
            text += f" ({record.exc_text})"
        return f"{text}  {fields}" if fields else text


def setup(
    stream: IO[str] | None = None, *, as_json: bool = True, level: int = logging.INFO
) -> logging.Handler:
    """Send the logs, scrubbed, to ``stream`` (stdout by default): JSON lines, or plain lines."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(Scrub())
    handler.setFormatter(JsonLines() if as_json else Plain())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_palm", False):
            root.removeHandler(h)
    handler._palm = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return handler
