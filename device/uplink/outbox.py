"""Sealed captures waiting for the cloud, in memory only, bounded by count, bytes and age.

What ages out or overflows is dropped, logged by capture id (never content) and
counted. Nothing is ever written to disk.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

from device.protocol.seal import SealedCapture

log = logging.getLogger(__name__)


@dataclass
class Pending:
    capture: SealedCapture
    attempts: int = 0
    next_try_ns: int = 0
    in_flight: bool = False
    # what the last failed attempt met (status, error word, detail), for whoever asks why it waits
    last_failure: tuple[int | None, str | None, str | None] = (None, None, None)


class Outbox:
    def __init__(
        self, *, max_count: int = 32, max_bytes: int = 32 * 1024 * 1024, ttl_s: float = 120.0
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.ttl_ns = int(ttl_s * 1e9)
        self._items: OrderedDict[str, Pending] = OrderedDict()
        self._lock = threading.Lock()
        self.dropped: Counter[str] = Counter()  # reason -> count

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(p.capture.size for p in self._items.values())

    def expired(self, capture: SealedCapture, now_ns: int) -> bool:
        return now_ns - capture.sealed_at_ns > self.ttl_ns

    def add(self, capture: SealedCapture) -> Pending:
        with self._lock:
            pending = Pending(capture)
            self._items[capture.capture_id] = pending
            total = sum(p.capture.size for p in self._items.values())
            while len(self._items) > self.max_count or total > self.max_bytes:
                victim = next((p for p in self._items.values() if not p.in_flight), None)
                if victim is None or (victim is pending and len(self._items) == 1):
                    break
                total -= victim.capture.size
                self._drop(victim, "overflow")
            return pending

    def __contains__(self, capture_id: object) -> bool:
        with self._lock:
            return capture_id in self._items

    def remove(self, capture_id: str) -> None:
        with self._lock:
            self._items.pop(capture_id, None)

    def withdraw(self, capture_id: str, reason: str) -> bool:
        """Drop a waiting capture that must not be delivered any more (counted under ``reason``)."""
        with self._lock:
            pending = self._items.get(capture_id)
            if pending is None or pending.in_flight:
                return False
            self._drop(pending, reason)
            return True

    def drop(self, pending: Pending, reason: str) -> None:
        with self._lock:
            self._drop(pending, reason)

    def _drop(self, pending: Pending, reason: str) -> None:
        if self._items.pop(pending.capture.capture_id, None) is not None:
            self.dropped[reason] += 1
            log.warning(
                "outbox dropped capture %s (%s) after %d attempts",
                pending.capture.capture_id,
                reason,
                pending.attempts,
            )

    def expire(self, now_ns: int) -> int:
        with self._lock:
            old = [p for p in self._items.values() if not p.in_flight and self.expired(p.capture, now_ns)]
            for p in old:
                self._drop(p, "expired")
            return len(old)

    def take_due(self, now_ns: int) -> Pending | None:
        """The oldest capture whose next try is due, marked in flight."""
        with self._lock:
            for p in self._items.values():
                if not p.in_flight and p.next_try_ns <= now_ns:
                    p.in_flight = True
                    return p
            return None

    def release(self, pending: Pending) -> None:
        with self._lock:
            pending.in_flight = False

    def next_due_ns(self) -> int | None:
        with self._lock:
            times = [p.next_try_ns for p in self._items.values() if not p.in_flight]
            return min(times) if times else None
