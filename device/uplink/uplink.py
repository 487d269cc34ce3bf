"""Sending sealed captures by the protocol's retry rules.

Retry on connection errors, timeouts, 429, 502, 503 and 504, with exponential
back-off and full jitter, honouring Retry-After up to a cap, sending the very
same bytes each time. Never retry a TLS, certificate or pin failure, nor any
other status. A capture older than the outbox's time-to-live is dropped,
counted. Time comes from the injected clock.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests

from device import inputs
from device.clock import Clock
from device.config import is_loopback
from device.errors import UplinkError
from device.protocol import MAX_BODY, multipart
from device.protocol.seal import SealedCapture
from device.uplink.outbox import Outbox, Pending
from device.uplink.session import Deadline

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_REPLY_BYTES = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 0.25
    factor: float = 2.0
    max_backoff_s: float = 8.0
    retry_after_cap_s: float = 10.0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    attempt_deadline_s: float = 10.0


@dataclass(frozen=True)
class Delivery:
    """How a capture's delivery ended (or stands)."""

    capture_id: str
    outcome: str  # accepted, duplicate, rejected, tls, expired, pending
    status: int | None = None
    error: str | None = None  # the protocol's error word, or what went wrong
    detail: str | None = None
    result: Any = None
    attempts: int = 0
    elapsed_ms: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.outcome in ("accepted", "duplicate")


@dataclass(frozen=True)
class _Try:
    final: bool
    status: int | None = None
    error: str | None = None
    detail: str | None = None
    result: Any = None
    retry_after_s: float | None = None
    outcome: str = "rejected"


