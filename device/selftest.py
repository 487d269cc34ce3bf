"""``palm selftest``: is this scanner ready to serve shoppers? One line per check, in order.

Config, device key, camera frames, every LED sector, indicator, calibration, clock,
swap, cloud. Each line says what was found and, on a failure, what to do. The
LED check needs something in view to return the ring's light: the technician holds
the grey card (or a hand) about 12 cm above the window. A check that needs an
earlier one which failed is reported as not checked, never as passed.
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from device.clock import MonotonicClock
from device.config import Config
from device.errors import CameraError, ConfigError, KeyFileError, LedError
from device.hardware import patterns
from device.hardware.camera import Camera, settled
from device.hardware.indicator import Indicator
from device.hardware.ring import LedRing

#: exposure and gain for the LED check: a grey card at 12 cm under one sector gains tens of
#: grey levels, under the full ring it does not clip
LED_EXPOSURE_US, LED_GAIN = 4000, 2.0
#: a sector responds when it brightens the view by at least this many grey levels...
SECTOR_MIN_DN = 3.0
#: ...and by at least this share of the median sector (a weak sector is a fault too)
SECTOR_MIN_SHARE = 0.5
#: how long the cloud check tries (retrying by the uplink's rules) before it says unreachable
SEND_WAIT_S = 5.0
#: how long palmd.service waits at boot for the clock: systemd/palm-time-wait-sync.conf says the same
TIME_SYNC_WAIT_S = 90

#: adjtimex(2)'s answer when the kernel's clock is not synchronised (STA_UNSYNC)
TIME_ERROR = 5


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool | None  # None: not checked, because a check it needs failed
    detail: str

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        return f"{mark} {self.name:12s} {self.detail}"


class Scanner(Protocol):
    @property
    def camera(self) -> Camera: ...
    @property
    def ring(self) -> LedRing: ...
    @property
    def indicator(self) -> Indicator: ...


@dataclass
class Probes:
    """Where the checks look: the real scanner's, or the simulated one's."""

    load_config: Callable[[], Config]
    check_key: Callable[[Config], str]  # what the key is; raises KeyFileError
    open_scanner: Callable[[Config], AbstractContextManager[Scanner]]
    calibration: Callable[[Config], str]  # what calibration there is; raises LookupError
    clock_synchronised: Callable[[], bool | None]
    swap_devices: Callable[[], list[str]]
    send_test: Callable[[Config], tuple[bool, str]]
    settle: Callable[[float], None] = field(default=lambda s: None)


def run(probes: Probes, say: Callable[[Result], None]) -> list[Result]:
    """Every check in order; each result is said as soon as it is known."""
    results: list[Result] = []

    def report(name: str, ok: bool | None, detail: str) -> bool:
        r = Result(name, ok, detail)
        results.append(r)
        say(r)
        return bool(ok)

    try:
        config: Config | None = probes.load_config()
        report("config", True, "read and valid")
    except ConfigError as e:
        config = None
        report("config", False, str(e))
    if config is None:
        for name in ("key", "camera", "leds", "indicator", "calibration"):
            report(name, None, "not checked: needs a valid config")
    else:
        try:
            report("key", True, probes.check_key(config))
        except KeyFileError as e:
            report("key", False, str(e))
        _hardware(probes, config, report)
        try:
            report("calibration", True, probes.calibration(config))
        except LookupError as e:
            report("calibration", False, str(e))
    synced = probes.clock_synchronised()
    if synced is None:
        report("clock", False, "cannot ask the kernel whether the clock is synchronised")
    else:
        report(
            "clock",
            synced,
            "synchronised"
            if synced
            else "not synchronised: captures are refused outside the cloud's 300 s window. A Pi "
            "has no real-time clock: check the network and `timedatectl timesync-status`. At boot "
            f"palmd.service waits up to {TIME_SYNC_WAIT_S} s for it (systemd-time-wait-sync.service), "
            "then starts without it",
        )
    swaps = probes.swap_devices()
    report(
        "swap",
        not swaps,
        "off"
        if not swaps
        else f"on ({', '.join(swaps)}): frames could be paged to disk; sudo dphys-swapfile swapoff "
        "&& sudo systemctl disable dphys-swapfile",
    )
    if config is None:
        report("cloud", None, "not checked: needs a valid config")
    else:
        ok, detail = probes.send_test(config)
        report("cloud", ok, detail)
    return results


def _hardware(probes: Probes, config: Config, report: Callable[[str, bool | None, str], bool]) -> None:
    found: dict[str, tuple[bool | None, str]] = {}

    def once(name: str, ok: bool | None, detail: str) -> None:
        found.setdefault(name, (ok, detail))

    try:
        with probes.open_scanner(config) as scanner:
            once("camera", *_camera(scanner.camera))
            once(*_leds(scanner, len(config.leds.sector_pins)))
            once("indicator", *_indicator(scanner.indicator, probes.settle))
    except CameraError as e:
        if "camera" not in found:
            once("camera", False, f"{e}: check the ribbon cable and `rpicam-hello --list-cameras`")
        else:
            once("leds", False, f"the camera failed during the LED check: {e}")
    except LedError as e:  # the GPIO could not be opened, or a pin refused
        once("leds", False, str(e))
    for name in ("camera", "leds", "indicator"):  # in this order, whatever failed first
        report(name, *found.get(name, (None, "not checked: needs the camera and the GPIO")))


#: how far the frames' own pace may stray from the rate the camera said it runs at
FPS_TOLERANCE = 0.15


def _camera(camera: Camera) -> tuple[bool, str]:
    """Frames arrive, at the rate the camera said at start (sensor, mode, tuning, library)."""
    stamps = []
    for _ in range(10):
        frame = camera.preview()
        stamps.append(frame.timestamp_ns)
        frame.wipe()
    period = float(np.median(np.diff(stamps))) / 1e9
    measured = 1 / period if period > 0 else 0.0
    said = camera.describe()
    report = getattr(camera, "report", None)
    promised = getattr(report, "fps", None)
    if promised and abs(measured - promised) > FPS_TOLERANCE * promised:
        return False, f"frames arrive at {measured:.1f} fps, but the camera runs at {promised:.2f}: {said}"
    return True, f"10 presence frames at {measured:.1f} fps; {said}"


def _mean_under(scanner: Scanner, pattern: str | None) -> float:
    switched = scanner.ring.show(pattern) if pattern else scanner.ring.dim(0.0)
    frame = scanner.camera.capture(not_before_ns=switched)
    try:
        return float(frame.pixels.mean())
    finally:
        frame.wipe()
        scanner.ring.off()


def _leds(scanner: Scanner, n_sectors: int) -> tuple[str, bool, str]:
    scanner.camera.set_manual(exposure_us=LED_EXPOSURE_US, gain=LED_GAIN)
    for _ in range(scanner.camera.settle_frames + 2):  # behind the queued requests and the sensor
        frame = scanner.camera.preview()
        frame.wipe()
        if settled(frame, LED_EXPOSURE_US, LED_GAIN):  # the sensor rounds to whole lines
            break
    else:
        raise CameraError(f"the camera did not take exposure {LED_EXPOSURE_US} us, gain {LED_GAIN}")
    dark = _mean_under(scanner, None)
    gains = [_mean_under(scanner, patterns.sector(k)) - dark for k in range(n_sectors)]
    flood = _mean_under(scanner, patterns.FLOOD) - dark
    typical = statistics.median(gains)
    weak = [k for k, g in enumerate(gains) if g < max(SECTOR_MIN_DN, SECTOR_MIN_SHARE * typical)]
    figures = ", ".join(f"{k}: +{g:.1f}" for k, g in enumerate(gains))
    if flood < SECTOR_MIN_DN:
        return (
            "leds",
            False,
            f"the full ring brightens the view by {flood:.1f} grey levels only: hold the grey card "
            "12 cm above the window; if it is there, check the ring's power and wiring",
        )
    if weak:
        names = ", ".join(str(k) for k in weak)
        return (
            "leds",
            False,
            f"sector {names} dead or weak (grey levels gained per sector {figures}): check its LEDs, "
            "its wire and its pin in [leds] sector_pins",
        )
    return "leds", True, f"{n_sectors} sectors respond (grey levels gained {figures}; full ring +{flood:.1f})"


def _indicator(indicator: Indicator, settle: Callable[[float], None]) -> tuple[bool, str]:
    try:
        lights: tuple[Callable[[], None], ...] = (
            lambda: indicator.show(green="on"),
            lambda: indicator.show(amber="on"),
            lambda: indicator.show(red="on"),
        )
        for light_up in lights:
            light_up()
            settle(0.4)
        indicator.show()
    except LedError as e:
        return False, f"{e}: check the indicator's wiring and the pins in [indicator]"
    return True, "green, amber and red switched on in turn (the scanner cannot see them: look)"


# -- the real scanner's probes ---------------------------------------------------------------------


def clock_synchronised() -> bool | None:
    """Whether the kernel's clock is synchronised (adjtimex(2), read only), None if it cannot say."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        timex = ctypes.create_string_buffer(512)  # struct timex with modes 0: nothing is changed
        state = libc.adjtimex(timex)
    except (OSError, AttributeError):  # not glibc: the check says it cannot tell
        return None
    if state < 0:
        return None
    return bool(state != TIME_ERROR)


