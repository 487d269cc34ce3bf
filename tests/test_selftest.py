"""palm selftest: every check in order, and each injected fault caught by the check meant for it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from device.cli import main
from device.selftest import Result, clock_synchronised

ORDER = ["config", "key", "camera", "leds", "indicator", "calibration", "clock", "swap", "cloud"]


def _selftest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str], list[str]]:
    code = main(["selftest", *args])
    out = capsys.readouterr().out.splitlines()
    if out and out[0].startswith("hold the grey card"):  # the technician's instruction comes first
        out = out[1:]
    rows = [re.match(r"^(ok  |FAIL|skip) (\w+) +(.*)$", line) for line in out[:-1]]
    assert all(rows), out
    marks = {m.group(2): m.group(1).strip() for m in rows if m}
    assert [m.group(2) for m in rows if m] == ORDER  # one line each, in order
    return code, marks, out


def test_selftest_passes_on_the_simulated_scanner(capsys: pytest.CaptureFixture[str]) -> None:
    code, marks, out = _selftest(capsys, "--simulate")
    assert code == 0 and set(marks.values()) == {"ok"}
    assert out[-1] == "selftest: all checks passed"
    leds = next(line for line in out if line.startswith("ok   leds"))
    assert "4 sectors respond" in leds


@pytest.mark.parametrize(
    ("faults", "caught"),
    [
        (["dead-sector:2"], {"leds"}),
        (["camera-gone"], {"camera"}),
        (["clock-unsynced"], {"clock"}),
        (["swap-on"], {"swap"}),
        (["cloud-down"], {"cloud"}),
        (["dead-sector:0", "clock-unsynced"], {"leds", "clock"}),
    ],
)
def test_each_fault_is_caught_by_its_check(
    capsys: pytest.CaptureFixture[str], faults: list[str], caught: set[str]
) -> None:
    args = [a for f in faults for a in ("--fault", f)]
    code, marks, out = _selftest(capsys, "--simulate", *args)
    assert code == 1
    assert {name for name, mark in marks.items() if mark == "FAIL"} == caught
    assert out[-1] == "selftest: failed: " + ", ".join(n for n in ORDER if n in caught)
    if "camera" in caught:  # what needs the camera is not checked, and not passed either
        assert marks["leds"] == marks["indicator"] == "skip"
    if "clock" in caught:  # what the scanner does about it at boot
        clock = next(line for line in out if line.startswith("FAIL clock"))
        assert "waits up to 90 s for it (systemd-time-wait-sync.service), then starts without it" in clock
    if "leds" in caught:
        sector = faults[0].split(":")[1]
        assert re.search(rf"sector {sector} dead or weak", "\n".join(out))


def test_a_missing_config_is_named_and_what_needs_it_is_skipped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, marks, out = _selftest(capsys, "--config", str(tmp_path / "none.toml"))
    assert code == 1 and marks["config"] == "FAIL"
    assert "none.toml" in next(line for line in out if line.startswith("FAIL config"))
    assert all(marks[n] == "skip" for n in ("key", "camera", "leds", "indicator", "calibration", "cloud"))


def test_bad_usage_is_refused_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--simulate", "--fault", "dead-sector"]) == 2
    assert "dead-sector:K" in capsys.readouterr().err
    assert main(["selftest", "--fault", "swap-on"]) == 2
    assert "--simulate" in capsys.readouterr().err


def test_the_kernel_says_whether_its_clock_is_synchronised() -> None:
    assert clock_synchronised() in (True, False)  # adjtimex answers on any Linux


def test_a_result_line_says_ok_fail_or_skip() -> None:
    assert Result("swap", True, "off").line() == "ok   swap         off"
    assert Result("swap", False, "on").line().startswith("FAIL swap")
    assert Result("cloud", None, "not checked").line().startswith("skip cloud")
