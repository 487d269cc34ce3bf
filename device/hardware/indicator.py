"""The status indicator: three lights (green, amber, red) the shopper can read.

Each light is off, on, or blinking slowly or fast; blinking is timed by the
injected clock, so tests drive it without sleeping. What each scanner state
shows is the daemon's choice; this module only drives the lights.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Literal, Protocol

from device.clock import Clock, Timer
from device.errors import LedError

Light = Literal["off", "on", "slow", "fast"]
LIGHTS = ("green", "amber", "red")
#: half-periods of the blink modes, seconds (1 Hz and 4 Hz)
BLINK_HALF_S = {"slow": 0.5, "fast": 0.125}


class Indicator(Protocol):
    def show(self, *, green: Light = "off", amber: Light = "off", red: Light = "off") -> None: ...

    def close(self) -> None: ...


class GpioIndicator:
    """Three gpiozero LEDs; blinking driven by the clock's timers."""

    def __init__(
        self,
        *,
        pins: dict[str, int],
        pin_factory: Any,
        clock: Clock,
        active_high: bool = True,
    ) -> None:
        from gpiozero import LED
        from gpiozero.exc import GPIOZeroError

        self._clock = clock
        self._lock = threading.RLock()
        self._leds: dict[str, Any] = {}
        self._modes: dict[str, Light] = dict.fromkeys(LIGHTS, "off")
        self._timers: dict[str, Timer] = {}
        self._closed = False
        try:
            for name in LIGHTS:
                self._leds[name] = LED(
                    pins[name],
                    active_high=active_high,
                    initial_value=False,
                    pin_factory=pin_factory,
                )
        except GPIOZeroError as exc:
            self.close()
            raise LedError(f"cannot drive indicator pin: {exc}") from exc

    @property
    def modes(self) -> dict[str, Light]:
        return dict(self._modes)

    def show(self, *, green: Light = "off", amber: Light = "off", red: Light = "off") -> None:
        with self._lock:
            if self._closed:
                raise LedError("the indicator is closed")
            for name, mode in zip(LIGHTS, (green, amber, red), strict=True):
                if mode not in ("off", "on", "slow", "fast"):
                    raise ValueError(f"indicator light mode {mode!r} is not off, on, slow or fast")
                if self._modes[name] == mode:
                    continue
                self._modes[name] = mode
                timer = self._timers.pop(name, None)
                if timer is not None:
                    timer.cancel()
                self._leds[name].value = mode != "off"
                if mode in BLINK_HALF_S:
                    self._schedule(name, mode)

    def _schedule(self, name: str, mode: Light) -> None:
        self._timers[name] = self._clock.call_later(BLINK_HALF_S[mode], lambda: self._toggle(name, mode))

    def _toggle(self, name: str, mode: Light) -> None:
        with self._lock:
            if self._closed or self._modes[name] != mode:
                return
            led = self._leds[name]
            led.value = not led.value
            self._schedule(name, mode)

    def close(self) -> None:
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            for led in self._leds.values():
                try:
                    led.value = False
                finally:
                    led.close()
            self._leds.clear()
            self._closed = True

    def __enter__(self) -> GpioIndicator:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
