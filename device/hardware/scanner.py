"""The real scanner's parts, wired from the config: the Pi camera, the LED ring, the indicator.

The counterpart of :class:`device.sim.scanner.SimulatedScanner`; Pi-only libraries
are imported by the parts themselves, when they start.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from device.clock import Clock, MonotonicClock
from device.config import Config
from device.hardware.gpio import real_pin_factory
from device.hardware.indicator import GpioIndicator
from device.hardware.picamera import PiCamera
from device.hardware.ring import GpioLedRing


def gpio_parts(config: Config, *, pin_factory: Any, clock: Clock) -> tuple[GpioLedRing, GpioIndicator]:
    """The LED ring and the indicator on ``pin_factory``'s pins, as the config wires them."""
    leds, ind = config.leds, config.indicator
    ring = GpioLedRing(
        pins=leds.sector_pins,
        pin_factory=pin_factory,
        clock=clock,
        max_on_s=leds.max_on_s,
        pwm_frequency_hz=leds.pwm_frequency_hz,
        active_high=leds.active_high,
    )
    try:
        indicator = GpioIndicator(
            pins={"green": ind.green_pin, "amber": ind.amber_pin, "red": ind.red_pin},
            pin_factory=pin_factory,
            clock=clock,
            active_high=ind.active_high,
        )
    except BaseException:
        ring.close()
        raise
    return ring, indicator


def close_all(*closers: Callable[[], None]) -> None:
    """Close each part, in order, even when an earlier one fails (the first error is raised)."""
    error: BaseException | None = None
    for close in closers:
        try:
            close()
        except BaseException as e:
            error = error or e
    if error is not None:
        raise error


class RealScanner:
    """Camera, LED ring and indicator of this Raspberry Pi, sharing the monotonic clock."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        pin_factory: Any = None,
        camera_backend: Any = None,
    ) -> None:
        """``pin_factory`` and ``camera_backend`` (a Picamera2 class): this Pi's own unless given."""
        self.clock = clock or MonotonicClock()
        factory = pin_factory if pin_factory is not None else real_pin_factory(config.leds.pin_factory)
        self.ring, self.indicator = gpio_parts(config, pin_factory=factory, clock=self.clock)
        self.camera = PiCamera(config=config.camera, backend=camera_backend)

    def close(self) -> None:
        close_all(self.ring.close, self.indicator.close, self.camera.close)

    def __enter__(self) -> RealScanner:
        try:
            self.camera.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
