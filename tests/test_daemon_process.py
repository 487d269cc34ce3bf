"""palm run --simulate as a process: nothing written to disk, signals, status, faults, hardening.

The strace run is the proof behind "no pixel at rest": every open for writing, create,
rename, link or truncate the process tree makes is checked against a short allowlist,
and the temporary directories must stay empty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

PALM = [sys.executable, "-m", "device"]
ROOT = Path(__file__).resolve().parents[1]
#: paths the daemon may open for writing: the bit bucket, and its own terminal
WRITE_ALLOWED = re.compile(r"^/dev/(null|tty|pts/\d+)$")
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
TRACED = (
    "open,openat,openat2,creat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,"
    "truncate,ftruncate,mkdir,mkdirat,mknod,mknodat,memfd_create"
)
#: strace stopping only on the traced calls (seccomp-bpf), so the run keeps its speed
STRACE = ["strace", "--seccomp-bpf", "-f", "-qq", "-y", "-e", f"trace={TRACED}"]


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed: .ci/run installs it (apt-get install strace)")
    base = tmp_path_factory.mktemp("strace")
    tmp, cwd = base / "tmp", base / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    log = base / "trace.log"
    shm_before = set(os.listdir("/dev/shm"))
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [*STRACE, "-o", str(log), *PALM, "run", "--simulate", "--scans", "20", "--seed", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=cwd,
        env=env,
    )
    return {
        "proc": proc,
        "log": log.read_text().splitlines(),
        "tmp": sorted(tmp.iterdir()),
        "cwd": sorted(cwd.iterdir()),
        "shm_new": set(os.listdir("/dev/shm")) - shm_before,
    }


def _written_paths(lines: list[str]) -> list[str]:
    bad = []
    for line in lines:
        m = re.match(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)", line)
        if not m:
            continue
        call, args, result = m.groups()
        if int(result) < 0:
            continue  # refused by the kernel: nothing happened
        if call in ("open", "openat", "openat2"):
            if not any(flag in args for flag in WRITE_FLAGS):
                continue
            path = re.search(r'"([^"]*)"', args)
            if path and WRITE_ALLOWED.match(path.group(1)):
                continue
        elif call == "ftruncate":
            target = re.match(r"\d+<([^>]*)>", args)
            if target and target.group(1).startswith(("socket:", "pipe:", "anon_inode:")):
                continue
        bad.append(line)
    return bad


def test_simulated_run_writes_nothing_to_disk(traced_run: dict[str, object]) -> None:
    proc = traced_run["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = traced_run["log"]
    assert isinstance(lines, list) and any("openat(" in line for line in lines)  # strace saw the run
    assert _written_paths(lines) == []
    assert traced_run["tmp"] == [] and traced_run["cwd"] == [] and traced_run["shm_new"] == set()


def test_the_write_check_would_catch_a_frame_on_disk() -> None:
    # The same parser on lines strace prints for writes the daemon must never make.
    caught = _written_paths(
        [
            '12 openat(AT_FDCWD</x>, "/tmp/frame.png", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3</tmp/frame.png>',
            '12 rename("/var/lib/a", "/var/lib/b") = 0',
            "12 ftruncate(5</var/lib/palm/x.npy>, 4096) = 0",
            '12 openat(AT_FDCWD</x>, "/dev/null", O_RDWR|O_CLOEXEC) = 3</dev/null>',
            '12 openat(AT_FDCWD</x>, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 3</etc/passwd>',
        ]
    )
    assert len(caught) == 3


def test_the_write_check_catches_a_real_write_under_strace(tmp_path: Path) -> None:
    log = tmp_path / "trace.log"
    code = "import numpy; numpy.save('frame.npy', numpy.zeros(4))"
    subprocess.run(
        [*STRACE, "-o", str(log), sys.executable, "-c", code],
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    caught = _written_paths(log.read_text().splitlines())
    assert any("frame.npy" in line for line in caught), caught


def test_simulated_run_answers_shoppers_and_delivers_what_it_accepts(traced_run: dict[str, object]) -> None:
    proc = traced_run["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = lines[-1]["summary"]
    assert summary["scans"] == 20
    outcomes = summary["outcomes"]
    assert outcomes["bona_fide"].get("accepted", 0) >= 5
    accepted = sum(counts.get("accepted", 0) for counts in outcomes.values())
    uploaded = sum(1 for line in lines[:-1] if line.get("event") == "uploaded")
    assert uploaded == accepted  # every accepted capture reached the cloud
    assert {"median", "p95"} <= set(summary["timing_ms"]["end_to_end"])
    assert summary["outbox"] == {"depth": 0, "dropped": {}}
    # Every kind answered was presented, at least as often as it was answered.
    for kind, counts in outcomes.items():
        assert summary["presented"][kind] >= sum(counts.values()), (kind, summary["presented"])


def test_simulated_run_rejects_every_attack_and_no_shopper(traced_run: dict[str, object]) -> None:
    proc = traced_run["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    outcomes = json.loads(proc.stdout.splitlines()[-1])["summary"]["outcomes"]
    assert set(outcomes["bona_fide"]) <= {"accepted", "try_again"}
    for kind, counts in outcomes.items():
        if kind != "bona_fide":
            assert "accepted" not in counts, (kind, counts)


class Daemon:
    """palm run --simulate in the background, its stderr (JSON log lines) collected as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*PALM, "run", "--simulate", "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
        self.logs: list[dict[str, object]] = []
        self.stdout: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stderr, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream, is_log: bool) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            if is_log:
                try:
                    self.logs.append(json.loads(line))
                except json.JSONDecodeError:
                    self.logs.append({"msg": line.rstrip()})
            else:
                self.stdout.append(line)

    def wait_log(self, pattern: str, timeout: float = 300) -> dict[str, object]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for entry in self.logs:
                if re.search(pattern, str(entry.get("msg", ""))):
                    return entry
            if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}: {self.logs}")

    def finish(self, timeout: float = 120, *, failed: bool = False) -> int:
        """Wait for the exit (killing it at once when the test already failed)."""
        try:
            code = self.proc.wait(timeout=1 if failed else timeout)
        except subprocess.TimeoutExpired:
            if not failed:
                raise
            code = -signal.SIGKILL
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for t in self._threads:
                t.join(timeout=10)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        return code


