"""Checkouts a till arms: one at a time, each a small state machine the till can read and cancel.

The shape follows the payment and biometric device APIs that already exist: UnifiedPOS
Biometrics' BeginVerifyCapture/EndCapture/DataEvent, MOSIP's CAPTURE with a transaction id and a
timeout, Stripe's and Square's terminal checkouts (a deadline, a cancel, a state to poll)::

    armed -> guiding -> capturing -> sent -> accepted | not_accepted | failed
      \\________ timed_out (nobody presented in time) / cancelled (the till) _______/

A checkout holds what a till may read: its id, its state, the guidance reasons, the capture id and
the cloud's result, passed on unread. Never a pixel, a crop or a template. Time is the injected
clock's; every change is an event for the till's screen (``/v1/events``).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from device.clock import Clock
from device.errors import ScannerError
from device.protocol.envelope import rfc3339_ms

CHECKOUT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
TILL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
STATES = (
    "armed",
    "guiding",
    "capturing",
    "sent",
    "accepted",
    "not_accepted",
    "timed_out",
    "cancelled",
    "failed",
)
FINAL = frozenset({"accepted", "not_accepted", "timed_out", "cancelled", "failed"})
#: how a checkout may move on (the scanner's side; cancelled and timed_out come from the till and clock)
NEXT = {
    "armed": {"guiding", "capturing", "failed"},
    "guiding": {"guiding", "capturing", "armed", "failed"},
    # back to armed: the shopper was asked to try again, and may until the deadline
    "capturing": {"sent", "not_accepted", "guiding", "armed", "failed"},
    "sent": {"accepted", "not_accepted", "failed"},
}
TIMEOUT_S = (5, 120)
#: finished checkouts kept for the till to read
KEPT = 200


class CheckoutError(ScannerError, ValueError):
    """A till's request that cannot be done: ``status`` and ``code`` for the API's answer."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


@dataclass
class Checkout:
    checkout_id: str
    till: str
    timeout_s: float
    armed_ns: int  # the clock's, for the deadline
    armed_at: str  # RFC 3339 UTC with milliseconds, for the envelope
    state: str = "armed"
    reasons: list[str] = field(default_factory=list)
    capture_id: str | None = None
    result: Any = None
    updated_at: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def as_json(self) -> dict[str, Any]:
        return {
            "checkout_id": self.checkout_id,
            "state": self.state,
            "reasons": list(self.reasons),
            "capture_id": self.capture_id,
            "result": self.result,
            "updated_at": self.updated_at,
        }

    def envelope_field(self) -> dict[str, str]:
        """The envelope's ``checkout`` (protocol version 2)."""
        return {"id": self.checkout_id, "till": self.till, "armed_at": self.armed_at}


