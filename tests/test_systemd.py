"""The systemd unit, its user and directories: verified and rated by systemd's own tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "palmd.service"


def _tool(name: str) -> None:
    """Skip where a developer's machine lacks systemd's tools; in CI (.ci/run installs them), fail."""
    if shutil.which(name) is None:
        message = f"{name} is not installed (.ci/run installs the systemd package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def needs_systemd() -> None:
    _tool("systemd-analyze")


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def installed_unit(tmp_path: Path) -> Path:
    """The unit as shipped, but starting the palm of this test environment (verify wants it to exist)."""
    palm = Path(sys.executable).with_name("palm")
    assert palm.exists(), palm
    text = UNIT.read_text().replace("/opt/palm-scanner/venv/bin/palm", str(palm))
    unit = tmp_path / "palmd.service"
    unit.write_text(text)
    return unit


@pytest.mark.usefixtures("needs_systemd")
def test_unit_verifies_clean(installed_unit: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(installed_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "palmd.service" not in proc.stderr, proc.stderr


@pytest.mark.usefixtures("needs_systemd")
def test_unit_is_rated_2_or_lower_by_systemd_analyze_security(installed_unit: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(installed_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for palmd\.service: (\d+\.\d)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 2.0, proc.stdout


def test_unit_keeps_what_the_scanner_needs_and_nothing_at_rest() -> None:
    s = _settings()
    assert s["Type"] == ["notify"] and s["Restart"] == ["on-failure"] and "WatchdogSec" in s
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    allowed = " ".join(s["DeviceAllow"])
    for device in ("char-video4linux", "char-media", "char-dma_heap", "char-gpiochip"):
        assert device in allowed
    assert "AF_NETLINK" in s["RestrictAddressFamilies"][0]
    assert s["DevicePolicy"] == ["closed"] and s["CapabilityBoundingSet"] == [""]
    assert s["MemoryDenyWriteExecute"] == ["yes"] and s["LimitCORE"] == ["0"]
    assert s["TemporaryFileSystem"][0].startswith("/tmp:") and s["ProtectSystem"] == ["strict"]
    assert "PYTHONDONTWRITEBYTECODE=1" in s["Environment"][0]


def test_the_unit_wants_the_clock_wait_it_is_ordered_after_and_bounds_it() -> None:
    """The review's case: After=time-sync.target alone waits for nothing (the target is a point in
    the boot that nothing reaches late unless systemd-time-wait-sync.service is pulled in), so a Pi
    without a battery clock started with a 1970 clock and every capture was stale."""
    from device.selftest import TIME_SYNC_WAIT_S

    s = _settings()
    assert "time-sync.target" in s["After"][0].split()
    assert "systemd-time-wait-sync.service" in s["Wants"][0].split()
    # systemd's own unit waits with TimeoutStartSec=infinity: the drop-in bounds it, and
    # selftest's clock line says the same bound
    dropin = (ROOT / "systemd" / "palm-time-wait-sync.conf").read_text()
    assert re.search(rf"(?m)^\[Service\]\nTimeoutStartSec={TIME_SYNC_WAIT_S}s$", dropin)


def test_tmp_is_ram_and_lgpio_has_a_writable_directory() -> None:
    s = _settings()
    # PrivateTmp= would win over TemporaryFileSystem=/tmp (systemd namespace.c: MOUNT_PRIVATE_TMP
    # sorts before MOUNT_TMPFS and the duplicate is dropped): /tmp would be on the SD card.
    assert s.get("PrivateTmp", ["no"]) == ["no"]
    assert "TMPDIR=/tmp" in s["Environment"][0]
    # import lgpio makes its FIFO in $LG_WD (or the current directory, / and read-only under
    # ProtectSystem=strict): both must be the runtime directory, which systemd makes first.
    assert s["RuntimeDirectory"] == ["palm-scanner"] and s["WorkingDirectory"] == ["/run/palm-scanner"]
    assert "LG_WD=/run/palm-scanner" in s["Environment"][0].split()


def test_sysusers_and_tmpfiles_make_the_user_and_private_directories(tmp_path: Path) -> None:
    _tool("systemd-sysusers")
    for kind in ("sysusers", "tmpfiles"):
        d = tmp_path / "usr" / "lib" / f"{kind}.d"
        d.mkdir(parents=True)
        shutil.copy(ROOT / "systemd" / f"palm-scanner.{kind}.conf", d)
    (tmp_path / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}"], check=True, capture_output=True, timeout=60)
    users = {
        line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/group").read_text().splitlines()
    }
    assert users["palm"][6] == "/usr/sbin/nologin"
    assert "palm" in groups["video"][3].split(",") and "palm" in groups["gpio"][3].split(",")
    subprocess.run(
        ["systemd-tmpfiles", f"--root={tmp_path}", "--create", "palm-scanner.tmpfiles.conf"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    state = (tmp_path / "var/lib/palm-scanner").stat()
    config = (tmp_path / "etc/palm-scanner").stat()
    assert oct(state.st_mode & 0o777) == "0o700" and state.st_uid == int(users["palm"][2])
    assert oct(config.st_mode & 0o777) == "0o750" and config.st_gid == int(groups["palm"][2])
