"""``palm run`` without --simulate: the real scanner's wiring, on mock pins and a stand-in camera."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import new_keys

PALM = [sys.executable, "-m", "device"]
ROOT = Path(__file__).resolve().parents[1]


def _config(tmp: Path, calibration: Path) -> Path:
    key = tmp / "device-key.pem"
    subprocess.run([*PALM, "keys", "init", "--out", str(key)], check=True, capture_output=True)
    path = tmp / "scanner.toml"
    path.write_text(
        f"""
[device]
id = "store-1-lane-2"
key_file = "{key}"
allow_swap = true

[cloud]
endpoint = "http://127.0.0.1:9"
recipient_public_key = "{base64.b64encode(new_keys().recipient.public_raw).decode()}"

[calibration]
file = "{calibration}"
"""
    )
    return path


def test_without_a_calibration_it_refuses_to_start_and_says_what_to_do(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "calibration.toml")
    proc = subprocess.run([*PALM, "run", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert f"no calibration at {tmp_path / 'calibration.toml'}: run `palm calibrate all`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_calibration_for_other_sectors_is_refused(tmp_path: Path) -> None:
    cal = tmp_path / "calibration.toml"
    subprocess.run(
        [*PALM, "calibrate", "flat", "--simulate", "--file", str(cal)], check=True, capture_output=True
    )
    config = _config(tmp_path, cal)
    config.write_text(config.read_text() + "\n[leds]\nsector_pins = [17, 27, 22]\n")
    proc = subprocess.run([*PALM, "run", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert "sectors on BCM [17, 27, 22, 23], this config has 640x480 and [17, 27, 22]" in proc.stderr


def test_serves_on_the_real_wiring_until_stopped_and_leaves_the_ring_dark(tmp_path: Path) -> None:
    cal = tmp_path / "calibration.toml"
    subprocess.run(
        [*PALM, "calibrate", "all", "--simulate", "--file", str(cal)], check=True, capture_output=True
    )
    config = _config(tmp_path, cal)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.hardware_runner", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["healthz"][0] == 200, result
    logged = [json.loads(line) for line in lines[:-1]]
    messages = [r.get("msg", "") for r in logged]
    cal_id = next(m for m in messages if m.startswith("calibration: ")).split()[1].rstrip(",")
    assert cal_id.startswith("cal-")
    assert any(m.startswith("ready: the camera delivers frames") for m in messages), messages
    # The hardening was applied and said so; the ring and the indicator are dark after the stop.
    assert any("dumpable" in m for m in messages), messages
    assert result["pins"] and all(state == 0 for state in result["pins"].values()), result["pins"]
    assert result["scans"] == 0  # an empty shop: nobody to scan


@pytest.mark.parametrize("flag", [["--endpoint", "http://127.0.0.1:1"], ["--camera-fault", "3"]])
def test_simulator_flags_are_refused_on_hardware(flag: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [*PALM, "run", "--config", "x.toml", *flag], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "add --simulate" in proc.stderr
