"""Pi-only libraries are imported inside the real adapters and nowhere else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PI_ONLY = ("picamera2", "libcamera", "RPi", "lgpio")

SCRIPT = """
import contextlib, importlib, io, json, pkgutil, sys
import device
from device.cli import build_parser, main
for mod in pkgutil.walk_packages(device.__path__, "device."):
    if mod.name != "device.__main__":
        importlib.import_module(mod.name)
codes = {"sim": main(["sim", "--scene", "genuine", "--seed", "2", "--out", sys.argv[1]])}
for name in ["sim", "run", "keys", "send-test", "check", "eval", "calibrate", "ingest"]:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main([name, "--help"])
        except SystemExit as exc:
            codes[name + " --help"] = exc.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2].split(","))
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


def test_whole_package_and_simulated_subcommands_import_no_pi_library(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "f.png"), ",".join(PI_ONLY)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert set(result["codes"].values()) == {0}
    assert len(result["codes"]) == 9
    assert (tmp_path / "f.png").stat().st_size > 1000
