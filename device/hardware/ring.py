"""The NIR LED ring: one GPIO pin per sector, switched or dimmed through gpiozero.

The same driver runs on a Pi 4 (RPi.GPIO or lgpio pin factory), a Pi 5 (lgpio)
and gpiozero's own mock pins; the pin factory is passed in, never global.

Eye safety: the ring is dark whenever it is not asked to be lit, goes dark on
every exit path (close, context exit, exception), and a timer switches it off
once it has been lit above the dim idle glow (DIM_SAFE) for ``max_on_s`` at a
stretch. None of that survives the process being killed (a watchdog abort, the OOM
killer), and a Raspberry Pi kernel keeps a released output driven (raspberrypi/linux
6117): :func:`force_dark` is what the unit runs after the daemon, however it ended
(``ExecStopPost=``), and the ring's driver should limit the on-time in hardware (README).

PWM on a Pi is timed in software: lgpio's thread applies a new duty cycle at the end of
the cycle under way (``lgpio.h`` ``tx_pwm``, ``lgPthTx.c``), RPi.GPIO's is a sleeping thread
too (``soft_pwm.c``). So a change is in force only a cycle or two after it is made, and
:meth:`GpioLedRing.show` says so. lgpio refuses frequencies over 10 kHz (``lgGpio.c``).
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
#: software PWM: the cycle under way finishes first, and the thread may wake a cycle late
PWM_SETTLE_CYCLES = 2
#: lgpio's tx_pwm accepts 0.1 Hz to 10 kHz (lgGpio.c: LG_BAD_PWM_FREQ)
PWM_MAX_HZ = 10_000.0


def settle_ns(pwm_frequency_hz: float) -> int:
    """From a change of the pins until the light is in force."""
    if pwm_frequency_hz <= 0:
        return SETTLE_NS
    return SETTLE_NS + round(PWM_SETTLE_CYCLES * 1e9 / pwm_frequency_hz)


def _is_lgpio_error(exc: BaseException) -> bool:
    # lgpio.error is a bare Exception subclass; gpiozero lets it through from frequency changes.
    return type(exc).__module__ == "lgpio" and type(exc).__name__ == "error"


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
        self._settle_ns = settle_ns(pwm_frequency_hz)
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
        except Exception as exc:
            if not _is_lgpio_error(exc):
                raise
            self.close()
            raise LedError(
                f"the GPIO library refused the LED ring at {pwm_frequency_hz:g} Hz PWM ({exc}): "
                f"[leds] pwm_frequency_hz must be 50 to {PWM_MAX_HZ:g}"
            ) from exc

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
            try:
                for dev, level in zip(self._devices, levels, strict=True):
                    dev.value = level if self._pwm else bool(level)
            except Exception as exc:
                from gpiozero.exc import GPIOZeroError

                if not (isinstance(exc, GPIOZeroError) or _is_lgpio_error(exc)):
                    raise
                raise LedError(f"the LED ring's pins refused {levels}: {exc}") from exc
            self._levels = levels
            lit = any(v > DIM_SAFE for v in levels)
            if lit and not was_lit:
                self._timer = self._clock.call_later(self._max_on_s, self._cutoff)
            elif not lit and self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return self._clock.monotonic_ns() + self._settle_ns

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


def force_dark(*, pins: Sequence[int], pin_factory: Any, active_high: bool = True) -> None:
    """Claim each ring pin, drive it dark, let it go: after the daemon, whatever ended it.

    gpiozero's lgpio pin re-claims a line as a floating input when it closes, so once this
    returns the LEDs are dark because of the driver's gate pull-downs (README), as they are with
    ``dtparam=strict_gpiod`` whenever a process lets a line go.
    """
    from gpiozero import DigitalOutputDevice
    from gpiozero.exc import GPIOZeroError

    problems = []
    for pin in pins:
        try:
            dev = DigitalOutputDevice(
                pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
            )
            dev.close()
        except GPIOZeroError as exc:
            problems.append(f"pin {pin}: {exc}")
        except Exception as exc:
            if not _is_lgpio_error(exc):
                raise
            problems.append(f"pin {pin}: {exc}")
    if problems:
        raise LedError("could not drive the LED ring dark: " + "; ".join(problems))