@pytest.fixture
def daemon_config(tmp_path: Path) -> Path:
    text = (ROOT / "config.example.toml").read_text()
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_status_signals_camera_fault_and_hardening(tmp_path: Path, daemon_config: Path) -> None:
    # systemd's side of sd_notify: a datagram socket the service reports to.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify_path = tmp_path / "notify.sock"
        notify.bind(str(notify_path))
        notify.settimeout(0.2)
        told: list[str] = []
        reading = threading.Event()
        reading.set()

        def read() -> None:  # as systemd does: read each notification as it comes
            while reading.is_set():
                try:
                    told.append(notify.recv(4096).decode())
                except TimeoutError:
                    continue

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            _status_signals_camera_fault_and_hardening(tmp_path, daemon_config, notify_path, told)
        finally:
            reading.clear()
            reader.join(timeout=5)


def _status_signals_camera_fault_and_hardening(
    tmp_path: Path, daemon_config: Path, notify_path: Path, told: list[str]
) -> None:
    args = ["--scans", "40", "--seed", "6", "--config", str(daemon_config), "--status-port", "0"]
    d = Daemon(
        [*args, "--camera-fault", "6:3"],
        cwd=tmp_path,
        env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"},
    )
    ok = False
    try:
        hardening = d.wait_log(r"^process: ")
        assert "not dumpable, core limit 0" in str(hardening["msg"])
        limits = Path(f"/proc/{d.proc.pid}/limits").read_text()
        assert re.search(r"Max core file size\s+0\s+0", limits), limits
        port = int(re.search(r"127\.0\.0\.1:(\d+)", str(d.wait_log(r"^status on"))).group(1))  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        d.wait_log(r"^ready")
        # The camera stops (simulated): a fault on /healthz, then it comes back by itself.
        d.wait_log(r"^camera fault")
        d.wait_log(r"^camera back")
        assert requests.get(base + "/healthz", timeout=5).json()["status"] == "ok"
        families = {
            f.name: f for f in text_string_to_metric_families(requests.get(base + "/metrics", timeout=5).text)
        }
        assert families["palm_camera_restarts"].samples[0].value >= 1
        # A bad config on SIGHUP is refused, and the running one kept.
        daemon_config.write_text(daemon_config.read_text().replace("idle_level = 0.15", "idle_level = 0.9"))
        d.proc.send_signal(signal.SIGHUP)
        refused = d.wait_log(r"^config refused")
        assert "idle_level" in str(refused["reason"])
        # A good one is taken, and says what changed.
        daemon_config.write_text(daemon_config.read_text().replace("idle_level = 0.9", "idle_level = 0.1"))
        d.proc.send_signal(signal.SIGHUP)
        reloaded = d.wait_log(r"^config reloaded")
        assert reloaded["applied"] == ["leds.idle_level"] and reloaded["after_restart"] == []
        d.proc.send_signal(signal.SIGTERM)
        ok = True
    finally:
        code = d.finish(failed=not ok)
    assert code == 0
    time.sleep(0.5)  # the last notifications on their way to the reader
    # Watchdog pings may come from the start; READY=1 before any other news, STOPPING=1 last.
    news = [m for m in told if m != "WATCHDOG=1"]
    assert news[0].startswith("READY=1") and "WATCHDOG=1" in told and told[-1] == "STOPPING=1"
    assert any(m.startswith("STATUS=fault: camera") for m in told)
    summary = json.loads(d.stdout[-1])["summary"]
    assert summary["stopped_by"] == "SIGTERM" and summary["camera_restarts"] >= 1
    assert not any("Traceback" in str(e.get("msg")) for e in d.logs)
    # and nothing else was written where it ran
    assert sorted(tmp_path.iterdir()) == sorted([daemon_config, notify_path])


