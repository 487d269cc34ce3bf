"""palm run --simulate: the product on the simulated scanner, from a hand to an answer."""

from __future__ import annotations

import json
import subprocess
import sys


def test_run_simulate_serves_shoppers_and_summarises() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "device", "run", "--simulate", "--scans", "6", "--seed", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = lines[-1]["summary"]
    assert summary["scans"] == 6
    outcomes = summary["outcomes"]
    # A shopper's palm is never refused as an attack; it is accepted or asked to try again.
    assert outcomes["bona_fide"].get("accepted", 0) >= 1
    assert set(outcomes["bona_fide"]) <= {"accepted", "try_again"}
    for kind, counts in outcomes.items():
        if kind != "bona_fide":
            assert "accepted" not in counts, (kind, counts)
    assert {"median", "p95"} <= set(summary["timing_ms"]["end_to_end"])
    events = [line["event"] for line in lines[:-1]]
    assert events.count("hand_seen") >= 6 and events.count("uploaded") == outcomes["bona_fide"]["accepted"]
    assert all(line["t_s"] >= 0 for line in lines[:-1])
    assert "Traceback" not in proc.stderr


def test_run_on_real_hardware_says_it_is_not_there_yet() -> None:
    proc = subprocess.run([sys.executable, "-m", "device", "run"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 69 and "--simulate" in proc.stderr
