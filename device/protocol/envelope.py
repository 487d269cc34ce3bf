"""The envelope E: a UTF-8 JSON object, built by the scanner, checked by the receiver.

E is signed and hashed into the HPKE ``info`` as the exact bytes sent, so the
receiver works on the bytes it got and trusts no field but ``device_id`` until
the signature holds.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from device import inputs
from device.errors import ProtocolError
from device.inputs import cut
from device.protocol import STALE_AFTER_S, SUITES, VERSIONS

DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
CAPTURE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[47][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
CREATED_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
KID = re.compile(r"[0-9a-f]{32}")
ROLE = re.compile(r"ambient|flood|sector-[0-9]")
CHECKOUT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
TILL_ID = DEVICE_ID
FIELDS_V1 = (
    "v",
    "device_id",
    "capture_id",
    "created_at",
    "firmware",
    "recipient",
    "suite",
    "content",
    "checks",
    "calibration",
)
FIELDS = {1: FIELDS_V1, 2: (*FIELDS_V1, "checkout")}
MAX_CHECKS_BYTES = 4096
MAX_SHORT_STRING = 64


def uuid7(unix_ms: int | None = None) -> str:
    """A lowercase RFC 9562 version 7 UUID: 48 bits of Unix milliseconds, 74 random bits."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | (rand & (2**62 - 1))
    )
    return str(uuid.UUID(int=value))


