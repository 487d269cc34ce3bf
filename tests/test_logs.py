"""The log path under the security review's probes: whatever a caller writes (f-strings, reprs,
exception messages, warnings, tracebacks, a formatter of its own), no pixel and no key byte reaches
the output, and logging never raises."""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.daemon import logs

ROOT = Path(__file__).resolve().parents[1]

#: a secret whose every encoding is looked for in the output: raw bytes of a key, and pixels
KEY = np.random.default_rng(7).bytes(32)
PIXELS = (np.arange(64 * 64) * 37 % 251).astype(np.uint8).reshape(64, 64)
PEM = (
    Ed25519PrivateKey.from_private_bytes(KEY)
    .private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    .decode()
)


def _encodings() -> list[str]:
    """Any 16 bytes of the key or any 16 pixels, in each way text can carry them."""
    out = []
    for raw in (KEY[:16], KEY[16:], PIXELS.tobytes()[100:116], PIXELS.tobytes()[2000:2016]):
        out += [raw.hex(), base64.b64encode(raw).decode()[:20], repr(raw)[2:40]]
        out.append(", ".join(str(b) for b in raw[:12]))  # a list or an array's repr
        out.append(" ".join(f"{b:3d}" for b in raw[:12]).strip())  # numpy's matrix print
        out.append(raw.decode("latin-1"))
    out.append(PEM.splitlines()[1][:24])
    return out


@dataclass
class Holder:
    """An object whose default repr holds an array."""

    name: str
    frame: np.ndarray


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    __repr__ = __str__


def _probe_cases() -> dict[str, Callable[[logging.Logger], None]]:
    big = bytes(KEY * 40)
    return {
        "bytes arg": lambda log: log.info("key %s", KEY),
        "bytes repr arg": lambda log: log.info("key %r", KEY),
        "array arg": lambda log: log.info("frame %s", PIXELS),
        "f-string bytes": lambda log: log.info(f"key {KEY!r}"),
        "f-string array": lambda log: log.info(f"frame {PIXELS}"),
        "f-string list of pixels": lambda log: log.info(f"row {PIXELS[1].tolist()}"),
        "hex in text": lambda log: log.info(f"key {KEY.hex()}"),
        "base64 in text": lambda log: log.info(f"key {base64.b64encode(KEY).decode()}"),
        "base64 of a buffer": lambda log: log.info("blob " + base64.b64encode(big).decode()),
        "latin-1 text": lambda log: log.info("raw " + KEY.decode("latin-1")),
        "pem": lambda log: log.info("key file:\n" + PEM),
        "object repr with array": lambda log: log.info("holder %s", Holder("x", PIXELS)),
        "f-string object repr": lambda log: log.info(f"holder {Holder('x', PIXELS)}"),
        "extra field bytes": lambda log: log.info("x", extra={"blob": KEY}),
        "extra field text": lambda log: log.info("x", extra={"blob": KEY.hex()}),
        "exception message bytes": lambda log: _raise_and_log(log, ValueError(KEY)),
        "exception message array": lambda log: _raise_and_log(log, ValueError(f"bad frame {PIXELS}")),
        "unprintable arg": lambda log: log.info("thing %s", Unprintable()),
        "unprintable msg": lambda log: log.info(Unprintable()),
        "bad format string": lambda log: log.info("%d %d", "a"),  # noqa: PLE1206 - the probe
        "warning": lambda log: warnings.warn(f"odd key {KEY!r}", stacklevel=1),
        "huge text": lambda log: log.info("x" * 50_000_000),
    }


def _raise_and_log(log: logging.Logger, exc: Exception) -> None:
    try:
        raise exc
    except Exception:
        log.exception("failed")


CASES = _probe_cases()


