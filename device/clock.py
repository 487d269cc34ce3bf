"""Time, injected: a protocol, the real monotonic clock and a fake for tests.

Timing, retries, back-off, LED on-time limits and the watchdog all take a
:class:`Clock`, so tests drive time explicitly and never sleep.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time in nanoseconds, sleeping, and one-shot timers."""

    def monotonic_ns(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer: ...


class MonotonicClock:
    """The real clock: ``time.monotonic_ns`` (the clock libcamera stamps frames with)."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        timer = threading.Timer(max(0.0, seconds), callback)
        timer.daemon = True
        timer.start()
        return timer


class _FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told to; timers fire as time passes them.

    ``sleep`` advances time, so code under test that sleeps runs instantly and
    deterministically.
    """

    def __init__(self, start_ns: int = 1_000_000_000) -> None:
        self._start = start_ns
        self._now = start_ns
        self._timers: list[tuple[int, int, _FakeTimer, Callable[[], None]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()

    def monotonic_ns(self) -> int:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        timer = _FakeTimer()
        due = self._now + max(0, round(seconds * 1e9))
        with self._lock:
            heapq.heappush(self._timers, (due, next(self._order), timer, callback))
        return timer

    def advance(self, seconds: float) -> None:
        self.advance_to(self._now + max(0, round(seconds * 1e9)))

    def advance_to(self, when_ns: int) -> None:
        """Move time forward to ``when_ns``, firing due timers in order."""
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > when_ns:
                    break
                due, _, timer, callback = heapq.heappop(self._timers)
            self._now = max(self._now, due)
            if not timer.cancelled:
                callback()
        self._now = max(self._now, when_ns)


class SimulatedTime(FakeClock):
    """Time for the simulated scanner: it moves only when the code waits, so a run is the same
    run on a fast laptop and on a loaded CI machine.

    Waiting for a frame, a back-off or a result shown to the shopper advances it; computing
    does not (the scene stands still while the checks run, as if the Pi were infinitely
    fast). What a stopwatch on the counter would show is :meth:`stopwatch_ns`: the waits
    plus the real time spent computing, less the time spent rendering frames (work the
    simulator does that a real scanner does not, marked by :meth:`stopped`).
    """

    def __init__(self, *, paced: bool = False) -> None:
        super().__init__(start_ns=time.monotonic_ns())
        self._real0 = time.perf_counter_ns()
        self._paused = 0
        #: never ahead of the wall clock: for a run that a real peer drives (a till), where a
        #: checkout's 30 s must be about 30 s of the till's (behind it when rendering is slow)
        self.paced = paced

    def advance_to(self, when_ns: int) -> None:
        super().advance_to(when_ns)
        if self.paced:
            ahead = (self._now - self._start) - (time.perf_counter_ns() - self._real0)
            if ahead > 0:
                time.sleep(ahead / 1e9)

    def stopwatch_ns(self) -> int:
        return self._now + (time.perf_counter_ns() - self._real0 - self._paused)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Real time spent inside does not count on the stopwatch (rendering the frames)."""
        t = time.perf_counter_ns()
        try:
            yield
        finally:
            self._paused += time.perf_counter_ns() - t


class CounterTime:
    """A :class:`SimulatedTime` as the counter sees it, for what waits on real peers: the uplink
    talking to a real server, and the sealer whose timestamps the outbox ages captures by.

    ``monotonic_ns`` is the simulation's stopwatch (its waits plus the real time spent computing
    and on the network); sleeping and timers are the simulation's. On SimulatedTime alone, which
    stands still while a socket waits, a server dripping its answer held one 3 s delivery for five
    attempts of 3 s each."""

    def __init__(self, sim: SimulatedTime) -> None:
        self._sim = sim

    def monotonic_ns(self) -> int:
        return self._sim.stopwatch_ns()

    def sleep(self, seconds: float) -> None:
        self._sim.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        return self._sim.call_later(seconds, callback)