def real_probes(config_path: str) -> Probes:
    """This Raspberry Pi: its config file, key, camera, GPIO, kernel clock and swap, the cloud."""
    from device.config import load_config
    from device.daemon.process import swap_devices
    from device.hardware.scanner import RealScanner
    from device.protocol.keys import load_device_key

    def check_key(config: Config) -> str:
        load_device_key(config.device.key_file)  # mode, kind and format, with what to fix
        return f"{config.device.key_file}: Ed25519, readable by this user only"

    def calibration(config: Config) -> str:
        from device.calibration import calfile

        try:
            return describe_calibration(calfile.load(config.calibration.file), config)
        except calfile.CalibrationError as e:
            raise LookupError(str(e)) from None

    return Probes(
        load_config=lambda: load_config(config_path),
        check_key=check_key,
        open_scanner=RealScanner,
        calibration=calibration,
        clock_synchronised=clock_synchronised,
        swap_devices=swap_devices,
        send_test=_send_test,
        settle=MonotonicClock().sleep,
    )


#: a calibration older than this is due again (the LEDs age, the window gets scratched)
CALIBRATION_MAX_DAYS = 365


def describe_calibration(
    cal: Any, config: Config, need: Sequence[str] = ("dark", "flat", "exposure", "focus", "scale")
) -> str:
    """What the calibration is, or LookupError saying why it does not do for this scanner."""
    w, h = config.camera.main_size
    if (cal.width, cal.height) != (w, h) or tuple(cal.sector_pins) != config.leds.sector_pins:
        raise LookupError(
            f"the calibration {cal.id} is for {cal.width}x{cal.height} frames and sectors on BCM "
            f"{list(cal.sector_pins)}, this config has {w}x{h} and {list(config.leds.sector_pins)}: "
            "run `palm calibrate all`"
        )
    missing = [step for step in need if getattr(cal, step) is None]
    if missing:
        raise LookupError(f"the calibration {cal.id} lacks {', '.join(missing)}: run `palm calibrate all`")
    age = cal.age_days()
    if age > CALIBRATION_MAX_DAYS:
        raise LookupError(
            f"the calibration {cal.id} is {age:.0f} days old (at most {CALIBRATION_MAX_DAYS}): run "
            "`palm calibrate verify`, and `palm calibrate all` if it drifted"
        )
    return f"{cal.id}, {age:.0f} days old: {', '.join(need)} measured"


