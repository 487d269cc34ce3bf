"""Choosing the real GPIO library for gpiozero: lgpio on a Pi 5, RPi.GPIO or lgpio on a Pi 4.

The Pi-only libraries are imported here, inside functions, and nowhere else.

Two facts of the real libraries shape this (joan2937/lg, waveform80/rpi-lgpio, gpiozero):
- ``import lgpio`` (and so RPi.GPIO on current Raspberry Pi OS, which is rpi-lgpio on lgpio)
  makes a FIFO ``.lgd-nfy<N>`` in ``$LG_WD``, else the current directory, and changes the
  process's directory to it (``PY_LGPIO/lgpio_extra.py`` ``_callback_thread``,
  ``lgNotify.c`` ``lgNotifyOpen``, ``lgUtil.c`` ``lguGetWorkDir``). Under systemd's
  ``ProtectSystem=strict`` the current directory is ``/``, read-only, and the import fails.
  :func:`import_lgpio` points it at a writable runtime directory and comes back.
- The Pi 5's header GPIO is ``gpiochip4`` on kernels before 6.6.45 and ``gpiochip0`` since
  (gpiozero issue 1166): the chip is found by its driver, as rpi-lgpio finds it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from device.errors import LedError

MODEL_FILE = Path("/proc/device-tree/model")
GPIO_DEVICES = Path("/sys/bus/gpio/devices")
#: device-tree drivers of the chips that drive the 40-pin header (rpi-lgpio's list, and the
#: upstream kernel's names for the Pi 4's and older chips)
HEADER_DRIVERS = frozenset(
    {
        "raspberrypi,rp1-gpio",
        "raspberrypi,bcm2835-gpio",
        "raspberrypi,bcm2711-gpio",
        "brcm,bcm2835-gpio",
        "brcm,bcm2711-gpio",
        "brcm,bcm7211-gpio",
    }
)


def lgpio_workdir(env: dict[str, str] | None = None) -> Path:
    """Where lgpio may make its FIFO: ``$LG_WD``, systemd's ``$RUNTIME_DIRECTORY``, the user's
    ``$XDG_RUNTIME_DIR``, else the current directory."""
    env = dict(os.environ) if env is None else env
    for key in ("LG_WD", "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        if env.get(key):
            return Path(env[key].split(":")[0])
    return Path.cwd()


def import_lgpio(env: dict[str, str] | None = None) -> Any:
    """``import lgpio`` with its FIFO in a writable directory, the current directory kept."""
    workdir = lgpio_workdir(env)
    if not (workdir.is_dir() and os.access(workdir, os.W_OK | os.X_OK)):
        raise LedError(
            f"lgpio needs a writable directory for its notification FIFO and {str(workdir)!r} is not "
            "one: set LG_WD (the unit sets it to its RuntimeDirectory, /run/palm-scanner)"
        )
    try:
        here: str | None = os.getcwd()
    except OSError:  # the current directory was removed
        here = None
    os.environ["LG_WD"] = str(workdir)
    try:
        import lgpio

        return lgpio
    finally:
        if here is not None:
            with contextlib.suppress(OSError):
                os.chdir(here)


def header_gpiochip(devices: Path = GPIO_DEVICES) -> int | None:
    """The number of the gpiochip that drives the 40-pin header, by its driver; None if not found."""
    for dev in sorted(devices.glob("gpiochip*")):
        try:
            compatible = (dev / "of_node" / "compatible").read_bytes()
            drivers = set(compatible.decode("ascii", "replace").split("\0"))
        except OSError:
            continue
        if drivers & HEADER_DRIVERS:
            return int(dev.name.removeprefix("gpiochip"))
    return None


def board_model(model_file: Path = MODEL_FILE) -> str:
    try:
        return model_file.read_bytes().rstrip(b"\x00").decode("ascii", "replace")
    except OSError:
        return ""


def real_pin_factory(kind: str) -> Any:
    """A gpiozero pin factory on the real GPIO of this Pi.

    ``auto``: lgpio on every Pi (the only library for the Pi 5's RP1 chip), then the RPi.GPIO
    API, which current Raspberry Pi OS provides on lgpio too (python3-rpi-lgpio). Neither
    times PWM in hardware: lgpio's is a thread (``lgPthTx.c``), RPi.GPIO's too (``soft_pwm.c``).
    """
    order = ["lgpio", "rpigpio"] if kind == "auto" else [kind]
    problems: list[str] = []
    for name in order:
        try:
            import_lgpio()  # rpi-lgpio imports it as well
        except ImportError as exc:
            if name == "lgpio":
                problems.append(f"{name}: {exc}")
                continue
        try:
            if name == "lgpio":
                from gpiozero.pins.lgpio import LGPIOFactory

                # gpiozero 2.0.1.post3 honours chip=; the header's chip moved on the Pi 5.
                return LGPIOFactory(chip=header_gpiochip())
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        except (ImportError, RuntimeError, OSError) as exc:
            problems.append(f"{name}: {exc}")
        except Exception as exc:  # lgpio.error is a bare Exception subclass
            if type(exc).__module__ != "lgpio":
                raise
            problems.append(f"{name}: {exc}")
    raise LedError(
        "no GPIO library works on this machine ("
        + "; ".join(problems)
        + "). On a Raspberry Pi run scripts/install.sh (apt's python3-lgpio); elsewhere use --simulate"
    )