def rfc3339_ms(unix_s: float) -> str:
    t = dt.datetime.fromtimestamp(unix_s, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def check_checks(checks: Any, path: str = "checks", depth: int = 0) -> None:
    """Numbers, booleans and short strings only (in objects and lists): never pixels."""
    if isinstance(checks, bool) or checks is None:
        return
    if isinstance(checks, int | float):
        if isinstance(checks, float) and not math.isfinite(checks):  # not JSON
            raise ProtocolError("malformed", f"{path} is not a finite number")
        return
    if isinstance(checks, str):
        if len(checks) > MAX_SHORT_STRING:
            raise ProtocolError("malformed", f"{path} is a string of {len(checks)} characters: at most 64")
        return
    if depth >= 4:
        raise ProtocolError("malformed", f"{path} nests deeper than 4 levels")
    if isinstance(checks, Mapping):
        for k, v in checks.items():
            if not isinstance(k, str) or len(k) > MAX_SHORT_STRING:
                raise ProtocolError("malformed", f"{path} has a key that is not a short string")
            check_checks(v, f"{path}.{k}", depth + 1)
        return
    if isinstance(checks, list | tuple):
        for i, v in enumerate(checks):
            if isinstance(v, Mapping | list | tuple):
                raise ProtocolError("malformed", f"{path}[{i}]: lists hold numbers, booleans and strings")
            check_checks(v, f"{path}[{i}]", depth + 1)
        return
    raise ProtocolError(
        "malformed", f"{path} is a {type(checks).__name__}: only numbers, booleans and strings"
    )


def build_envelope(
    *,
    device_id: str,
    capture_id: str,
    created_at: str,
    firmware: str,
    recipient: str,
    roles: list[str],
    checks: Mapping[str, Any],
    calibration: str | None,
    version: int = 2,
    suite: str | None = None,
    checkout: Mapping[str, str] | None = None,
) -> bytes:
    """E as bytes: compact JSON, fields in the protocol's order (version 2 adds ``checkout``)."""
    if version not in VERSIONS:
        raise ProtocolError("malformed", f"version {version} is not one of {VERSIONS}")
    suite = suite or SUITES[version][0]
    if suite not in SUITES[version]:
        raise ProtocolError("malformed", f"suite {suite} is not one of version {version}'s")
    if checkout is not None:
        if version < 2:
            raise ProtocolError("malformed", "a checkout goes only in a version 2 envelope")
        check_checkout(checkout)
    check_checks(checks)
    obj: dict[str, Any] = {
        "v": version,
        "device_id": device_id,
        "capture_id": capture_id,
        "created_at": created_at,
        "firmware": firmware,
        "recipient": recipient,
        "suite": suite,
        "content": {"type": "application/x-tar", "frames": list(roles)},
        "checks": checks,
        "calibration": calibration,
    }
    if version >= 2:
        obj["checkout"] = dict(checkout) if checkout is not None else None
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(json.dumps(checks)) > MAX_CHECKS_BYTES:
        raise ProtocolError("malformed", f"checks take more than {MAX_CHECKS_BYTES} bytes")
    return data


def check_checkout(checkout: Any) -> None:
    """Version 2's ``checkout``: {"id", "till", "armed_at"}, each of its form."""
    if not isinstance(checkout, Mapping) or set(checkout) != {"id", "till", "armed_at"}:
        raise ProtocolError("malformed", "checkout is not null or {id, till, armed_at}")
    if not isinstance(checkout["id"], str) or not CHECKOUT_ID.fullmatch(checkout["id"]):
        raise ProtocolError("malformed", "checkout.id is not 1 to 64 of [A-Za-z0-9._:-]")
    if not isinstance(checkout["till"], str) or not TILL_ID.fullmatch(checkout["till"]):
        raise ProtocolError("malformed", "checkout.till is not 1 to 64 of [A-Za-z0-9._-]")
    armed = checkout["armed_at"]
    if not isinstance(armed, str) or not CREATED_AT.fullmatch(armed) or _when(armed) is None:
        raise ProtocolError("malformed", "checkout.armed_at is not RFC 3339 UTC with milliseconds and Z")


def _when(text: str) -> float | None:
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def _object(envelope: bytes) -> dict[str, Any]:
    """E parsed with nesting and number size bounded (device.inputs): it is read before the
    signature is checked, so anyone's bytes reach this."""
    try:
        obj = inputs.load_json(envelope, what="envelope")
    except inputs.InputError as exc:
        raise ProtocolError("malformed", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "envelope is not a JSON object")
    return obj


def header_of(envelope: bytes) -> tuple[str, int]:
    """``device_id`` and ``v``, the fields read before the signature is checked: the device key to
    check it with, and the version whose labels it was made with."""
    obj = _object(envelope)
    device_id = obj.get("device_id")
    if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
        raise ProtocolError("malformed", "envelope device_id is missing or not 1-64 of [A-Za-z0-9._-]")
    v = obj.get("v")
    if type(v) is not int or v not in VERSIONS:
        raise ProtocolError("malformed", f"envelope v is {cut(v, 20)}: this ingest speaks versions 1 and 2")
    return device_id, v


def parse_envelope(envelope: bytes, *, now_unix: float) -> dict[str, Any]:
    """Check every field of a signed envelope; raise ProtocolError (malformed or stale)."""
    obj = _object(envelope)
    v = obj.get("v")
    if type(v) is not int or v not in VERSIONS:
        raise ProtocolError("malformed", f"envelope v is {cut(v, 20)}: this ingest speaks versions 1 and 2")
    fields = FIELDS[v]
    missing = [f for f in fields if f not in obj]
    extra = sorted(set(obj) - set(fields))[:8]
    if missing or extra:
        raise ProtocolError(
            "malformed", f"envelope fields of version {v}: missing {missing}, unknown {extra}"
        )
    if obj["suite"] not in SUITES[v]:
        raise ProtocolError(
            "malformed",
            f"suite {str(obj['suite'])[:40]!r} is not one of version {v}'s: {', '.join(SUITES[v])}",
        )
    created = obj["created_at"]
    if not isinstance(created, str) or not CREATED_AT.fullmatch(created):
        raise ProtocolError("malformed", "created_at is not RFC 3339 UTC with milliseconds and Z")
    when = _when(created)
    if when is None:
        raise ProtocolError("malformed", "created_at is not a real date and time")
    if abs(now_unix - when) > STALE_AFTER_S:
        raise ProtocolError(
            "stale",
            f"created_at is {now_unix - when:+.0f} s from the ingest clock (at most {STALE_AFTER_S} s)",
        )
    if not isinstance(obj["capture_id"], str) or not CAPTURE_ID.fullmatch(obj["capture_id"]):
        raise ProtocolError("malformed", "capture_id is not a lowercase UUID of version 4 or 7")
    if not isinstance(obj["firmware"], str) or not 0 < len(obj["firmware"]) <= MAX_SHORT_STRING:
        raise ProtocolError("malformed", "firmware is not a short string")
    if not isinstance(obj["recipient"], str) or not KID.fullmatch(obj["recipient"]):
        raise ProtocolError("malformed", "recipient is not 32 lowercase hex characters")
    content = obj["content"]
    if (
        not isinstance(content, dict)
        or set(content) != {"type", "frames"}
        or content["type"] != "application/x-tar"
        or not isinstance(content["frames"], list)
    ):
        raise ProtocolError("malformed", "content must be {type: application/x-tar, frames: [...]}")
    roles = content["frames"]
    if (
        not roles
        or len(roles) >= 16
        or not all(isinstance(r, str) and ROLE.fullmatch(r) for r in roles)
        or len(set(roles)) != len(roles)
        or "flood" not in roles
    ):
        raise ProtocolError("malformed", "content.frames must list distinct frame roles including flood")
    if not isinstance(obj["checks"], dict):
        raise ProtocolError("malformed", "checks is not an object")
    check_checks(obj["checks"])
    cal = obj["calibration"]
    if cal is not None and (not isinstance(cal, str) or len(cal) > MAX_SHORT_STRING):
        raise ProtocolError("malformed", "calibration is not a short string or null")
    if v >= 2 and obj["checkout"] is not None:
        check_checkout(obj["checkout"])
    return obj
