"""Choosing the real GPIO library for gpiozero: lgpio on a Pi 5, RPi.GPIO or lgpio on a Pi 4.

The Pi-only libraries are imported here, inside functions, and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device.errors import LedError

MODEL_FILE = Path("/proc/device-tree/model")


def board_model(model_file: Path = MODEL_FILE) -> str:
    try:
        return model_file.read_bytes().rstrip(b"\x00").decode("ascii", "replace")
    except OSError:
        return ""


def real_pin_factory(kind: str, *, model: str | None = None) -> Any:
    """A gpiozero pin factory on the real GPIO of this Pi.

    ``auto``: the Pi 5's RP1 chip is driven through lgpio only; older Pis try
    RPi.GPIO first (hardware-timed on the Pi 4) and fall back to lgpio.
    """
    model = board_model() if model is None else model
    order = (["lgpio"] if "Raspberry Pi 5" in model else ["rpigpio", "lgpio"]) if kind == "auto" else [kind]
    problems: list[str] = []
    for name in order:
        try:
            if name == "lgpio":
                from gpiozero.pins.lgpio import LGPIOFactory

                return LGPIOFactory()
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        except (ImportError, RuntimeError, OSError) as exc:
            problems.append(f"{name}: {exc}")
    raise LedError(
        "no GPIO library works on this machine ("
        + "; ".join(problems)
        + "). On a Raspberry Pi install the package with its 'pi' extra; elsewhere use --simulate"
    )
