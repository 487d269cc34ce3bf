"""Resident memory of the daemon over many scans, on the simulated scanner.

    python scripts/bench_memory.py [--scans 1000] [--seed 5]

Runs ``palm run --simulate``'s service in this process (quietly) and reads the
resident set size (/proc/self/statm) after every scan. Prints RSS at the first
scan, at scan 100 and at the end, the growth since scan 100 and the peak: the
baseline for "grows less than 5 MB after warm-up, stays under 200 MB".
A figure, not a pass/fail: compare runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from device.config import defaults_for_simulation
from device.daemon.loop import Scan
from device.daemon.simulate import Options, run_simulated

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    samples: list[float] = []
    started = time.monotonic()
    peaks: list[float] = []  # the process's peak so far, after each scan

    def on_scan(scan: Scan) -> None:
        samples.append(rss_mb())
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        n = len(samples)
        if n % 100 == 0:
            print(
                f"  scan {n:5d}: RSS {samples[-1]:7.1f} MB  ({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
            )

    summary = run_simulated(
        defaults_for_simulation(),
        Options(scans=args.scans, seed=args.seed, as_json=True, on_scan=on_scan, quiet=True),
        out=open(os.devnull, "w"),  # noqa: SIM115 - the summary is not wanted here
    )
    if not samples:
        print("no scans were made", file=sys.stderr)
        return 1
    at100 = samples[min(99, len(samples) - 1)]
    result = {
        "scans": summary.count,
        "rss_first_scan_mb": round(samples[0], 1),
        "rss_scan_100_mb": round(at100, 1),
        "rss_last_mb": round(samples[-1], 1),
        "growth_since_scan_100_mb": round(samples[-1] - at100, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # start-up (calibrating the simulated scanner, the first scenes) against serving
        "peak_rss_by_first_scan_mb": round(peaks[0], 1),
        "peak_rss_after_scan_100_mb": round(max(peaks[99:], default=peaks[-1]), 1),
        "rss_max_sample_mb": round(max(samples), 1),
        # where the peak rose while serving (scan number, new peak): what to look at if it is high
        "peak_rises_mb": [
            (i + 1, round(p, 1)) for i, p in enumerate(peaks) if i > 0 and p - peaks[i - 1] >= 0.5
        ],
        "seconds": round(time.monotonic() - started),
        # what the scans were, so a memory figure is never read without the run behind it
        "outcomes": summary.as_json()["outcomes"],
        "end_to_end_ms": summary.as_json()["timing_ms"]["end_to_end"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
