"""The real scanner's parts, wired from the config: the Pi camera, the LED ring, the indicator.

The counterpart of :class:`device.sim.scanner.SimulatedScanner`; Pi-only libraries
are imported by the parts themselves, when they start.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from device.clock import Clock, MonotonicClock
from device.config import Config
from device.hardware.gpio import real_pin_factory
from device.hardware.indicator import GpioIndicator
from device.hardware.picamera import PiCamera
from device.hardware.ring import GpioLedRing


class RealScanner:
    """Camera, LED ring and indicator of this Raspberry Pi, sharing the monotonic clock."""

    def __init__(self, config: Config, *, clock: Clock | None = None, pin_factory: Any = None) -> None:
        self.clock = clock or MonotonicClock()
        leds, ind = config.leds, config.indicator
        factory = pin_factory if pin_factory is not None else real_pin_factory(leds.pin_factory)
        self.ring = GpioLedRing(
            pins=leds.sector_pins,
            pin_factory=factory,
            clock=self.clock,
            max_on_s=leds.max_on_s,
            pwm_frequency_hz=leds.pwm_frequency_hz,
            active_high=leds.active_high,
        )
        try:
            self.indicator = GpioIndicator(
                pins={"green": ind.green_pin, "amber": ind.amber_pin, "red": ind.red_pin},
                pin_factory=factory,
                clock=self.clock,
                active_high=ind.active_high,
            )
        except BaseException:
            self.ring.close()
            raise
        self.camera = PiCamera(config=config.camera)

    def close(self) -> None:
        try:
            self.ring.close()
        finally:
            try:
                self.indicator.close()
            finally:
                self.camera.close()

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
