"""The NIR LED ring: one GPIO pin per sector, switched or dimmed through gpiozero.

The same driver runs on a Pi 4 (RPi.GPIO or lgpio pin factory), a Pi 5 (lgpio)
and gpiozero's own mock pins; the pin factory is passed in, never global.

Eye safety: the ring is dark whenever it is not asked to be lit, goes dark on
every exit path (close, context exit, exception), and a timer switches it off
once it has been lit above the dim idle glow (DIM_SAFE) for ``max_on_s`` at a
stretch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol

from device.clock import Clock, Timer
from device.errors import LedError
from device.hardware import patterns

log = logging.getLogger(__name__)

#: LEDs and their MOSFET drivers settle within microseconds; a margin costs nothing.
SETTLE_NS = 200_000
#: at or below this level the ring may stay lit indefinitely (the idle glow that finds hands);
#: above it the max on-time applies
DIM_SAFE = 0.25


class LedRing(Protocol):
    @property
    def n_sectors(self) -> int: ...

    def show(self, pattern: str) -> int:
        """Light the pattern at full power; return when (monotonic ns) it is in force."""

    def dim(self, level: float) -> int:
        """Light every sector at ``level`` (0..1), for watching for a hand."""

    def off(self) -> None: ...

    def close(self) -> None: ...


class GpioLedRing:
    """The ring on gpiozero output devices, one per sector pin."""

    def __init__(
        self,
        *,
        pins: Sequence[int],
        pin_factory: Any,
        clock: Clock,
        max_on_s: float,
        pwm_frequency_hz: float = 0.0,
        active_high: bool = True,
    ) -> None:
        from gpiozero import LED, PWMLED  # gpiozero loads no Pi library until a pin is made
        from gpiozero.exc import GPIOZeroError

        self._clock = clock
        self._max_on_s = max_on_s
        self._lock = threading.RLock()
        self._timer: Timer | None = None
        self._levels: tuple[float, ...] = (0.0,) * len(pins)
        self._closed = False
        self.cutoffs = 0
        self._pwm = pwm_frequency_hz > 0
        self._devices: list[Any] = []
        try:
            for pin in pins:
                if self._pwm:
                    dev = PWMLED(
                        pin,
                        active_high=active_high,
                        initial_value=0,
                        frequency=int(pwm_frequency_hz),
                        pin_factory=pin_factory,
                    )
                else:
                    dev = LED(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
                self._devices.append(dev)
        except GPIOZeroError as exc:
            self.close()
            raise LedError(f"cannot drive LED ring pin: {exc}") from exc

    @property
    def n_sectors(self) -> int:
        return len(self._devices)

    @property
    def levels(self) -> tuple[float, ...]:
        return self._levels

    def show(self, pattern: str) -> int:
        return self._set(patterns.levels(pattern, self.n_sectors))

    def dim(self, level: float) -> int:
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"LED level {level!r} is not within 0 to 1")
        if not self._pwm and 0.0 < level < 1.0:
            level = 1.0 if level >= 0.5 else 0.0  # no PWM: the nearest of off and on
        return self._set((level,) * self.n_sectors)

    def off(self) -> None:
        self._set((0.0,) * self.n_sectors)

    def _set(self, levels: tuple[float, ...]) -> int:
        with self._lock:
            if self._closed:
                raise LedError("the LED ring is closed")
            was_lit = any(v > DIM_SAFE for v in self._levels)
            for dev, level in zip(self._devices, levels, strict=True):
                dev.value = level if self._pwm else bool(level)
            self._levels = levels
            lit = any(v > DIM_SAFE for v in levels)
            if lit and not was_lit:
                self._timer = self._clock.call_later(self._max_on_s, self._cutoff)
            elif not lit and self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return self._clock.monotonic_ns() + SETTLE_NS

    def _cutoff(self) -> None:
        with self._lock:
            if self._closed or not any(v > DIM_SAFE for v in self._levels):
                return
            self.cutoffs += 1
            log.warning("LED ring lit for %.2f s: switched off (eye-safety limit)", self._max_on_s)
            self._timer = None
            for dev in self._devices:
                dev.value = 0
            self._levels = (0.0,) * self.n_sectors

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for dev in self._devices:
                try:
                    dev.value = 0
                finally:
                    dev.close()
            self._devices = []
            self._levels = ()
            self._closed = True

    def __enter__(self) -> GpioLedRing:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