def _run_probes() -> None:
    """In a process of its own (`python -m tests.test_logs`), as the daemon has it: no handler on
    the root logger but the scanner's (pytest's would format the raw record first), warnings shown.
    Prints one JSON line per probe and format: whether the logging call raised, and the output."""
    for as_json in (True, False):
        for name, probe in CASES.items():
            out = io.StringIO()
            handler = logs.setup(out, as_json=as_json)
            raised = None
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                try:
                    probe(logging.getLogger("device.probe"))
                except Exception as exc:
                    raised = type(exc).__name__
            logs.teardown(handler)
            print(json.dumps({"name": name, "json": as_json, "raised": raised, "text": out.getvalue()}))


@pytest.fixture(scope="module")
def probed() -> dict[tuple[str, bool], dict[str, Any]]:
    r = subprocess.run(
        [sys.executable, "-m", "tests.test_logs"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-2000:]
    found = [json.loads(line) for line in r.stdout.splitlines()]
    return {(f["name"], f["json"]): f for f in found}


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "plain"])
@pytest.mark.parametrize("name", list(CASES))
def test_no_probe_gets_a_secret_into_the_log_nor_makes_logging_raise(
    probed: dict[tuple[str, bool], dict[str, Any]], name: str, as_json: bool
) -> None:
    found = probed[(name, as_json)]
    assert found["raised"] is None, found
    text = found["text"]
    assert text.strip(), "the probe logged nothing: a record is never lost"
    leaked = [e for e in _encodings() if e and e in text]
    assert not leaked, (name, leaked[:2], text[:300])
    assert len(text) < 5000  # a 50 MB value is not echoed whole
    if as_json:
        for line in text.splitlines():
            json.loads(line)


def test_a_formatter_of_its_own_cannot_bypass_the_filter() -> None:
    out = io.StringIO()
    handler = logs.setup(out)
    handler.setFormatter(logging.Formatter("%(message)s %(blob)s"))
    try:
        logging.getLogger("device.probe").info(f"key {KEY!r} frame {PIXELS}", extra={"blob": KEY.hex()})
    finally:
        logs.teardown(handler)
    text = out.getvalue()
    assert text.strip() and not [e for e in _encodings() if e in text], text[:300]


_UNCAUGHT = """
import sys, threading
import numpy as np
from device.daemon import logs
logs.setup(sys.stdout)
key = np.random.default_rng(7).bytes(32)
t = threading.Thread(target=lambda: (_ for _ in ()).throw(ValueError(key)))
t.start(); t.join()
raise RuntimeError(f"frame {np.arange(300) * 7 % 251} key {key.hex()}")
"""


def test_uncaught_exceptions_in_threads_and_main_go_through_the_filter() -> None:
    r = subprocess.run([sys.executable, "-c", _UNCAUGHT], capture_output=True, text=True, timeout=60)
    text = r.stdout + r.stderr
    assert r.returncode != 0
    assert KEY.hex()[:32] not in text and repr(KEY)[2:30] not in text and "7, 14, 21" not in text
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["error"].split(":")[0] for x in lines] == ["ValueError", "RuntimeError"]
    assert "Traceback" not in text


def test_ordinary_lines_keep_their_words() -> None:
    """What the daemon really logs survives: capture ids, kids, URLs, paths, numbers."""
    out = io.StringIO()
    handler = logs.setup(out)
    msg = (
        "uploaded 01a23bf4-6ff4-7bd7-acad-c7b60828093d to https://ingest.example.com/v1/captures "
        "kid 9a2168adbcd5a5a6b109404cfcc2cee4 from /var/lib/palm-scanner/device-key.pem in 24 ms, "
        "quality 0.91, sectors 0 1 2 3"
    )
    try:
        logging.getLogger("device.probe").info(msg, extra={"scores": [0.91, 0.42], "capture": "01a2"})
    finally:
        logs.teardown(handler)
    line = json.loads(out.getvalue())
    assert line["msg"] == msg and line["scores"] == [0.91, 0.42] and line["capture"] == "01a2"


if __name__ == "__main__":
    _run_probes()
