"""The real LED ring driver on gpiozero's own mock pins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.clock import FakeClock
from device.errors import LedError
from device.hardware import patterns
from device.hardware.ring import SETTLE_NS, GpioLedRing, force_dark, settle_ns

PINS = (17, 27, 22, 23)
ROOT = Path(__file__).resolve().parents[1]


def ring(factory: MockFactory, clock: FakeClock, **kw: object) -> GpioLedRing:
    args: dict[str, object] = {
        "pins": PINS,
        "pin_factory": factory,
        "clock": clock,
        "max_on_s": 2.0,
        "pwm_frequency_hz": 2000.0,
    }
    args.update(kw)
    return GpioLedRing(**args)  # type: ignore[arg-type]


def states(factory: MockFactory, pins: tuple[int, ...] = PINS) -> list[float]:
    return [float(factory.pin(p).state) for p in pins]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("ambient", [0, 0, 0, 0]),
        ("flood", [1, 1, 1, 1]),
        ("sector-0", [1, 0, 0, 0]),
        ("sector-1", [0, 1, 0, 0]),
        ("sector-2", [0, 0, 1, 0]),
        ("sector-3", [0, 0, 0, 1]),
    ],
)
def test_every_pattern_sets_the_pins(
    mock_factory: MockFactory, clock: FakeClock, pattern: str, expected: list[float]
) -> None:
    with ring(mock_factory, clock) as r:
        when = r.show(pattern)
        assert states(mock_factory) == expected
        # 2 kHz software PWM: the cycle under way ends first, and a late thread takes another.
        assert when == clock.monotonic_ns() + SETTLE_NS + 1_000_000 == clock.monotonic_ns() + settle_ns(2000)


def test_the_light_is_in_force_when_show_says_under_lgpio_s_pwm_timing(clock: FakeClock) -> None:
    # The simulator's pins apply a PWM level at the end of the cycle under way, as lgpio does.
    from device.sim.pins import SimPinFactory

    factory = SimPinFactory(clock=clock)
    for hz in (50.0, 2000.0, 10000.0):
        clock.advance(0.1)  # the last ring's final cycle is over
        with ring(factory, clock, pwm_frequency_hz=hz) as r:
            for pattern, level in (("flood", 1.0), ("sector-1", 0.0), ("flood", 1.0)):
                clock.advance(0.000_123)  # anywhere in a cycle
                when = r.show(pattern)
                lit = factory.timeline.mean_levels(PINS[0], np.array([when]), np.array([when + 3_000_000]))
                assert lit[0] == level, (hz, pattern)
    # The old margin (200 us) at 2 kHz: a frame exposed from then on still saw the old light.
    clock.advance(0.1)
    with ring(factory, clock, pwm_frequency_hz=2000.0) as r:
        clock.advance(0.000_123)
        r.show("flood")
        old = clock.monotonic_ns() + SETTLE_NS
        assert factory.timeline.mean_levels(PINS[0], np.array([old]), np.array([old + 3_000_000]))[0] < 1.0


class LgpioPwmPin(MockPWMPin):  # type: ignore[misc]
    """gpiozero's mock PWM pin with lgpio's frequency limit and error (lgGpio.c: LG_BAD_PWM_FREQ
    for over 10 kHz; gpiozero's LGPIOPin._set_frequency lets lgpio.error through)."""

    def _set_frequency(self, value: float | None) -> None:
        import lgpio

        if value is not None and not 0.1 <= value <= 10_000:
            raise lgpio.error("bad PWM frequency")
        super()._set_frequency(value)


def test_lgpio_refusing_a_frequency_is_a_led_error(clock: FakeClock) -> None:
    factory = MockFactory(pin_class=LgpioPwmPin)
    with ring(factory, clock, pwm_frequency_hz=10_000.0) as r:
        r.show("flood")
    factory.reset()
    with pytest.raises(
        LedError, match=r"refused the LED ring at 20000 Hz PWM \('bad PWM frequency'\).*50 to 10000"
    ):
        ring(factory, clock, pwm_frequency_hz=20_000.0)
    assert all(factory.pin(p).state == 0 for p in PINS)


def test_force_dark_drives_pins_a_dead_daemon_left_lit(mock_factory: MockFactory) -> None:
    # What a killed daemon leaves: outputs still driven high, owned by no one (raspberrypi/linux 6117).
    for p in PINS:
        pin = mock_factory.pin(p)
        pin.function = "output"
        pin.state = 1
    force_dark(pins=PINS, pin_factory=mock_factory)
    assert states(mock_factory) == [0, 0, 0, 0]
    assert all(mock_factory.pin(p).function == "input" for p in PINS)  # released, as strict_gpiod would
    for p in PINS:  # an active-low ring is dark when high
        mock_factory.pin(p).function = "output"
        mock_factory.pin(p).state = 0
        mock_factory.pin(p).clear_states()
    force_dark(pins=PINS, pin_factory=mock_factory, active_high=False)
    for p in PINS:  # driven high (dark), then let go
        assert 1 in [s.state for s in mock_factory.pin(p).states]
        assert mock_factory.pin(p).function == "input"


def test_leds_off_without_a_pi_says_why_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.example.toml").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "device", "leds-off", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "LG_WD": str(tmp_path)},
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("palm leds-off: no GPIO library works"), proc.stderr


def test_pins_record_each_pattern_in_turn(mock_factory: MockFactory, clock: FakeClock) -> None:
    with ring(mock_factory, clock) as r:
        for p in PINS:
            mock_factory.pin(p).clear_states()
        for name in patterns.all_patterns(4):
            r.show(name)
        # sector-0 pin: ambient (already 0), flood on, sector-0 stays on, sector-1 off.
        mock_factory.pin(17).assert_states([0.0, 1.0, 0.0])
        mock_factory.pin(23).assert_states([0.0, 1.0, 0.0, 1.0])
    assert states(mock_factory) == [0, 0, 0, 0]


def test_dim_uses_pwm_duty_cycle_and_pwm_frequency(mock_factory: MockFactory, clock: FakeClock) -> None:
    with ring(mock_factory, clock, pwm_frequency_hz=2000.0) as r:
        r.dim(0.15)
        assert states(mock_factory) == pytest.approx([0.15] * 4)
        assert mock_factory.pin(17).frequency == 2000
        with pytest.raises(ValueError, match="not within 0 to 1"):
            r.dim(1.5)


def test_without_pwm_sectors_only_switch(mock_factory: MockFactory, clock: FakeClock) -> None:
    with ring(mock_factory, clock, pwm_frequency_hz=0.0) as r:
        r.dim(0.15)
        assert states(mock_factory) == [0, 0, 0, 0]
        r.dim(0.7)
        assert states(mock_factory) == [1, 1, 1, 1]
        assert mock_factory.pin(17).frequency is None


def test_active_low_inverts_pins(mock_factory: MockFactory, clock: FakeClock) -> None:
    with ring(mock_factory, clock, active_high=False) as r:
        assert states(mock_factory) == [1, 1, 1, 1]  # dark
        r.show("sector-2")
        assert states(mock_factory) == [1, 1, 0, 1]
        r.off()
        assert states(mock_factory) == [1, 1, 1, 1]
    # Closed: the pins are released (inputs); the driver board's gate resistors hold it dark.
    assert [mock_factory.pin(p).function for p in PINS] == ["input"] * 4


def test_eye_safety_cuts_the_ring_after_max_on_time(mock_factory: MockFactory, clock: FakeClock) -> None:
    with ring(mock_factory, clock, max_on_s=0.5) as r:
        r.show("flood")
        clock.advance(0.3)
        r.show("sector-1")  # still one lit stretch: the timer keeps running
        clock.advance(0.19)
        assert states(mock_factory) == [0, 1, 0, 0]
        clock.advance(0.02)
        assert states(mock_factory) == [0, 0, 0, 0]
        assert r.cutoffs == 1


def test_going_dark_resets_the_on_time(mock_factory: MockFactory, clock: FakeClock) -> None:
    with ring(mock_factory, clock, max_on_s=0.5) as r:
        r.show("flood")
        clock.advance(0.4)
        r.off()
        clock.advance(0.05)
        r.show("flood")
        clock.advance(0.4)
        assert states(mock_factory) == [1, 1, 1, 1]
        assert r.cutoffs == 0


def test_dark_on_exception_and_close_is_idempotent(mock_factory: MockFactory, clock: FakeClock) -> None:
    r = ring(mock_factory, clock)
    with pytest.raises(RuntimeError), r:
        r.show("flood")
        raise RuntimeError("boom")
    assert states(mock_factory) == [0, 0, 0, 0]
    r.close()
    with pytest.raises(LedError, match="closed"):
        r.show("flood")


def test_unknown_pattern_is_refused(mock_factory: MockFactory, clock: FakeClock) -> None:
    with ring(mock_factory, clock) as r, pytest.raises(ValueError, match="sector-4"):
        r.show("sector-4")


def test_a_pin_in_use_is_a_led_error(mock_factory: MockFactory, clock: FakeClock) -> None:
    from gpiozero import LED

    held = LED(22, pin_factory=mock_factory)
    with pytest.raises(LedError, match="cannot drive LED ring pin"):
        ring(mock_factory, clock)
    held.close()
    # The pins the failed ring had already claimed were released.
    ring(mock_factory, clock).close()


def test_ring_goes_dark_when_the_process_is_terminated() -> None:
    script = textwrap.dedent("""
        import signal, sys, time
        from gpiozero.pins.mock import MockFactory, MockPWMPin
        from device.clock import MonotonicClock
        from device.hardware.ring import GpioLedRing
        f = MockFactory(pin_class=MockPWMPin)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # as the daemon does
        try:
            with GpioLedRing(pins=(17, 27, 22, 23), pin_factory=f, clock=MonotonicClock(),
                             max_on_s=10.0) as r:
                r.show("flood")
                print("lit", [f.pin(p).state for p in (17, 27, 22, 23)], flush=True)
                time.sleep(30)
        finally:
            print("final", [f.pin(p).state for p in (17, 27, 22, 23)], flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "lit [1.0, 1.0, 1.0, 1.0]"
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert out.strip() == "final [0.0, 0.0, 0.0, 0.0]"
    assert proc.returncode == 0


@pytest.mark.hardware
def test_real_gpio_ring_lights_each_pattern_and_goes_dark() -> None:
    from device.clock import MonotonicClock
    from device.hardware.gpio import real_pin_factory

    factory = real_pin_factory("auto")
    with GpioLedRing(
        pins=PINS, pin_factory=factory, clock=MonotonicClock(), max_on_s=1.0, pwm_frequency_hz=2000.0
    ) as r:
        for name in patterns.all_patterns(4):
            r.show(name)
            assert r.levels == patterns.levels(name, 4)
    factory.close()
