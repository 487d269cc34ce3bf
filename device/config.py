"""The scanner's configuration: TOML read once, at the edge, into frozen dataclasses.

Every key is declared once, below, with its type, default and valid range; the
loader checks them all and turns the first mistake into a :class:`ConfigError`
that names the key, the value it found and what would be valid. Nothing else in
the package reads the environment; the file itself is read by :mod:`device.inputs`, which
bounds its size, nesting and numbers.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import math
import re
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device import inputs
from device.errors import ConfigError, KeyFileError
from device.inputs import cut
from device.protocol import SUITE_X25519, SUITE_XWING, SUITES
from device.protocol.keys import (
    X25519_PUBLIC_LEN,
    XWING_PUBLIC_LEN,
    RecipientPublic,
    has_xwing,
    new_recipient_key,
    recipient_public,
)

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_CONFIG_BYTES = inputs.MiB  # a config is a few KiB
BCM_PINS = range(2, 28)  # the BCM GPIO numbers on the 40-pin header of a Pi 4 and Pi 5


def _key(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    length: tuple[int, int] | None = None,
) -> Any:
    """A config key: its default (none means required), doc and valid range."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "length": length}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DeviceConfig:
    id: str = _key(doc="the scanner's id, as registered with the cloud")
    key_file: Path = _key(doc="the device's Ed25519 private key (PKCS#8 PEM, mode 0600)")
    allow_swap: bool = _key(False, doc="run even though swap is on")

    def __post_init__(self) -> None:
        if not DEVICE_ID_RE.fullmatch(self.id):
            raise ConfigError(
                f"[device] id = {cut(self.id)} is not valid: use 1 to 64 characters "
                "of letters, digits, '.', '_' and '-'"
            )


@dataclass(frozen=True)
class CloudConfig:
    endpoint: str = _key(doc="base URL of the ingest service, https:// (http:// only for loopback)")
    recipient_public_key: str = _key(
        doc="base64 of the cloud's raw recipient public key: 1216 bytes (X-Wing) or 32 (X25519)"
    )
    protocol: int = _key(
        0, doc="the upload protocol version: 0 as the protocol says (2 for X-Wing), 1 or 2 pinned", lo=0, hi=2
    )
    ca_bundle: Path | None = _key(None, doc="PEM file of a private CA to trust instead of the system's")
    pin_sha256: str | None = _key(None, doc="hex SHA-256 of the server certificate (DER) to pin")

    def __post_init__(self) -> None:
        _check_endpoint(self.endpoint)
        label = f"[cloud] recipient_public_key = {cut(self.recipient_public_key)} is not valid"
        try:
            raw = base64.b64decode(self.recipient_public_key, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                f"{label}: it must be standard base64 of {XWING_PUBLIC_LEN} bytes (X-Wing) or "
                f"{X25519_PUBLIC_LEN} bytes (X25519)"
            ) from None
        try:  # its length, a small-order X25519 part, an ML-KEM part, this cryptography's X-Wing
            suite = recipient_public(raw).suite
        except KeyFileError as exc:
            raise ConfigError(f"{label}: {exc}") from None
        if self.protocol and suite not in SUITES[self.protocol]:
            raise ConfigError(
                f"[cloud] protocol = {self.protocol} cannot seal to an X-Wing key (version 1 has only "
                "X25519): set protocol = 0 or 2, or give the cloud's 32-byte X25519 key"
            )
        if self.pin_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.pin_sha256):
            raise ConfigError(
                f"[cloud] pin_sha256 = {cut(self.pin_sha256)} is not valid: "
                "use 64 lowercase hex characters (SHA-256 of the certificate's DER bytes)"
            )

    @property
    def recipient_public_bytes(self) -> bytes:
        return base64.b64decode(self.recipient_public_key)

    @property
    def recipient(self) -> RecipientPublic:
        """The recipient key the scanner seals to, and its suite."""
        return recipient_public(self.recipient_public_bytes)


