"""Choosing the GPIO library: lgpio on a Pi 5; RPi.GPIO, else lgpio, on older Pis."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.errors import LedError
from device.hardware.gpio import board_model, real_pin_factory


def test_board_model_reads_the_device_tree(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert board_model(model) == "Raspberry Pi 5 Model B Rev 1.0"
    assert board_model(tmp_path / "absent") == ""


def test_without_a_gpio_library_the_message_says_what_to_do() -> None:
    # Neither lgpio nor RPi.GPIO is installed on a CI machine, nor is a GPIO chip there.
    with pytest.raises(LedError, match=r"no GPIO library works.*lgpio:.*'pi' extra.*--simulate"):
        real_pin_factory("auto", model="Raspberry Pi 5 Model B Rev 1.0")
    with pytest.raises(LedError, match=r"rpigpio: .*lgpio: "):
        real_pin_factory("auto", model="Raspberry Pi 4 Model B Rev 1.4")
