"""The daemon's parts: sd_notify, the log filter, the status server, process hardening, shutdown."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from device.config import defaults_for_simulation
from device.daemon import logs
from device.daemon.loop import Scan, Summary
from device.daemon.notify import Notifier
from device.daemon.process import SwapError, harden, swap_devices
from device.daemon.service import Service
from device.daemon.simulate import Options, run_simulated
from device.daemon.status import Metrics, StatusServer
from device.hardware.camera import Frame
from device.sim.scanner import SimulatedScanner


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(2)
    yield path, s
    s.close()


def test_notifier_sends_ready_status_and_watchdog(notify_socket) -> None:
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000"})
    assert n.enabled and n.watchdog_interval_s == 2.0
    n.ready("serving shoppers")
    assert sock.recv(1024).decode().split("\n") == ["READY=1", "STATUS=serving shoppers"]
    n.watchdog()
    assert sock.recv(1024) == b"WATCHDOG=1"


def test_notifier_never_blocks_on_a_supervisor_that_does_not_read(notify_socket, tmp_path: Path) -> None:
    # A unix datagram queue holds a few messages (net.unix.max_dgram_qlen); the test run
    # that hung sent watchdog pings to a socket nobody read.
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": str(path)})
    done = threading.Event()

    def flood() -> None:
        for _ in range(2000):
            n.watchdog()
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(10), "a full notify socket blocked the daemon"
    assert n.dropped > 0
    assert sock.recv(1024) == b"WATCHDOG=1"  # what fitted was delivered
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "no-such-socket")})
    gone.ready("x")  # no supervisor there: counted, not raised
    assert gone.dropped == 1


def test_notifier_is_silent_outside_systemd_and_for_another_pid() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval_s is None
    n.ready("x")  # nothing to send to: no error
    other = Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval_s is None


def test_log_filter_withholds_bytes_arrays_and_long_text() -> None:
    out = io.StringIO()
    handler = logs.setup(out)
    try:
        log = logging.getLogger("device.test")
        pixels = np.full((4, 4), 201, np.uint8)
        secret = b"\x8a" * 32
        log.info("frame %s key %r", pixels, secret, extra={"buffer": bytearray(b"abc"), "img": pixels})
        try:
            raise ValueError(b"\x01\x02 raw bytes")
        except ValueError:
            log.exception("failed")
        log.warning("x" * 5000)
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    first = lines[0]
    assert "withheld" in first["msg"] and "201" not in first["msg"] and "\\x8a" not in first["msg"]
    assert first["buffer"] == "<bytearray: 3 bytes withheld>"
    assert first["img"] == "<array 4x4 uint8 withheld>"
    assert lines[1]["error"].startswith("ValueError") and "Traceback" not in out.getvalue()
    assert len(lines[2]["msg"]) < 600


def test_metrics_parse_as_prometheus_text_and_health_follows_faults() -> None:
    m = Metrics()
    m.scan("accepted", [])
    m.scan("not_accepted", ["relief_not_skin"])
    m.upload("accepted", 0.03)
    m.upload("accepted", 0.7)
    m.set(outbox_depth=2, camera_restarts=1)
    families = {f.name: f for f in text_string_to_metric_families(m.exposition())}
    scans = {s.labels["outcome"]: s.value for s in families["palm_scans"].samples}
    assert scans == {"accepted": 1.0, "not_accepted": 1.0}
    latency = {s.name: s for s in families["palm_upload_latency_seconds"].samples}
    assert latency["palm_upload_latency_seconds_count"].value == 2
    buckets = {
        s.labels["le"]: s.value
        for s in families["palm_upload_latency_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.05"] == 1 and buckets["1"] == 2 and buckets["+Inf"] == 2
    assert families["palm_outbox_depth"].samples[0].value == 2
    # Before the camera's first frame the scanner is not serving: 503, and palm_up 0.
    assert m.health() == (503, {"status": "starting", "state": "starting"})
    assert families["palm_up"].samples[0].value == 0
    m.set(state="serving")
    assert m.health()[0] == 200
    m.set(fault="camera: gone")
    code, body = m.health()
    assert code == 503 and body["fault"] == "camera: gone"


def test_status_server_listens_on_loopback_only() -> None:
    m = Metrics()
    m.set(state="serving")
    server = StatusServer(m, 0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert requests.get(base + "/healthz", timeout=5).json()["status"] == "ok"
        r = requests.get(base + "/metrics", timeout=5)
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "palm_camera_restarts_total 0" in r.text
        assert requests.get(base + "/", timeout=5).status_code == 404
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.stop()


def test_swap_on_is_refused_unless_allowed(tmp_path: Path) -> None:
    swaps = tmp_path / "swaps"
    swaps.write_text(
        "Filename\tType\tSize\tUsed\tPriority\n/var/swap                               file\t102396\t0\t-2\n"
    )
    assert swap_devices(swaps) == ["/var/swap"]
    with pytest.raises(SwapError, match=r"swap is on \(/var/swap\).*allow_swap = true"):
        harden(allow_swap=False, lock=False, proc_swaps=swaps)


def test_hardened_process_is_not_dumpable_and_has_no_core_limit() -> None:
    code = (
        "import resource; from device.daemon.process import harden, dumpable\n"
        "assert dumpable()\n"
        "h = harden(allow_swap=True)\n"
        "print(dumpable(), resource.getrlimit(resource.RLIMIT_CORE), h.memory_locked or h.lock_error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    dumpable, limit, locked = out.stdout.split(" ", 2)
    assert dumpable == "False" and limit.startswith("(0,")
    assert locked.strip()  # locked (True), or the reason it could not be


def test_stop_darkens_the_ring_wipes_frames_and_delivers_what_is_sealed() -> None:
    held: list[Frame] = []
    seen: dict[str, object] = {}

    def before(service: Service, scanner: SimulatedScanner, clock) -> None:
        seen["scanner"] = scanner
        seen["service"] = service
        take = scanner.camera.capture

        def capture(**kw):
            f = take(**kw)
            held.append(f)
            return f

        scanner.camera.capture = capture  # type: ignore[method-assign]
        # Stop in the middle of serving: 8 s of scene time in, whatever is going on.
        clock.call_later(8.0, lambda: service.request_stop("test"))

    summary = run_simulated(
        defaults_for_simulation(),
        Options(scans=50, seed=3, quiet=True, signals=False, before_serving=before),
        out=io.StringIO(),
    )
    scanner = seen["scanner"]
    service = seen["service"]
    assert isinstance(scanner, SimulatedScanner) and isinstance(service, Service)
    assert service.stopped_by == "test" and 0 < summary.count < 50
    assert all(level == 0 for level in scanner.ring.levels)
    assert held and all(not f.pixels.any() for f in held)
    assert len(service.parts.uplink.outbox) == 0
    assert service.metrics.state == "stopped"


def test_cloud_down_still_answers_and_keeps_count_of_every_sealed_capture(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from device.config import load_config
    from device.protocol.keys import write_private_key

    key = tmp_path / "device-key.pem"
    write_private_key(key, Ed25519PrivateKey.generate())
    text = (Path(__file__).resolve().parents[1] / "config.example.toml").read_text()
    text = text.replace('key_file = "/var/lib/palm-scanner/device-key.pem"', f'key_file = "{key}"')
    (tmp_path / "config.toml").write_text(text)
    config = load_config(tmp_path / "config.toml")
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    out = io.StringIO()
    summary = run_simulated(
        config,
        Options(scans=4, seed=3, as_json=True, endpoint=f"http://127.0.0.1:{dead}", signals=False),
        out=out,
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    result = lines[-1]["summary"]
    sealed = [e for e in lines[:-1] if e.get("event") == "upload_failed"]
    assert summary.count == 4 and sealed  # shoppers were answered; captures were sealed
    assert not any(e.get("event") == "uploaded" for e in lines[:-1])
    # Nobody is told "accepted" by a cloud that never answered (the checks may still refuse a palm:
    # the simulated shopper moves on the wall clock, so a loaded machine sees other frames).
    assert set(result["outcomes"]["bona_fide"]) <= {"try_again", "fault", "not_accepted"}
    # Nothing accepted is lost silently: each sealed capture is either waiting or counted as dropped.
    dropped = sum(result["outbox"]["dropped"].values())
    assert result["outbox"]["depth"] + dropped == len(sealed)


def test_the_summary_counts_every_scan_and_keeps_only_recent_timings() -> None:
    summary = Summary()
    n = Summary.TIMING_KEPT + 500
    for i in range(n):
        attack = i % 4 == 0
        summary.add(
            Scan(
                "not_accepted" if attack else "accepted",
                [],
                {"guiding": 1.0, "capturing": float(i)},
                end_to_end_ms=float(i),
                kind="print_flat" if attack else "bona_fide",
            )
        )
    result = summary.as_json()
    attacks = (n + 3) // 4
    assert result["scans"] == n
    assert result["outcomes"] == {
        "bona_fide": {"accepted": n - attacks},
        "print_flat": {"not_accepted": attacks},
    }
    # A daemon serving for months holds a bounded window of timings: the most recent ones.
    assert all(len(v) == Summary.TIMING_KEPT for v in summary.timings.values())
    assert result["timing_ms"]["end_to_end"]["median"] == statistics.median(range(500, n))
    assert list(result["timing_ms"]) == ["guiding", "capturing", "end_to_end"]


def test_idle_connections_cannot_hold_the_status_server() -> None:
    """The review's case: 1,000 idle connections held 1,000 threads and 91 MB for ever. Now (300
    idle ones here) at
    most MAX_CONNECTIONS are served at once, the rest closed at once, and each is shut after its
    deadline: a scraper gets its answer as soon as the idle ones are gone."""
    import socket
    import time

    from device.daemon import status

    m = Metrics()
    m.set(state="serving")
    server = StatusServer(m, 0).start()
    idle = []
    try:
        threads_before = threading.active_count()
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", server.port)))
        # served: MAX_CONNECTIONS at a time, a new few as each deadline frees a slot; the rest closed
        enough = 300 - 4 * status.MAX_CONNECTIONS
        for _ in range(100):  # the server takes them off its backlog
            if server._server.refused >= enough:
                break
            time.sleep(0.1)
            assert threading.active_count() - threads_before <= 2 * status.MAX_CONNECTIONS + 1
        assert server._server.refused >= enough
        # the ones being served are shut at their deadline; then the scrape gets through
        ok = None
        for _ in range(20):
            try:
                ok = requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2)
                break
            except requests.exceptions.RequestException:
                time.sleep(0.5)
        assert ok is not None and ok.status_code == 200
        for c in idle:
            c.settimeout(10)
        served = [c for c in idle if c.recv(1) == b""]  # every idle one was closed by the server
        assert len(served) == len(idle)
    finally:
        for c in idle:
            c.close()
        server.stop()
