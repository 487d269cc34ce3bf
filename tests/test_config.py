from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from device.config import SECTIONS, Config, load_config, parse_config
from device.errors import EX_CONFIG, ConfigError
from tests.conftest import EXAMPLE_CONFIG


def example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE_CONFIG.read_text())


def with_change(section: str, key: str, value: Any) -> dict[str, Any]:
    data = example()
    data[section][key] = value
    return data


def test_example_config_loads_into_frozen_dataclasses(config: Config) -> None:
    assert config.device.id == "store-0042-lane-3"
    assert config.leds.sector_pins == (17, 27, 22, 23)
    assert (
        len(config.cloud.recipient_public_bytes) == 1216
        and config.cloud.recipient.suite == "XWING-SHA256-AES256GCM"
    )
    assert config.cloud.protocol == 0  # as the protocol page says: X-Wing, so version 2
    assert config.cloud.ca_bundle is None and config.cloud.pin_sha256 is None
    with pytest.raises(AttributeError):
        config.device.id = "other"  # type: ignore[misc]


def test_every_key_is_in_the_example_with_a_comment_above_it() -> None:
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in lines, f"[{section}] missing from config.example.toml"
        for name in cls.__dataclass_fields__:
            idx = [i for i, ln in enumerate(lines) if re.match(rf"{name}\s*=", ln)]
            assert idx, f"[{section}] {name} is not in config.example.toml"
            above = lines[idx[0] - 1]
            assert above.startswith("#") or re.match(r"\w+\s*=", above), f"{name} has no comment"


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("leds", "sector_pins", [17, 27], r"\[leds\] sector_pins = \[17, 27\].*3 to 8 entries"),
        ("leds", "sector_pins", [17, 17, 22], r"uses BCM pin 17 twice"),
        ("leds", "sector_pins", [17, 27, 99], r"\[leds\] sector_pins = 99 is out of range: valid is 2 to 27"),
        ("leds", "max_on_s", 60, r"\[leds\] max_on_s = 60 is out of range: valid is 0.05 to 10"),
        ("leds", "max_on_s", "2", r"\[leds\] max_on_s = '2' is not valid: expected a number"),
        ("leds", "pin_factory", "pigpio", r"pin_factory = 'pigpio'.*auto, lgpio, rpigpio"),
        ("leds", "pwm_frequency_hz", 10, r"pwm_frequency_hz = 10 is not valid: use 0 .* or 50 to 10000"),
        ("leds", "active_high", 1, r"active_high = 1 is not valid: expected true or false"),
        ("camera", "frame_rate", True, r"frame_rate = True is not valid: expected a number"),
        ("camera", "main_size", [640], r"main_size = \[640\].*exactly 2 entries"),
        ("camera", "exposure_max_us", 20000, r"exposure_max_us = 20000 does not fit.*at most 16666"),
        ("camera", "lores_size", [800, 600], r"lores_size = \[800, 600\] is larger than main_size"),
        ("camera", "gain_min", 9.0, r"gain_min = 9 is above gain_max = 8"),
        ("camera", "tuning", "x.json", r"\[camera\] tuning is not a known key: valid keys are tuning_file"),
        ("device", "id", "lane 3!", r"\[device\] id = 'lane 3!' is not valid"),
        (
            "cloud",
            "endpoint",
            "http://ingest.example.com",
            r"endpoint = 'http://ingest.example.com'.*loopback",
        ),
        ("cloud", "endpoint", "ftp://x", r"use an https:// URL"),
        ("cloud", "endpoint", "https://[::1", r"endpoint = 'https://\[::1' is not valid: Invalid IPv6 URL"),
        (
            "cloud",
            "endpoint",
            "https://x:99999",
            r"endpoint = 'https://x:99999' is not valid: Port out of range",
        ),
        (
            "cloud",
            "recipient_public_key",
            "AAAA",
            r"recipient_public_key = 'AAAA'.*1216 bytes \(X-Wing\) or 32 bytes \(X25519\), not 3",
        ),
        ("cloud", "recipient_public_key", "not base64!", r"standard base64 of 1216 bytes \(X-Wing\) or 32"),
        ("cloud", "protocol", 3, r"\[cloud\] protocol = 3 is out of range: valid is 0 to 2"),
        ("cloud", "ca_bundle", "/nonexistent/ca.pem", r"ca_bundle = '/nonexistent/ca.pem': no such file"),
        ("cloud", "pin_sha256", "ABCD", r"pin_sha256 = 'ABCD' is not valid: use 64 lowercase hex"),
        ("indicator", "green_pin", 17, r"BCM pin 17 is used by both \[leds\] sector_pins and \[indicator\]"),
        ("indicator", "red_pin", 5, r"\[indicator\] pins uses BCM pin 5 twice"),
    ],
)
def test_a_bad_value_names_key_value_and_what_is_valid(
    section: str, key: str, value: Any, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(with_change(section, key, value))


def test_missing_required_key_and_section() -> None:
    data = example()
    del data["device"]["id"]
    with pytest.raises(ConfigError, match=r"\[device\] id is missing"):
        parse_config(data)
    data = example()
    del data["cloud"]
    with pytest.raises(ConfigError, match=r"section \[cloud\] is missing"):
        parse_config(data)


def test_unknown_section_and_non_table() -> None:
    data = example()
    data["camara"] = {}
    with pytest.raises(ConfigError, match=r"unknown section \[camara\]: valid sections are \[device\]"):
        parse_config(data)
    data = example()
    data["leds"] = 3
    with pytest.raises(ConfigError, match=r"\[leds\] must be a table"):
        parse_config(data)


def test_optional_sections_take_defaults_and_http_loopback_is_allowed() -> None:
    data = {k: v for k, v in example().items() if k in ("device", "cloud")}
    data["cloud"]["endpoint"] = "http://127.0.0.1:8443"
    cfg = parse_config(data)
    assert cfg.leds.sector_pins == (17, 27, 22, 23)
    assert cfg.camera.main_size == (640, 480)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    text = EXAMPLE_CONFIG.read_text().replace('ca_bundle = ""', 'ca_bundle = "ca.pem"')
    text = text.replace('key_file = "/var/lib/palm-scanner/device-key.pem"', 'key_file = "k.pem"')
    (tmp_path / "c.toml").write_text(text)
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.cloud.ca_bundle == tmp_path / "ca.pem"
    assert cfg.device.key_file == tmp_path / "k.pem"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope.toml' does not exist"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[device\nid = 3")
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_config(tmp_path / "bad.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"is not UTF-8 text"):
        load_config(tmp_path / "bin.toml")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_cli_exits_78_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE_CONFIG.read_text().replace("max_on_s = 2.0", "max_on_s = -1"))
    proc = subprocess.run(
        [sys.executable, "-m", "device", "sim", "--config", str(bad), "--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EX_CONFIG
    assert proc.stderr.strip().splitlines() == [
        "palm sim: [leds] max_on_s = -1 is out of range: valid is 0.05 to 10"
    ]
    assert not (tmp_path / "x.png").exists()


def test_an_xwing_key_without_a_cryptography_that_has_it_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """cryptography 47 names the X-Wing KEM but its OpenSSL has no ML-KEM: a scanner on it must say
    so when its config asks for X-Wing (exit 78), not fail at its first seal."""
    from device import cli
    from device.protocol import keys

    monkeypatch.setattr(keys, "has_xwing", lambda: False)
    with pytest.raises(ConfigError, match=r"needs cryptography 48 or newer.*protocol = 1"):
        load_config(EXAMPLE_CONFIG)
    assert cli.main(["sim", "--config", str(EXAMPLE_CONFIG), "--out", "/nonexistent/x.png"]) == 78
    assert "cryptography 48" in capsys.readouterr().err