class Uplink:
    def __init__(
        self,
        *,
        endpoint: str,
        session: requests.Session,
        clock: Clock,
        outbox: Outbox,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
            raise UplinkError(f"endpoint {endpoint!r} is not https:// (http:// only for a loopback host)")
        self.url = endpoint.rstrip("/") + "/v1/captures"
        self._session = session
        self._clock = clock
        self.outbox = outbox
        self.policy = policy or RetryPolicy()
        self._rng = rng or random.Random()
        self._bodies: dict[str, tuple[bytes, str]] = {}
        self.counts: Counter[str] = Counter()
        self.attempts = 0
        self._attempt_due_ns: int | None = None  # while an attempt is under way: when it must end

    def deliver(self, capture: SealedCapture, *, wait_s: float) -> Delivery:
        """Send now, retrying by the rules for up to ``wait_s``; still retryable then: it stays pending."""
        started = self._clock.monotonic_ns()
        pending = self.outbox.add(capture)
        give_up = started + int(wait_s * 1e9)
        while True:
            self.outbox.expire(self._clock.monotonic_ns())
            if pending.capture.capture_id not in self.outbox:
                return self._finish(
                    pending, "expired", started, error="outbox", detail="dropped from the outbox"
                )
            pending.in_flight = True
            delivery = self._step(pending, started, limit_s=(give_up - self._clock.monotonic_ns()) / 1e9)
            if delivery is not None:
                return delivery
            if pending.next_try_ns > give_up:
                status, error, detail = pending.last_failure
                return Delivery(
                    capture.capture_id,
                    "pending",
                    status=status,
                    error=error,
                    detail=detail,
                    attempts=pending.attempts,
                    elapsed_ms=(self._clock.monotonic_ns() - started) / 1e6,
                )
            self._clock.sleep(max(0, pending.next_try_ns - self._clock.monotonic_ns()) / 1e9)

    def withdraw(self, capture_id: str) -> bool:
        """Never deliver this capture (its checkout was told it failed): dropped, counted as
        ``withdrawn``."""
        return self.outbox.withdraw(capture_id, "withdrawn")

    def flush(self, *, budget_s: float) -> list[Delivery]:
        """Try the captures that are due, oldest first, for up to ``budget_s``."""
        started = self._clock.monotonic_ns()
        done = []
        self.outbox.expire(started)
        while self._clock.monotonic_ns() - started < budget_s * 1e9:
            pending = self.outbox.take_due(self._clock.monotonic_ns())
            if pending is None:
                break
            left_s = budget_s - (self._clock.monotonic_ns() - started) / 1e9
            delivery = self._step(pending, started, limit_s=left_s)
            if delivery is not None:
                done.append(delivery)
        return done

    def close(self) -> None:
        self._session.close()

    # -- one attempt -----------------------------------------------------------------------------

    def _step(self, pending: Pending, started: int, *, limit_s: float | None = None) -> Delivery | None:
        """One attempt, for at most ``limit_s`` (and the policy's attempt deadline); a Delivery if
        it ended, else None with the next try scheduled."""
        capture = pending.capture
        now = self._clock.monotonic_ns()
        if self.outbox.expired(capture, now):
            self.outbox.release(pending)
            return self._finish(
                pending, "expired", started, error="ttl", detail="older than the outbox time-to-live"
            )
        pending.attempts += 1
        self.attempts += 1
        t = self._attempt(capture, limit_s)
        if t.final:
            return self._finish(
                pending, t.outcome, started, status=t.status, error=t.error, detail=t.detail, result=t.result
            )
        pending.last_failure = (t.status, t.error, t.detail)
        policy = self.policy
        # the exponent capped: a float power past 2**1023 raises (a cloud failing fast, many tries)
        backoff = min(policy.max_backoff_s, policy.base_s * policy.factor ** min(pending.attempts - 1, 60))
        delay = self._rng.uniform(0, backoff)
        if t.retry_after_s is not None:
            delay = max(delay, min(t.retry_after_s, policy.retry_after_cap_s))
        now = self._clock.monotonic_ns()
        pending.next_try_ns = now + int(delay * 1e9)
        log.info(
            "capture %s: attempt %d failed (%s), next in %.2f s",
            capture.capture_id,
            pending.attempts,
            t.error,
            delay,
        )
        if self.outbox.expired(capture, pending.next_try_ns):
            self.outbox.release(pending)
            return self._finish(
                pending,
                "expired",
                started,
                status=t.status,
                error=t.error,
                detail="the cloud did not take it within the outbox time-to-live",
            )
        self.outbox.release(pending)
        return None

    def _finish(self, pending: Pending, outcome: str, started: int, **kw: Any) -> Delivery:
        capture = pending.capture
        if outcome in ("accepted", "duplicate"):
            self.outbox.remove(capture.capture_id)
        else:
            self.outbox.drop(pending, outcome)
        self._bodies.pop(capture.capture_id, None)
        self.counts[outcome] += 1
        return Delivery(
            capture.capture_id,
            outcome,
            attempts=pending.attempts,
            elapsed_ms=(self._clock.monotonic_ns() - started) / 1e6,
            **kw,
        )

    def _body(self, capture: SealedCapture) -> tuple[bytes, str]:
        # Encoded once: every retry sends the very same bytes.
        if capture.capture_id not in self._bodies:
            self._bodies[capture.capture_id] = multipart.encode(capture.envelope, capture.sealed)
        return self._bodies[capture.capture_id]

    def overdue_s(self) -> float:
        """How long the attempt under way has run past its deadline: 0 while none has. The deadline
        cuts the attempt's sockets, so this grows only where something it cannot cut holds the
        upload (a name lookup, a driver): /healthz then says so (device.daemon.status)."""
        due = self._attempt_due_ns
        return 0.0 if due is None else max(0.0, (self._clock.monotonic_ns() - due) / 1e9)

    def _attempt(self, capture: SealedCapture, limit_s: float | None = None) -> _Try:
        p = self.policy
        seconds = p.attempt_deadline_s if limit_s is None else max(0.5, min(p.attempt_deadline_s, limit_s))
        self._attempt_due_ns = self._clock.monotonic_ns() + int(seconds * 1e9)
        try:
            return self._attempt_within(capture, seconds)
        finally:
            self._attempt_due_ns = None

    def _attempt_within(self, capture: SealedCapture, seconds: float) -> _Try:
        body, content_type = self._body(capture)
        if len(body) > MAX_BODY:
            return _Try(final=True, error="too_large", detail=f"body of {len(body)} bytes is over {MAX_BODY}")
        headers = {
            "Content-Type": content_type,
            "Palm-Signature": capture.signature,
            "Idempotency-Key": capture.capture_id,
        }
        p = self.policy
        late = f"no whole answer within the attempt's {seconds:g} s"
        with Deadline(seconds) as deadline:
            try:
                resp = self._session.post(
                    self.url,
                    data=body,
                    headers=headers,
                    stream=True,
                    timeout=(p.connect_timeout_s, p.read_timeout_s),
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError as exc:
                if deadline.expired:  # cut mid-handshake by the deadline: not a certificate's fault
                    return _Try(final=False, error="deadline", detail=late)
                return _Try(final=True, outcome="tls", error="tls", detail=_short(exc))
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                return _Try(
                    final=False,
                    error="deadline" if deadline.expired else "unreachable",
                    detail=late if deadline.expired else _short(exc),
                )
            except requests.exceptions.RequestException as exc:
                if deadline.expired:
                    return _Try(final=False, error="deadline", detail=late)
                return _Try(final=True, error="request", detail=_short(exc))
            try:
                raw = _read_capped(resp)
            except requests.exceptions.RequestException as exc:
                error = "deadline" if deadline.expired else "unreachable"
                return _Try(
                    final=False,
                    status=resp.status_code,
                    error=error,
                    detail=late if deadline.expired else _short(exc),
                )
            finally:
                resp.close()
            if deadline.expired:
                # A body cut by the deadline can end without an error (urllib3 1.26 returns what came):
                # whatever was read is not a whole answer.
                return _Try(final=False, status=resp.status_code, error="deadline", detail=late)
        status = resp.status_code
        reply = _json(raw)
        word = reply.get("error") if isinstance(reply.get("error"), str) else None
        detail = str(reply.get("detail"))[:200] if "detail" in reply else None
        if status in (200, 201):
            expected = "accepted" if status == 201 else "duplicate"
            if reply.get("capture_id") != capture.capture_id or reply.get("status") != expected:
                return _Try(
                    final=False, status=status, error="bad_reply", detail="reply is not the protocol's"
                )
            return _Try(final=True, status=status, outcome=expected, result=reply.get("result"))
        if status in RETRY_STATUSES:
            return _Try(
                final=False,
                status=status,
                error=word or f"http_{status}",
                detail=detail,
                retry_after_s=_retry_after(resp.headers.get("Retry-After")),
            )
        return _Try(
            final=True, status=status, outcome="rejected", error=word or f"http_{status}", detail=detail
        )


def _read_capped(resp: requests.Response) -> bytes:
    """The reply's body, up to MAX_REPLY_BYTES (the attempt's Deadline bounds the time)."""
    chunks, size = [], 0
    for chunk in resp.iter_content(4096):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            break  # a reply this long is not the protocol's; what came is enough to judge
    return b"".join(chunks)


def _json(raw: bytes) -> dict[str, Any]:
    """The reply as a JSON object, or {} for anything else: nesting and numbers bounded as for a
    file handed over (device.inputs), so deeply nested JSON is a bad reply, not a RecursionError."""
    try:
        obj = inputs.load_json(raw, what="reply")
    except inputs.InputError:
        return {}
    return obj if isinstance(obj, dict) else {}


_DELAY_SECONDS = re.compile(r"[0-9]{1,9}")  # ASCII digits only: "²" is a digit to str.isdigit


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (RFC 9110: delay-seconds or an HTTP date), None if it is neither."""
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _short(exc: BaseException) -> str:
    """The innermost reason, not requests' and urllib3's wrapping of it."""
    inner: BaseException = exc
    for _ in range(6):
        nxt = getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException) and inner.args and isinstance(inner.args[0], BaseException):
            nxt = inner.args[0]
        if not isinstance(nxt, BaseException):
            break
        inner = nxt
    text = str(inner)
    return text if len(text) <= 200 else text[:197] + "..."
