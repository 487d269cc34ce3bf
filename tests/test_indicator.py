from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from device.clock import FakeClock
from device.hardware.indicator import GpioIndicator

PINS = {"green": 5, "amber": 6, "red": 13}


def lit(factory: MockFactory) -> dict[str, bool]:
    return {name: bool(factory.pin(pin).state) for name, pin in PINS.items()}


def test_lights_follow_modes_and_blink_on_the_clock(mock_factory: MockFactory, clock: FakeClock) -> None:
    with GpioIndicator(pins=PINS, pin_factory=mock_factory, clock=clock) as ind:
        ind.show(green="on")
        assert lit(mock_factory) == {"green": True, "amber": False, "red": False}
        ind.show(amber="fast")
        assert lit(mock_factory) == {"green": False, "amber": True, "red": False}
        seen = []
        for _ in range(8):
            clock.advance(0.125)
            seen.append(lit(mock_factory)["amber"])
        assert seen == [False, True] * 4  # 4 Hz
        ind.show(red="slow")
        clock.advance(0.5)
        assert lit(mock_factory) == {"green": False, "amber": False, "red": False}
        clock.advance(0.5)
        assert lit(mock_factory)["red"] is True
        assert ind.modes == {"green": "off", "amber": "off", "red": "slow"}
    assert lit(mock_factory) == {"green": False, "amber": False, "red": False}
    clock.advance(2)  # a cancelled blink never relights a closed indicator
    assert lit(mock_factory) == {"green": False, "amber": False, "red": False}


def test_bad_mode_is_refused(mock_factory: MockFactory, clock: FakeClock) -> None:
    with (
        GpioIndicator(pins=PINS, pin_factory=mock_factory, clock=clock) as ind,
        pytest.raises(ValueError, match="not off, on, slow or fast"),
    ):
        ind.show(green="bright")  # type: ignore[arg-type]
