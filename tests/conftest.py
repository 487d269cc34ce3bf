"""Shared fixtures: the config is config.example.toml itself, time is a FakeClock."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.clock import FakeClock
from device.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "config.example.toml"
REAL_PALMS = ROOT.parent / "shared" / "data" / "real-palms"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", help="run tests that need a real Pi camera and GPIO")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs real hardware: run with --hardware on a Raspberry Pi")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def config() -> Config:
    return load_config(EXAMPLE_CONFIG)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mock_factory() -> MockFactory:
    """gpiozero's own mock pins, PWM-capable; a fresh factory per test, never global."""
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.close()
