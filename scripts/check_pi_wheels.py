#!/usr/bin/env python3
"""CI: every requirement of the package and its ``[pi]`` extra resolves to a wheel for a
Raspberry Pi (aarch64, CPython 3.11, glibc 2.36: Bookworm's; Trixie's is newer), so that
nothing needs a compiler on the scanner. And RPi.GPIO still has none (why the extra left it).

    python scripts/check_pi_wheels.py [DEST]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: manylinux tags a Bookworm aarch64 system accepts (pip does not widen an explicit --platform)
PLATFORMS = ["manylinux2014_aarch64", *(f"manylinux_2_{v}_aarch64" for v in (17, 26, 27, 28, 31, 34, 35, 36))]


def download(dest: str, reqs: list[str]) -> subprocess.CompletedProcess[str]:
    plats = [a for p in PLATFORMS for a in ("--platform", p)]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--dest",
            dest,
            "--only-binary=:all:",
            *plats,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            *reqs,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["pi"]]
    with tempfile.TemporaryDirectory() as dest:
        got = download(dest, reqs)
        if got.returncode != 0:
            print(f"FAIL the [pi] install has no aarch64 wheel for something:\n{got.stderr}", file=sys.stderr)
            return 1
        wheels = sorted(p.name for p in Path(dest).iterdir())
        sdists = [w for w in wheels if not w.endswith(".whl")]
        for w in wheels:
            print(f"   {w}")
        if sdists:
            print(f"FAIL not wheels: {sdists}", file=sys.stderr)
            return 1
        print(f"ok   {len(wheels)} wheels for aarch64 / CPython 3.11 resolve {', '.join(reqs)}")
        rpi = download(dest, ["RPi.GPIO"])
        if rpi.returncode == 0:
            print("note RPi.GPIO now has an aarch64 wheel: apt's python3-rpi-lgpio is still the one to use")
        else:
            print("ok   RPi.GPIO has no aarch64 wheel (a source build): the [pi] extra does not ask for it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