def test_killed_daemon_leaves_no_core_file(tmp_path: Path) -> None:
    d = Daemon(["--scans", "5"], cwd=tmp_path)
    try:
        d.wait_log(r"^ready")
        d.proc.send_signal(signal.SIGSEGV)  # a crash: the kernel would write a core here
    finally:
        code = d.finish()
    assert code == -signal.SIGSEGV
    assert list(tmp_path.iterdir()) == []


def test_sigterm_ends_the_daemon_in_its_stop_time_while_a_cloud_drips_its_answer(tmp_path: Path) -> None:
    """The review's case: a cloud that sent its answer a byte every few seconds held `palm run` in
    one upload for over 600 s, deaf to SIGTERM, with /healthz saying ok. Now each attempt ends at its
    deadline, so SIGTERM sent while the cloud drips ends the daemon well inside the unit's
    TimeoutStopSec, and the capture it could not deliver is counted, not lost."""
    from tests.test_uplink import Dripper

    stop_s = float(re.search(r"TimeoutStopSec=(\d+)s", (ROOT / "systemd/palmd.service").read_text()).group(1))  # type: ignore[union-attr]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from device.protocol.keys import write_private_key

    key = tmp_path / "device-key.pem"
    write_private_key(key, Ed25519PrivateKey.generate())
    config = tmp_path / "config.toml"
    config.write_text(
        (ROOT / "config.example.toml").read_text().replace("/var/lib/palm-scanner/device-key.pem", str(key))
    )
    dripper = Dripper("headers")
    args = ["--scans", "30", "--seed", "3", "--config", str(config), "--endpoint", dripper.url]
    d = Daemon([*args, "--status-port", "0"], cwd=tmp_path)
    ok = False
    try:
        port = int(re.search(r"127\.0\.0\.1:(\d+)", str(d.wait_log(r"^status on"))).group(1))  # type: ignore[union-attr]
        d.wait_log(r"^ready")
        end = time.monotonic() + 300
        while not dripper.held_s and time.monotonic() < end:  # an upload met the dripping cloud
            health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            time.sleep(0.2)
        assert dripper.held_s, "no upload reached the cloud"
        assert health.status_code == 200  # an attempt within its deadline is not stuck
        d.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = d.finish(timeout=stop_s)
        took = time.monotonic() - sent
        ok = True
    finally:
        dripper.close()
        if not ok:
            d.finish(failed=True)
    assert code == 0 and took < stop_s, took
    summary = json.loads(d.stdout[-1])["summary"]
    assert summary["stopped_by"] == "SIGTERM"
    # the capture the cloud never took is counted, waiting or dropped, not lost
    assert summary["outbox"]["depth"] + sum(summary["outbox"]["dropped"].values()) >= 1
    assert not any("Traceback" in str(e.get("msg")) for e in d.logs)
    print(f"SIGTERM to exit while the cloud dripped: {took:.1f} s (TimeoutStopSec {stop_s:g} s)")
