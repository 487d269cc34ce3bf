"""Choosing the GPIO library, against the real lgpio (PyPI's x86-64 wheel: the same Python
module and C library as apt's python3-lgpio on a Pi, with no GPIO chip to open here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device.errors import LedError
from device.hardware.gpio import board_model, header_gpiochip, import_lgpio, lgpio_workdir, real_pin_factory

ROOT = Path(__file__).resolve().parents[1]


def _in_read_only_directory(
    code: str, tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python whose current directory is a read-only mount, as ``/`` is
    under ProtectSystem=strict (a mount namespace of its own: root ignores mode bits)."""
    if shutil.which("unshare") is None:
        if os.environ.get("CI"):
            pytest.fail("unshare (util-linux) is not installed")
        pytest.skip("unshare is not installed")
    ro = tmp_path / "read-only"
    ro.mkdir()
    user_ns = [] if os.geteuid() == 0 else ["--map-root-user"]
    script = f'mount --bind -o ro "{ro}" "{ro}" && cd "{ro}" && exec "{sys.executable}" -c "$0"'
    return subprocess.run(
        ["unshare", "--mount", *user_ns, "sh", "-c", script, code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
    )


def test_plain_import_lgpio_fails_where_the_current_directory_cannot_be_written(tmp_path: Path) -> None:
    # The fault itself (lg PY_LGPIO/lgpio_extra.py: open('.lgd-nfy<N>') relative to the cwd).
    proc = _in_read_only_directory("import lgpio", tmp_path, {})
    assert proc.returncode != 0
    assert "FileNotFoundError" in proc.stderr and ".lgd-nfy" in proc.stderr


def test_import_lgpio_puts_its_fifo_in_the_runtime_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    proc = _in_read_only_directory(
        "from device.hardware.gpio import import_lgpio; import_lgpio(); print('imported')",
        tmp_path,
        {"RUNTIME_DIRECTORY": str(run)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported"
    fifos = [p for p in run.iterdir() if p.name.startswith(".lgd-nfy")]
    assert len(fifos) == 1 and fifos[0].is_fifo()


def test_import_lgpio_keeps_the_current_directory(tmp_path: Path) -> None:
    here, run = tmp_path / "here", tmp_path / "run"
    here.mkdir()
    run.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from device.hardware.gpio import import_lgpio; import_lgpio(); print(os.getcwd())",
        ],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "LG_WD": str(run)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(here)  # lgpio chdir()s into LG_WD; we come back
    assert any(p.name.startswith(".lgd-nfy") for p in run.iterdir())
    assert not any(p.name.startswith(".lgd-nfy") for p in here.iterdir())


def test_the_workdir_is_chosen_in_order_and_must_be_writable(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000", "RUNTIME_DIRECTORY": "/run/palm-scanner:/run/other"}
    assert lgpio_workdir(env) == Path("/run/palm-scanner")
    assert lgpio_workdir({**env, "LG_WD": "/somewhere"}) == Path("/somewhere")
    assert lgpio_workdir({"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path("/run/user/1000")
    with pytest.raises(LedError, match=r"lgpio needs a writable directory .*'/nonexistent/run'.*LG_WD"):
        import_lgpio({"LG_WD": "/nonexistent/run"})


def _chip(devices: Path, n: int, compatible: bytes) -> None:
    node = devices / f"gpiochip{n}" / "of_node"
    node.mkdir(parents=True)
    (node / "compatible").write_bytes(compatible)


def test_the_header_chip_is_found_by_its_driver(tmp_path: Path) -> None:
    # A Pi 5 before kernel 6.6.45: the SoC's own chips first, the RP1 (the header) as gpiochip4.
    old = tmp_path / "old"
    for n in range(4):
        _chip(old, n, b"brcm,bcm2712-pinctrl\0")
    _chip(old, 4, b"raspberrypi,rp1-gpio\0")
    assert header_gpiochip(old) == 4
    # Since 6.6.45 the RP1 is gpiochip0 (gpiozero issue 1166); a Pi 4's chip is brcm,bcm2711-gpio.
    new = tmp_path / "new"
    _chip(new, 0, b"raspberrypi,rp1-gpio\0")
    _chip(new, 10, b"brcm,bcm2712-pinctrl\0")
    assert header_gpiochip(new) == 0
    pi4 = tmp_path / "pi4"
    _chip(pi4, 0, b"brcm,bcm2711-gpio\0")
    (pi4 / "gpiochip1").mkdir()  # the firmware's expander has no device-tree node
    assert header_gpiochip(pi4) == 0
    assert header_gpiochip(tmp_path / "none") is None


def test_board_model_reads_the_device_tree(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert board_model(model) == "Raspberry Pi 5 Model B Rev 1.0"
    assert board_model(tmp_path / "absent") == ""


def test_without_a_pi_the_message_says_what_each_library_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lgpio imports here (its FIFO goes to LG_WD) but finds no Pi; RPi.GPIO is not installed.
    monkeypatch.setenv("LG_WD", str(tmp_path))
    with pytest.raises(LedError, match=r"no GPIO library works.*lgpio: .*Pi revision.*rpigpio: .*--simulate"):
        real_pin_factory("auto")