def _send_test(config: Config, **kw: Any) -> tuple[bool, str]:
    from device.errors import ScannerError
    from device.sendtest import describe, send_test

    try:
        capture, d = send_test(config, wait_s=SEND_WAIT_S, **kw)
    except ScannerError as e:  # the key, the TLS settings: named, never a traceback
        return False, f"not sent: {e}"
    return d.status in (200, 201), describe(capture, d, kw.get("endpoint") or config.cloud.endpoint)


#: faults the simulated self-test can be given, each caught by one check
SIM_FAULTS = ("camera-gone", "dead-sector", "clock-unsynced", "swap-on", "cloud-down")


@contextlib.contextmanager
def simulated_probes(config: Config, faults: Sequence[str] = ()) -> Iterator[Probes]:
    """The simulated scanner with the grey card held over it, keys made in memory and the
    reference ingest on 127.0.0.1; ``faults`` (from SIM_FAULTS, ``dead-sector`` as
    ``dead-sector:K``) break what their check must catch."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from device import __version__
    from device.calibration.session import sim_calibration
    from device.clock import FakeClock
    from device.ingest.server import Ingest, IngestServer
    from device.protocol.keys import new_recipient_key, recipient_public
    from device.protocol.seal import Sealer
    from device.sim.camera import SimFaults
    from device.sim.scanner import SimulatedScanner
    from device.sim.scene import fixed, make_scene

    sim = SimFaults(camera_gone="camera-gone" in faults)
    for f in faults:
        if f.startswith("dead-sector:"):
            sim.sector_gain[int(f.split(":", 1)[1])] = 0.0
    device_key, cloud = Ed25519PrivateKey.generate(), new_recipient_key(config.cloud.recipient.suite)[1]
    server = IngestServer(Ingest(recipients=[cloud], devices={config.device.id: device_key.public_key()}))
    server.start()
    clock = FakeClock()
    card = make_scene("card", 0, condition="shop", distance_mm=config.calibration.card_distance_mm)

    def open_scanner(cfg: Config) -> AbstractContextManager[Scanner]:
        return SimulatedScanner(config=cfg, scenes=fixed(card, clock.monotonic_ns()), clock=clock, faults=sim)

    def send(cfg: Config) -> tuple[bool, str]:
        sealer = Sealer(
            device_id=cfg.device.id,
            device_key=device_key,
            recipient=recipient_public(cloud.public_raw),
            firmware=__version__,
            protocol=cfg.cloud.protocol,
        )
        # cloud-down: an address where nothing listens (a closed port on this machine)
        endpoint = "http://127.0.0.1:9/v1/captures" if "cloud-down" in faults else server.url
        return _send_test(cfg, sealer=sealer, endpoint=endpoint)

    try:
        yield Probes(
            load_config=lambda: config,
            check_key=lambda cfg: "made in memory for the simulated scanner",
            open_scanner=open_scanner,
            calibration=lambda cfg: describe_calibration(
                sim_calibration(cfg, target=False), cfg, ("flat", "exposure")
            ),
            clock_synchronised=lambda: "clock-unsynced" not in faults,
            swap_devices=lambda: ["/var/swap (simulated)"] if "swap-on" in faults else [],
            send_test=send,
            settle=clock.sleep,
        )
    finally:
        server.stop()
