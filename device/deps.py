"""What the scanner's venv still needs from PyPI once apt has given what it can (install.sh).

On Raspberry Pi OS the venv sees apt's packages (``--system-site-packages``): picamera2,
and the numpy it was built against, must be apt's. A plain ``pip install`` of the package
would bring PyPI's opencv-python-headless (apt's python3-opencv has no such distribution)
and with it numpy 2, which shadows apt's numpy 1.24 and breaks apt's simplejpeg, which
picamera2 imports (picamera2 issues 1088, 1211). So install.sh installs the package with
``--no-deps`` and then asks this module, run by the venv's Python:

    python -m device.deps --constraints FILE

It prints, one a line, the requirements that nothing importable satisfies (for pip to
install), and writes to FILE a pin of every one that is satisfied (so that pip, resolving
what it installs, can never replace apt's numpy). It imports no module to learn a version
where the distribution's metadata tells it: ``import lgpio`` creates a FIFO in the current
directory, which an installer must not do.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import importlib.util
import re
import sys
from dataclasses import dataclass

#: the import name of each requirement, where it differs from the distribution's name
MODULES = {"opencv-python-headless": "cv2", "rpi-lgpio": "RPi.GPIO"}
#: what the real scanner needs beyond the package's own dependencies: lgpio drives the Pi 5's
#: RP1 GPIO and works on a Pi 4 (apt's python3-lgpio, PyPI's lgpio wheel elsewhere)
SCANNER_EXTRA = ("lgpio>=0.2",)
#: distributions that provide a module under another distribution's name (apt's builds of
#: opencv are "opencv" to nothing; rpi-lgpio is the RPi.GPIO of current Raspberry Pi OS)
_PROVIDES = {"cv2": ("opencv-python-headless", "opencv-python", "opencv-contrib-python")}


@dataclass(frozen=True)
class Found:
    name: str
    requirement: str
    version: str | None  # None: nothing importable provides it
    satisfied: bool


def _requirement(spec: str) -> tuple[str, str, str]:
    """(name, specifier, marker) of a PEP 508 line, without extras."""
    from pip._vendor.packaging.requirements import Requirement  # the venv's pip, always there

    req = Requirement(spec)
    return req.name, str(req.specifier), str(req.marker) if req.marker else ""


def _satisfies(version: str, specifier: str) -> bool:
    from pip._vendor.packaging.specifiers import SpecifierSet

    return SpecifierSet(specifier).contains(version, prereleases=True)


def installed_version(name: str) -> str | None:
    """The version of ``name`` that this interpreter would import, from metadata where it can."""
    module = MODULES.get(name, name.replace("-", "_"))
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return None
    for dist in (name, *_PROVIDES.get(module, ())):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    if module == "cv2":
        # Debian's python3-opencv ships no metadata: its module says what it is.
        version = str(importlib.import_module("cv2").__version__)
        return re.sub(r"[^0-9.].*$", "", version) or None
    return None


def requirements(dist: str = "palm-scanner") -> list[str]:
    """The package's own dependencies (no extras) and what the real scanner needs."""
    own = [r for r in (md.requires(dist) or []) if "extra ==" not in r]
    return [*own, *SCANNER_EXTRA]


def survey(reqs: list[str]) -> list[Found]:
    out = []
    for spec in reqs:
        name, specifier, marker = _requirement(spec)
        if marker:
            from pip._vendor.packaging.markers import Marker

            if not Marker(marker).evaluate():
                continue
        version = installed_version(name)
        ok = version is not None and _satisfies(version, specifier)
        out.append(Found(name, f"{name}{specifier}", version, ok))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device.deps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraints", metavar="FILE", help="write pins of what is satisfied here")
    args = parser.parse_args(argv)
    found = survey(requirements())
    for f in found:
        have = f"has {f.version}" if f.version else "none importable"
        print(f"{'ok  ' if f.satisfied else 'need'} {f.requirement} ({have})", file=sys.stderr)
        if not f.satisfied:
            print(f.requirement)
    if args.constraints:
        with open(args.constraints, "w", encoding="utf-8") as out:
            out.writelines(f"{f.name}=={f.version}\n" for f in found if f.satisfied)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