class Checkouts:
    """The scanner's checkouts: at most one armed or running; thread-safe (the API's threads arm
    and cancel, the scan loop advances)."""

    def __init__(
        self,
        *,
        clock: Clock,
        wall: Callable[[], float],
        emit: Callable[[dict[str, Any]], None] = lambda event: None,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._emit = emit
        self._lock = threading.Lock()
        self._all: OrderedDict[str, Checkout] = OrderedDict()
        self._current: Checkout | None = None
        self.finished: dict[str, int] = {}

    # -- the till's side -------------------------------------------------------------------------

    def arm(self, till: str, body: Any) -> Checkout:
        """Arm for ``body`` ({"checkout_id", "timeout_s"}); the same request again answers the same
        checkout. CheckoutError 400 for a bad body, 409 busy while another is armed or running."""
        checkout_id, timeout_s = _parse_arm(body)
        with self._lock:
            self._expire()
            known = self._all.get(checkout_id)
            if known is not None:
                if known.till != till:
                    raise CheckoutError(409, "conflict", f"checkout {checkout_id} belongs to another till")
                return known
            if self._current is not None:
                raise CheckoutError(
                    409, "busy", f"checkout {self._current.checkout_id} is {self._current.state}"
                )
            now = self._wall()
            c = Checkout(checkout_id, till, timeout_s, self._clock.monotonic_ns(), rfc3339_ms(now))
            c.updated_at = rfc3339_ms(now)
            self._all[checkout_id] = c
            while len(self._all) > KEPT:
                self._all.popitem(last=False)
            self._current = c
        self._emit({"event": "checkout", "till": till, "new": True, **c.as_json()})
        return c

    def get(self, checkout_id: str) -> Checkout | None:
        with self._lock:
            self._expire()
            return self._all.get(checkout_id)

    def cancel(self, till: str, checkout_id: str) -> Checkout:
        with self._lock:
            self._expire()
            c = self._all.get(checkout_id)
            if c is None or c.till != till:
                raise CheckoutError(404, "not_found", f"no checkout {checkout_id[:64]} of this till")
            if c.final:
                raise CheckoutError(409, "final", f"checkout {checkout_id} is already {c.state}")
            self._set(c, "cancelled", [])
        self._emit({"event": "checkout", "till": till, **c.as_json()})
        return c

    # -- the scanner's side ----------------------------------------------------------------------

    def current(self) -> Checkout | None:
        """The checkout armed or running, if any (one past its deadline times out here)."""
        with self._lock:
            self._expire()
            return self._current

    def advance(
        self,
        checkout: Checkout,
        state: str,
        *,
        reasons: list[str] | None = None,
        capture_id: str | None = None,
        result: Any = None,
    ) -> bool:
        """Move ``checkout`` on as the scan goes; False (and nothing changes) if it ended meanwhile
        (cancelled, timed out) or the move is not one a checkout makes."""
        with self._lock:
            if checkout.final or state not in NEXT.get(checkout.state, ()):
                return False
            if capture_id is not None:
                checkout.capture_id = capture_id
            if result is not None:
                checkout.result = result
            self._set(checkout, state, list(reasons or []))
        self._emit({"event": "checkout", "till": checkout.till, **checkout.as_json()})
        return True

    def end_current(self, state: str, reason: str) -> Checkout | None:
        """End the checkout armed or running, if any, as ``state`` (the scanner stopping: failed)."""
        with self._lock:
            c = self._current
            if c is None:
                return None
            self._set(c, state, [reason])
        self._emit({"event": "checkout", "till": c.till, **c.as_json()})
        return c

    def _set(self, c: Checkout, state: str, reasons: list[str]) -> None:
        c.state, c.reasons, c.updated_at = state, reasons, rfc3339_ms(self._wall())
        if c.final:
            self.finished[state] = self.finished.get(state, 0) + 1
            if self._current is c:
                self._current = None

    def _expire(self) -> None:
        c = self._current
        if c is None or c.state not in ("armed", "guiding"):
            return  # a capture under way ends by its result, not by the till's deadline
        if self._clock.monotonic_ns() - c.armed_ns > c.timeout_s * 1e9:
            self._set(c, "timed_out", ["nobody presented a hand in time"])
            self._emit({"event": "checkout", "till": c.till, **c.as_json()})


def _parse_arm(body: Any) -> tuple[str, float]:
    if not isinstance(body, Mapping):
        raise CheckoutError(400, "malformed", 'the body must be a JSON object {"checkout_id", "timeout_s"}')
    extra = sorted(set(body) - {"checkout_id", "timeout_s"})
    if extra:
        raise CheckoutError(
            400, "malformed", f"unknown field {str(extra[0])[:40]!r}: only checkout_id and timeout_s"
        )
    checkout_id = body.get("checkout_id")
    if not isinstance(checkout_id, str) or not CHECKOUT_ID.fullmatch(checkout_id):
        raise CheckoutError(400, "malformed", "checkout_id must be 1 to 64 of [A-Za-z0-9._:-]")
    timeout_s = body.get("timeout_s", 30)
    lo, hi = TIMEOUT_S
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not lo <= timeout_s <= hi:
        raise CheckoutError(400, "malformed", f"timeout_s must be a number of seconds from {lo} to {hi}")
    return checkout_id, float(timeout_s)
