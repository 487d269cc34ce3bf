"""A whole simulated scanner: the real ring and indicator drivers on mock pins, and the sim camera.

This is the one place the simulated parts are wired together, the way the
daemon's entry point wires the real ones.
"""

from __future__ import annotations

from types import TracebackType

from device.clock import Clock
from device.config import Config
from device.hardware.scanner import close_all, gpio_parts
from device.sim.camera import SimCamera, SimFaults, Wiring
from device.sim.optics import Optics
from device.sim.pins import SimPinFactory
from device.sim.scene import SceneSource


class SimulatedScanner:
    """Camera, LED ring and indicator of a simulated scanner, sharing one clock."""

    def __init__(
        self,
        *,
        config: Config,
        scenes: SceneSource,
        clock: Clock,
        faults: SimFaults | None = None,
        wiring: Wiring | None = None,
        serial: int = 0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.pin_factory = SimPinFactory(clock=clock)
        leds = config.leds
        self.optics = Optics.from_config(config.camera, config.sim, leds)
        self.faults = faults if faults is not None else SimFaults()
        self.ring, self.indicator = gpio_parts(config, pin_factory=self.pin_factory, clock=clock)
        self.camera = SimCamera(
            config=config.camera,
            optics=self.optics,
            scenes=scenes,
            timeline=self.pin_factory.timeline,
            wiring=wiring or Wiring(leds.sector_pins, leds.active_high),
            clock=clock,
            faults=self.faults,
            serial=serial,
        )

    def close(self) -> None:
        close_all(self.ring.close, self.indicator.close, self.camera.close)

    def __enter__(self) -> SimulatedScanner:
        self.camera.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
