"""scripts/install.sh: its dry run's plan, idempotent on a tree that has a config and a key;
the first-boot unit and the pi-gen stage."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install.sh"


def _plan(*args: str) -> tuple[list[str], str]:
    proc = subprocess.run(
        ["bash", str(INSTALL), "--dry-run", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")], proc.stdout


def _index(steps: list[str], pattern: str) -> int:
    hits = [i for i, s in enumerate(steps) if re.search(pattern, s)]
    assert len(hits) == 1, (pattern, steps)
    return hits[0]


def test_the_plan_installs_everything_in_order(tmp_path: Path) -> None:
    steps, out = _plan("--device-id", "lane-3", "--root", str(tmp_path))
    order = [
        r"^apt-get update",
        r"apt-get install .*python3-numpy python3-opencv .*python3-picamera2 .*python3-lgpio "
        r"python3-rpi-lgpio",
        r"^python3 -m venv --system-site-packages \S+/opt/palm-scanner/venv$",
        rf"/venv/bin/python -m pip install --quiet --upgrade --no-deps {re.escape(str(ROOT))}$",
        r"/venv/bin/python -m device.deps --constraints \S+/apt-pins.txt$",
        r"/venv/bin/python -m pip install --quiet --constraint \S+/apt-pins.txt ",
        r"palm-scanner.sysusers.conf \S+/usr/lib/sysusers.d/palm-scanner.conf$",
        r"palm-scanner.tmpfiles.conf \S+/usr/lib/tmpfiles.d/palm-scanner.conf$",
        r"^systemd-sysusers palm-scanner.conf$",
        r"^systemd-tmpfiles --create palm-scanner.conf$",
        r"^install -m 0640 -o 0 -g \S+ \S+/config.example.toml \S+/etc/palm-scanner/config.toml$",
        r"palm-firstboot.service \S+/etc/systemd/system/palm-firstboot.service$",
        r"^runuser -u palm -- \S+/palm keys init --out \S+/var/lib/palm-scanner/device-key.pem "
        r"--device-id lane-3$",
        r"^systemctl enable palm-firstboot.service$",
        r"palmd.service \S+/etc/systemd/system/palmd.service$",
        r"palm-time-wait-sync.conf \S+/etc/systemd/system/systemd-time-wait-sync.service.d/"
        r"palm-scanner.conf$",
        r"^systemctl enable palmd.service$",
        r"/etc/rpi/swap.conf.d/90-palm-scanner.conf$",
        r"^systemctl mask dphys-swapfile.service dev-zram0.swap systemd-zram-setup@zram0.service$",
    ]
    positions = [_index(steps, p) for p in order]
    assert positions == sorted(positions), steps
    # Reloading needs a running systemd; a chroot or a container without one is told so.
    reloads = "systemctl daemon-reload" in steps
    assert reloads == Path("/run/systemd/system").is_dir(), out
    assert reloads or "systemd is not running here" in out
    assert "8/9 swap off" in out
    # Never PyPI's RPi.GPIO (a source build), never the [pi] extra's resolution over apt's numpy.
    assert not any("RPi.GPIO" in s or "[pi]" in s for s in steps)
    assert "no /" in out and "config.txt: not a Raspberry Pi" in out
    assert list(tmp_path.iterdir()) == []  # a dry run does nothing


def test_the_plan_sets_strict_gpiod_once(tmp_path: Path) -> None:
    boot = tmp_path / "boot" / "firmware"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text("[all]\n")
    steps, _ = _plan("--root", str(tmp_path))
    assert f"append dtparam=strict_gpiod to {boot / 'config.txt'}" in steps
    (boot / "config.txt").write_text("[all]\ndtparam=strict_gpiod\n")
    steps, out = _plan("--root", str(tmp_path))
    assert not any("strict_gpiod" in s for s in steps) and "strict_gpiod: kept" in out


def test_a_second_run_keeps_the_config_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "etc" / "palm-scanner").mkdir(parents=True)
    (tmp_path / "etc" / "palm-scanner" / "config.toml").write_text("# the store's own\n")
    (tmp_path / "var" / "lib" / "palm-scanner").mkdir(parents=True)
    (tmp_path / "var" / "lib" / "palm-scanner" / "device-key.pem").write_text("key\n")
    (tmp_path / "opt" / "palm-scanner" / "venv" / "bin").mkdir(parents=True)
    python = tmp_path / "opt" / "palm-scanner" / "venv" / "bin" / "python"
    python.write_text("")
    python.chmod(0o755)
    steps, out = _plan("--root", str(tmp_path))
    assert not any("config.example.toml" in s or "keys init" in s or " -m venv " in s for s in steps)
    assert out.count(": kept") == 3
    assert any("pip install" in s for s in steps)  # the package itself is brought up to date
    assert not any("pip uninstall" in s for s in steps)


def test_an_older_venv_loses_pypis_numpy_opencv_and_rpi_gpio(tmp_path: Path) -> None:
    # The install before #13 put them in the venv, where they shadow apt's (numpy 2 breaks picamera2).
    venv = tmp_path / "opt" / "palm-scanner" / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    for dist in ("numpy-2.4.6", "opencv_python_headless-5.1.0.95", "RPi.GPIO-0.7.1", "requests-2.34.2"):
        (site / f"{dist}.dist-info").mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin" / "python").write_text("")
    (venv / "bin" / "python").chmod(0o755)
    steps, _ = _plan("--root", str(tmp_path))
    gone = sorted(s.rsplit(" ", 1)[1] for s in steps if "pip uninstall" in s)
    assert gone == ["RPi.GPIO", "numpy", "opencv_python_headless"]


def test_an_image_carries_no_key_and_masks_swap(tmp_path: Path) -> None:
    steps, out = _plan("--image", "--root", str(tmp_path))
    assert not any("keys init" in s for s in steps)
    assert "first boot" in out
    assert any(s.startswith("systemctl mask dphys-swapfile.service dev-zram0.swap") for s in steps)
    assert "systemctl daemon-reload" not in steps  # no running systemd in an image's chroot


def test_bad_options_are_refused() -> None:
    for args in (["--bogus"], ["--root", "/tmp"]):  # --root only plans
        proc = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "install.sh:" in proc.stderr


def test_scripts_parse_and_the_stage_runs_the_image_install() -> None:
    scripts = [INSTALL, *sorted((ROOT / "pi-gen").rglob("*.sh"))]
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
        assert os.access(script, os.X_OK), script
    run = (ROOT / "pi-gen" / "stage-palm" / "00-palm-scanner" / "00-run.sh").read_text()
    assert "scripts/install.sh --image" in run and "on_chroot" in run


def test_first_boot_unit_verifies_and_makes_the_key_only_once(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "palm-firstboot.service").read_text()
    assert "ConditionPathExists=!/var/lib/palm-scanner/device-key.pem" in unit
    assert "User=palm" in unit and "UMask=0077" in unit
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is not installed (.ci/run installs the systemd package)")
        pytest.skip("systemd-analyze is not installed")
    palm = Path(os.sys.executable).with_name("palm")  # verify wants the program to exist
    local = tmp_path / "palm-firstboot.service"
    local.write_text(unit.replace("/opt/palm-scanner/venv/bin/palm", str(palm)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(local)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "palm-firstboot" not in proc.stderr, proc.stderr


def test_the_wheel_carries_every_file_the_package_reads(tmp_path: Path) -> None:
    # An editable install reads the checkout; a scanner gets the wheel. The liveness model was
    # missing from it, found by installing into a Debian root (scripts/prove_debian.sh).
    import sys
    import zipfile

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("palm_scanner-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    data = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "device").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert data, "the package has data files (the liveness model at least)"
    assert [d for d in data if d not in inside] == []
