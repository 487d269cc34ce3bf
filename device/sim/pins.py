"""Mock GPIO pins that remember when they changed, on the scanner's clock.

The simulated ring is the real ring driver on gpiozero's own mock pins; the
simulated camera reads back, from this timeline, what light each sector gave
during every row's exposure (a PWM level counts as its duty cycle).

A pin in PWM mode behaves as lgpio's software PWM does: a new level takes effect at the
end of the cycle under way (``lgpio.h`` ``tx_pwm``: "replaced by the new settings at the end
of the current cycle"; ``lgPthTx.c``), so light lags the call by up to a period.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Any

import numpy as np
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.clock import Clock

#: how much history a pin keeps: far longer than any exposure
HISTORY_NS = 5_000_000_000
STATES_KEPT = 512


class LedTimeline:
    """Per-pin step functions of time: the level since each change."""

    def __init__(self) -> None:
        self._times: dict[int, list[int]] = {}
        self._levels: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def record(self, pin: int, t_ns: int, level: float) -> None:
        with self._lock:
            times = self._times.setdefault(pin, [0])
            levels = self._levels.setdefault(pin, [0.0])
            t_ns = max(t_ns, times[-1])
            times.append(t_ns)
            levels.append(level)
            # Forget what no exposure can reach any more, keeping the level in force then.
            cut = bisect.bisect_left(times, t_ns - HISTORY_NS)
            if cut > 1:
                del times[1:cut]
                del levels[1:cut]
                times[0] = 0

    def level(self, pin: int) -> float:
        with self._lock:
            return self._levels.get(pin, [0.0])[-1]

    def mean_levels(self, pin: int, starts_ns: np.ndarray, ends_ns: np.ndarray) -> np.ndarray:
        """Time-averaged level of ``pin`` over each interval [start, end)."""
        with self._lock:
            times = np.array(self._times.get(pin, [0]), dtype=np.float64)
            levels = np.array(self._levels.get(pin, [0.0]), dtype=np.float64)
        ref = times[-1]
        t = times - ref
        cum = np.concatenate([[0.0], np.cumsum(levels[:-1] * np.diff(t))])

        def integral(x: np.ndarray) -> np.ndarray:
            x = x.astype(np.float64) - ref
            j = np.clip(np.searchsorted(t, x, side="right") - 1, 0, len(t) - 1)
            return np.asarray(cum[j] + levels[j] * (x - t[j]))

        span = np.maximum(ends_ns.astype(np.float64) - starts_ns, 1.0)
        return np.asarray((integral(ends_ns) - integral(starts_ns)) / span)


class SimLedPin(MockPWMPin):  # type: ignore[misc]
    """A PWM-capable mock pin that stamps every change on the simulation's timeline."""

    def _change_state(self, value: Any) -> bool:
        changed: bool = super()._change_state(value)
        if changed:
            factory: SimPinFactory = self.factory
            at = factory.clock.monotonic_ns()
            frequency = getattr(self, "_frequency", None)
            if frequency:  # the end of the PWM cycle under way (cycles counted from time 0)
                period = 1e9 / float(frequency)
                at = round(math.ceil(at / period) * period)
            factory.timeline.record(self._bcm, at, float(value))
        if len(self.states) > STATES_KEPT:
            del self.states[: -STATES_KEPT // 2]
        return changed

    @property
    def _bcm(self) -> int:
        name = str(self.info.name)
        return int(name[4:]) if name.startswith("GPIO") else -1


class SimPinFactory(MockFactory):  # type: ignore[misc]
    """gpiozero's MockFactory with pins on a shared clock and timeline (a Pi 4 B board)."""

    def __init__(self, *, clock: Clock, timeline: LedTimeline | None = None) -> None:
        super().__init__(revision="c03111", pin_class=SimLedPin)
        self.clock = clock
        self.timeline = timeline if timeline is not None else LedTimeline()
