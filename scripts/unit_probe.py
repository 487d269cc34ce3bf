#!/usr/bin/env python3
"""CI: what palmd.service did under a real systemd (scripts/prove_debian.sh), and the verdict.

    unit_probe.py REPORT.json          inside the booted root: watch palmd, stop it, write the report
    unit_probe.py --check REPORT.json  on the host: print the report, exit 1 on any failed check

Standard library only: it runs on the root's own python3, outside the scanner's venv.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
import urllib.request
from typing import Any

UNIT = "palmd.service"
WATCH_S = 25  # longer than WatchdogSec=15s: at least two pings at half of it
RUNTIME = "/run/palm-scanner"


def _sh(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, timeout=60).stdout


def _show(*props: str) -> dict[str, str]:
    out = _sh("systemctl", "show", UNIT, "-p", ",".join(props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _mount(pid: str, target: str) -> str:
    try:
        for line in pathlib.Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == target:
                rest = fields[fields.index("-") + 1 :]
                return f"{rest[0]} {fields[5]} {rest[2]}"  # fstype, mount options, super options
    except (OSError, ValueError, IndexError):
        pass
    return ""


def probe(report: pathlib.Path) -> None:
    r: dict[str, Any] = {}
    started = time.monotonic()
    while time.monotonic() - started < 120:
        state = _show("ActiveState", "SubState")
        if state.get("ActiveState") in ("active", "failed"):
            break
        time.sleep(0.5)
    r["ready_after_s"] = round(time.monotonic() - started, 1)
    first = _show(
        "ActiveState", "SubState", "MainPID", "WatchdogUSec", "WatchdogTimestampMonotonic", "StatusText"
    )
    r["first"] = first
    r["wants"] = _show("Wants").get("Wants", "").split()
    wait = _sh(
        "systemctl", "show", "systemd-time-wait-sync.service", "-p", "TimeoutStartUSec,ConditionResult"
    )
    r["clock_wait"] = dict(line.split("=", 1) for line in wait.splitlines() if "=" in line)
    pid = first.get("MainPID", "0")
    r["tmp_mount"] = _mount(pid, "/tmp")
    r["root_mount"] = _mount(pid, "/")
    # The sandbox as the kernel sees the process: seccomp filter, no new privileges, no capabilities.
    try:
        status = dict(
            line.split(":\t", 1)
            for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
            if ":\t" in line
        )
        r["proc_status"] = {
            k: status.get(k, "").strip() for k in ("Seccomp", "NoNewPrivs", "CapEff", "CapBnd")
        }
    except OSError as e:
        r["proc_status"] = {"error": str(e)}
    try:
        r["tmp_files"] = sorted(p.name for p in pathlib.Path(f"/proc/{pid}/root/tmp").iterdir())
    except OSError as e:
        r["tmp_files"] = [f"unreadable: {e}"]
    time.sleep(WATCH_S)
    later = _show("ActiveState", "SubState", "WatchdogTimestampMonotonic", "NRestarts", "StatusText")
    r["later"] = later
    try:
        with urllib.request.urlopen("http://127.0.0.1:9464/healthz", timeout=5) as resp:
            r["healthz"] = [resp.status, resp.read().decode("utf-8", "replace")[:200]]
    except Exception as e:  # an HTTP error status is a finding, not a crash of the probe
        r["healthz"] = [getattr(e, "code", 0), str(e)[:200]]
    r["runtime_dir"] = (
        sorted(p.name for p in pathlib.Path(RUNTIME).iterdir()) if pathlib.Path(RUNTIME).is_dir() else None
    )
    t = time.monotonic()
    subprocess.run(["systemctl", "stop", UNIT], timeout=60)
    r["stop_s"] = round(time.monotonic() - t, 2)
    r["stopped"] = _show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    journal = _sh("journalctl", "-u", UNIT, "-o", "cat", "--no-pager").splitlines()
    events: list[str] = []
    other: list[str] = []
    for line in journal:
        try:
            obj = json.loads(line)
            events.append(str(obj.get("event", obj.get("msg", "?"))))
        except ValueError:
            other.append(line)
    r["journal_json_lines"] = len(events)
    r["journal_events"] = sorted(set(events))
    r["journal_scans"] = sum(1 for e in events if e == "result")
    r["journal_other"] = other[-40:]
    # What systemd itself said of the unit's sandbox (inside a container some parts cannot work).
    said = _sh("journalctl", "-b", "_PID=1", "-o", "cat", "--no-pager").splitlines()
    r["systemd_said"] = [
        line
        for line in said
        if "palmd" in line and any(w in line.lower() for w in ("bpf", "not supported", "ignoring", "failed"))
    ][-20:]
    # Whatever the service user owns that changed since boot: only its runtime directory's.
    stamp = "/ci-out/stamp"
    found = _sh("find", "/", "-xdev", "-user", "palm", "-newer", stamp, "-not", "-type", "d")
    r["palm_wrote"] = sorted(found.split())
    report.write_text(json.dumps(r, indent=2, sort_keys=True))


def _options(mount: str) -> list[str]:
    """The per-mount options of a _mount() line ("fstype options super-options")."""
    parts = mount.split()
    return parts[1].split(",") if len(parts) > 1 else []


def check(report: pathlib.Path) -> int:
    r = json.loads(report.read_text())
    print(json.dumps(r, indent=2, sort_keys=True))
    first, later, stopped = r["first"], r["later"], r["stopped"]
    checks = [
        (
            "READY=1: the unit became active (running)",
            first.get("ActiveState") == "active" and first.get("SubState") == "running",
        ),
        ("the watchdog is armed (WatchdogUSec 15s)", first.get("WatchdogUSec") == "15s"),
        (
            "watchdog pings arrived while serving",
            int(later.get("WatchdogTimestampMonotonic", "0") or 0)
            > int(first.get("WatchdogTimestampMonotonic", "0") or 0)
            > 0,
        ),
        (
            "still running after the watch, never restarted",
            later.get("ActiveState") == "active" and later.get("NRestarts") == "0",
        ),
        ("/healthz answered 200", r["healthz"][0] == 200),
        (
            "it wants the clock's wait, bounded at 90 s by the drop-in (a container skips the wait)",
            "systemd-time-wait-sync.service" in r["wants"]
            and r["clock_wait"].get("TimeoutStartUSec") == "1min 30s",
        ),
        (
            "/tmp is a tmpfs of 8M, not the disk",
            r["tmp_mount"].startswith("tmpfs ") and "size=8192k" in r["tmp_mount"],
        ),
        (
            "lgpio imported for real under the sandbox (its FIFO in the runtime directory)",
            any(n.startswith(".lgd-nfy") for n in (r["runtime_dir"] or [])),
        ),
        ("scans logged as JSON lines in the journal", r["journal_json_lines"] > 0 and r["journal_scans"] > 0),
        (
            "a clean stop (SIGTERM answered, exit 0)",
            stopped.get("Result") == "success" and stopped.get("ExecMainStatus") == "0" and r["stop_s"] < 15,
        ),
        ("the root is read-only to it (ProtectSystem=strict)", "ro" in _options(r["root_mount"])),
        (
            "seccomp filter on, no new privileges, no capabilities",
            r["proc_status"].get("Seccomp") == "2"
            and r["proc_status"].get("NoNewPrivs") == "1"
            and set(r["proc_status"].get("CapEff", "x")) == {"0"},
        ),
        (
            "no file on the root file system written by the service outside its runtime directory",
            all(p.startswith(RUNTIME + "/") for p in r["palm_wrote"]),
        ),
    ]
    failed = 0
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
        failed += not ok
    print(f"unit under systemd: {failed or 'none'} of the {len(checks)} checks failed")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--check":
        return check(pathlib.Path(argv[1]))
    if len(argv) == 1:
        probe(pathlib.Path(argv[0]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