def _check_endpoint(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - a port out of range or not a number raises here
    except ValueError as exc:  # "https://[::1": an unclosed IPv6 bracket, a bad port
        raise ConfigError(
            f"[cloud] endpoint = {cut(url)} is not valid: {exc}; use an https:// URL such as "
            "https://ingest.example.com"
        ) from None
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    raise ConfigError(
        f"[cloud] endpoint = {cut(url)} is not valid: use an https:// URL "
        "(plain http:// is accepted only for a loopback host such as 127.0.0.1)"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class CameraConfig:
    tuning_file: str = _key("imx219_noir.json", doc="libcamera tuning file: a name or a path")
    main_size: tuple[int, int] = _key(
        (640, 480), doc="capture stream [width, height]", lo=64, hi=4096, length=(2, 2)
    )
    lores_size: tuple[int, int] = _key(
        (320, 240), doc="presence stream [width, height]", lo=32, hi=2048, length=(2, 2)
    )
    frame_rate: float = _key(60.0, doc="frames per second", lo=1, hi=200)
    exposure_min_us: int = _key(100, doc="shortest exposure", lo=10, hi=1_000_000)
    exposure_max_us: int = _key(8000, doc="longest exposure", lo=10, hi=1_000_000)
    gain_min: float = _key(1.0, doc="lowest analogue gain", lo=1.0, hi=16.0)
    gain_max: float = _key(8.0, doc="highest analogue gain", lo=1.0, hi=16.0)
    buffer_count: int = _key(4, doc="camera buffers (few, so no stale frame waits)", lo=2, hi=8)
    focus_distance_mm: float = _key(
        125.0, doc="where a lens with a focus motor (Camera Module 3) is focused", lo=30, hi=1000
    )

    def __post_init__(self) -> None:
        if self.exposure_min_us > self.exposure_max_us:
            raise ConfigError(
                f"[camera] exposure_min_us = {self.exposure_min_us} is above "
                f"exposure_max_us = {self.exposure_max_us}: the minimum must not exceed the maximum"
            )
        period_us = 1e6 / self.frame_rate
        if self.exposure_max_us > period_us:
            raise ConfigError(
                f"[camera] exposure_max_us = {self.exposure_max_us} does not fit in one frame "
                f"at frame_rate = {self.frame_rate:g}: use at most {int(period_us)}"
            )
        if self.gain_min > self.gain_max:
            raise ConfigError(f"[camera] gain_min = {self.gain_min:g} is above gain_max = {self.gain_max:g}")
        lw, lh = self.lores_size
        mw, mh = self.main_size
        if lw > mw or lh > mh:
            raise ConfigError(
                f"[camera] lores_size = {list(self.lores_size)} is larger than "
                f"main_size = {list(self.main_size)}: the presence stream must be the smaller"
            )


@dataclass(frozen=True)
class LedsConfig:
    sector_pins: tuple[int, ...] = _key(
        (17, 27, 22, 23), doc="one BCM pin per ring sector", lo=2, hi=27, length=(3, 8)
    )
    pwm_frequency_hz: float = _key(
        2000.0, doc="PWM frequency for dimming; 0 switches on/off only", lo=0, hi=10000
    )
    idle_level: float = _key(0.15, doc="ring brightness while watching for a hand", lo=0, hi=0.25)
    max_on_s: float = _key(2.0, doc="longest the ring may stay lit at once", lo=0.05, hi=10)
    active_high: bool = _key(True, doc="a high pin lights the LEDs")
    first_sector_deg: float = _key(
        45.0,
        doc="where sector 0 sits around the lens, degrees counter-clockwise from the image's right "
        "(the others follow counter-clockwise); calibration checks the wiring against it",
        lo=-360,
        hi=360,
    )
    pin_factory: str = _key("auto", doc="GPIO library", choices=("auto", "lgpio", "rpigpio"))

    def __post_init__(self) -> None:
        _check_pins("[leds] sector_pins", self.sector_pins)
        if 0 < self.pwm_frequency_hz < 50:
            raise ConfigError(
                f"[leds] pwm_frequency_hz = {self.pwm_frequency_hz:g} is not valid: "
                "use 0 (no dimming) or 50 to 10000 (lgpio's software PWM stops at 10 kHz)"
            )


@dataclass(frozen=True)
class IndicatorConfig:
    green_pin: int = _key(5, doc="BCM pin of the green (accepted) light", lo=2, hi=27)
    amber_pin: int = _key(6, doc="BCM pin of the amber (guidance) light", lo=2, hi=27)
    red_pin: int = _key(13, doc="BCM pin of the red (refused, fault) light", lo=2, hi=27)
    active_high: bool = _key(True, doc="a high pin lights the light")

    def __post_init__(self) -> None:
        _check_pins("[indicator] pins", (self.green_pin, self.amber_pin, self.red_pin))


@dataclass(frozen=True)
class SimConfig:
    """Optics of the simulated scanner (ignored on real hardware)."""

    focal_px: float = _key(380.0, doc="focal length in pixels of main_size", lo=50, hi=5000)
    ring_radius_mm: float = _key(30.0, doc="LED ring radius around the lens", lo=5, hi=80)
    focus_distance_mm: float = _key(125.0, doc="distance in sharpest focus", lo=30, hi=500)
    aperture_mm: float = _key(1.5, doc="lens aperture diameter (depth of field)", lo=0.1, hi=10)
    rolling_shutter: bool = _key(True, doc="rows exposed one after another")
    led_beam_exponent: float = _key(
        1.0,
        doc="LED beam shape: intensity falls as cos(angle)^m (1: Lambertian, 4: a narrow lens)",
        lo=0.5,
        hi=8,
    )
    led_power: float = _key(
        1.0, doc="the ring's radiant intensity relative to the nominal ring's", lo=0.05, hi=20
    )
    isp_soften_px: float = _key(
        0.7, doc="the ISP's demosaic and downscale softening of the image, Gaussian sigma px", lo=0, hi=3
    )
    isp_denoise_px: float = _key(
        0.0, doc="the ISP's spatial denoise left on (a blur after the noise), sigma px; 0: off", lo=0, hi=3
    )
    temporal_denoise: float = _key(
        0.0,
        doc="the ISP's temporal denoise left on: the share of the previous frame kept; 0: off",
        lo=0,
        hi=0.9,
    )
    noise_scale: float = _key(1.0, doc="the sensor's noise relative to the nominal sensor's", lo=0, hi=10)


@dataclass(frozen=True)
class CalibrationConfig:
    """Where the calibration lives and what the technician's targets are."""

    file: Path = _key(
        Path("/var/lib/palm-scanner/calibration.toml"),
        doc="the calibration file `palm calibrate` writes and the daemon reads",
    )
    card_distance_mm: float = _key(
        125.0, doc="distance of the grey card and the focus target (the spacer's height)", lo=30, hi=500
    )
    card_albedo: float = _key(
        0.5, doc="the grey card's reflectance at 850-940 nm, as its maker states", lo=0.05, hi=0.99
    )
    target_square_mm: float = _key(60.0, doc="side of the black square on the focus target", lo=10, hi=200)
    liveness_file: Path | None = _key(
        None, doc="this rig's liveness model (`palm calibrate liveness` writes it); none: the shipped model"
    )


@dataclass(frozen=True)
class TillConfig:
    """The till's API (device.till): where it listens and whether the scanner waits to be armed.

    The section's presence turns it on: without ``[till]`` the scanner captures any hand (a kiosk)."""

    listen: str = _key(
        "127.0.0.1:8443",
        doc="address:port of the till API over HTTPS ([::1]:8443 for IPv6; 0.0.0.0 for every address)",
    )
    mode: str = _key(
        "armed",
        doc="armed: capture only for a checkout a till armed; always: any hand (a kiosk without a till)",
        choices=("armed", "always"),
    )
    state_dir: Path = _key(
        Path("/var/lib/palm-scanner"), doc="where tills.json and the API's TLS key and certificate live"
    )

    def __post_init__(self) -> None:
        self.address  # noqa: B018 - checks the value

    @property
    def address(self) -> tuple[str, int]:
        """``listen`` as (host, port)."""
        host, sep, port = self.listen.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
            number = int(port) if port.isascii() and port.isdigit() else -1
        except ValueError:
            number = -1
        if not sep or not 1 <= number <= 65535:
            raise ConfigError(
                f"[till] listen = {cut(self.listen)} is not valid: use an IP address and a port from 1 "
                'to 65535, such as "127.0.0.1:8443", "0.0.0.0:8443" or "[::1]:8443"'
            )
        return host, number


@dataclass(frozen=True)
class Config:
    device: DeviceConfig
    cloud: CloudConfig
    camera: CameraConfig = field(default_factory=CameraConfig)
    leds: LedsConfig = field(default_factory=LedsConfig)
    indicator: IndicatorConfig = field(default_factory=IndicatorConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    #: None without a [till] section: no till API, any hand is captured
    till: TillConfig | None = None
    source: Path | None = None

    @property
    def armed_only(self) -> bool:
        """Whether a capture needs a checkout a till armed."""
        return self.till is not None and self.till.mode == "armed"

    def __post_init__(self) -> None:
        if self.till is not None and self.cloud.protocol == 1:
            raise ConfigError(
                "[cloud] protocol = 1 cannot carry a till's checkout (version 2 does): set protocol = 0 "
                "or 2, or remove [till]"
            )
        shared = set(self.leds.sector_pins) & {
            self.indicator.green_pin,
            self.indicator.amber_pin,
            self.indicator.red_pin,
        }
        if shared:
            raise ConfigError(
                f"BCM pin {sorted(shared)[0]} is used by both [leds] sector_pins and "
                "[indicator]: each pin drives one thing"
            )


SECTIONS: dict[str, type[Any]] = {
    "device": DeviceConfig,
    "cloud": CloudConfig,
    "camera": CameraConfig,
    "leds": LedsConfig,
    "indicator": IndicatorConfig,
    "sim": SimConfig,
    "calibration": CalibrationConfig,
    "till": TillConfig,
}
#: sections that may be left out, and are then None (their absence means something)
OPTIONAL_SECTIONS = frozenset({"till"})


def _check_pins(name: str, pins: tuple[int, ...]) -> None:
    seen: set[int] = set()
    for pin in pins:
        if pin in seen:
            raise ConfigError(f"{name} uses BCM pin {pin} twice: each pin drives one thing")
        seen.add(pin)


def load_config(path: str | Path) -> Config:
    """Read and check a config file; every mistake raises :class:`ConfigError`."""
    path = Path(path)
    try:
        data = inputs.read_toml(path, what="config file", limit=MAX_CONFIG_BYTES)
    except inputs.InputError as exc:
        raise ConfigError(str(exc)) from None
    return parse_config(data, base_dir=path.parent, source=path)


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path | None = None, source: Path | None = None
) -> Config:
    """Build a :class:`Config` from parsed TOML (relative paths resolve against base_dir)."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}]: valid sections are " + ", ".join(f"[{s}]" for s in SECTIONS)
        )
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = data.get(name)
        if table is None and name in OPTIONAL_SECTIONS:
            continue
        if table is None:
            if name in ("device", "cloud"):
                raise ConfigError(f"section [{name}] is missing: it is required")
            table = {}
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{name}] must be a table (a [{name}] section), not a value")
        sections[name] = _build_section(name, cls, table, base_dir)
    return Config(**sections, source=source)


def _build_section(section: str, cls: type[Any], table: Mapping[str, Any], base_dir: Path | None) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"[{section}] {unknown[0]} is not a known key: valid keys are " + ", ".join(fields))
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        label = f"[{section}] {name}"
        if name not in table:
            if f.default is dataclasses.MISSING:
                raise ConfigError(f"{label} is missing: {f.metadata['doc']}")
            continue
        values[name] = _convert(label, table[name], hints[name], f.metadata, base_dir)
    return cls(**values)


def _describe(tp: Any) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        Path: "a file path",
    }
    return names.get(tp, str(tp))


def _convert(label: str, value: Any, tp: Any, meta: Mapping[str, Any], base_dir: Path | None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        if value == "":
            return None
        return _convert(label, value, inner, meta, base_dir)
    if origin is tuple:
        elem = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{label} = {cut(value)} is not valid: expected a list of {_describe(elem)}s")
        lo_n, hi_n = meta["length"]
        if not lo_n <= len(value) <= hi_n:
            want = f"exactly {lo_n}" if lo_n == hi_n else f"{lo_n} to {hi_n}"
            raise ConfigError(f"{label} = {cut(value)} is not valid: expected {want} entries")
        return tuple(_convert(label, v, elem, meta, base_dir) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{label} = {cut(value)} is not valid: expected true or false")
        return value
    if tp in (int, float):
        ok = isinstance(value, int) if tp is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{label} = {cut(value)} is not valid: expected {_describe(tp)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{label} = {value} is not valid: expected a finite number")
        lo, hi = meta["lo"], meta["hi"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{label} = {cut(value)} is out of range: valid is {lo:g} to {hi:g}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label} = {cut(value)} is not valid: expected a string")
        choices = meta["choices"]
        if choices and value not in choices:
            raise ConfigError(f"{label} = {cut(value)} is not valid: choose one of " + ", ".join(choices))
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{label} = {cut(value)} is not valid: expected a file path")
        if "\x00" in value:
            raise ConfigError(f"{label} = {cut(value)} is not valid: a path cannot hold a NUL character")
        path = Path(value)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if label.endswith("ca_bundle") and not path.is_file():
            raise ConfigError(f"{label} = {cut(value)}: no such file {str(path)!r}")
        return path
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module, not user input


def defaults_for_simulation(
    *, device_id: str = "sim-scanner", recipient_public_key: bytes | None = None
) -> Config:
    """A config for the simulated scanner when the user gives none."""
    if recipient_public_key is None:
        # a key no one holds the private half of, until the simulated scanner makes its own;
        # post-quantum where this cryptography can
        suite = SUITE_XWING if has_xwing() else SUITE_X25519
        recipient_public_key = new_recipient_key(suite)[1].public_raw
    key = recipient_public_key
    return Config(
        device=DeviceConfig(id=device_id, key_file=Path("/nonexistent/sim-key.pem")),
        cloud=CloudConfig(
            endpoint="http://127.0.0.1:8080",
            recipient_public_key=base64.b64encode(key).decode("ascii"),
        ),
    )
