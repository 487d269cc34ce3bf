#!/usr/bin/env python3
"""Benchmark: sealing a capture of 4 frames of 320 x 320 with both suites, against baselines in
the same run.

    python scripts/bench_seal.py [--runs N]

Prints the median and 95th percentile of each step (archive with its PNGs, signature, HPKE alone
on a plaintext of the same size, whole seal, and the ingest's open) for X25519 (the baseline) and
X-Wing (ML-KEM-768 + X25519, protocol 2's default) side by side, and the ratios: what the
protocol's framing costs beyond encryption, and what post-quantum costs beyond X25519. Frames are
synthetic textured ramps, in memory; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.protocol import SUITE_X25519, SUITE_XWING
from device.protocol.archive import CaptureFrame, build_archive
from device.protocol.keys import has_xwing, new_recipient_key, recipient_public
from device.protocol.seal import ENC_LEN, Sealer, hpke_suite, info_for, open_sealed


def palm_like(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:320, 0:320]
    base = 110 + 30 * np.sin(x / 40.0) * np.cos(y / 55.0) + rng.normal(0, 2.0, (320, 320))
    return np.clip(base, 0, 255).astype(np.uint8)


def frames() -> list[CaptureFrame]:
    return [
        CaptureFrame(
            role=r,
            pixels=palm_like(i),
            roi=(160, 80, 320, 320),
            exposure_us=3000,
            gain=2.0,
            leds=r,
            timestamp_ns=i,
        )
        for i, r in enumerate(["flood", "ambient", "sector-0", "sector-1"])
    ]


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name: str, ms: list[float]) -> None:
    p95 = statistics.quantiles(ms, n=20)[-1]
    print(f"{name:26s} median {statistics.median(ms):7.3f} ms   p95 {p95:7.3f} ms")


def bench_suite(suite: str, runs: int) -> dict[str, list[float]]:
    private = new_recipient_key(suite)[1]
    recipient = recipient_public(private.public_raw)
    sealer = Sealer(
        device_id="bench", device_key=Ed25519PrivateKey.generate(), recipient=recipient, firmware="bench"
    )
    checks = {"quality": {"score": 0.9}, "liveness": {"score": 0.99}}
    c = sealer.seal(frames(), checks=checks, calibration=None)  # warm up
    size = len(build_archive(frames()))
    info = info_for(b'{"v":2}', 2)
    batches = [frames() for _ in range(runs)]  # the sealer wipes what it is given
    it = iter(batches)
    return {
        "HPKE alone": timed(lambda: hpke_suite(suite).encrypt(bytes(size), recipient.key, info=info), runs),
        "whole seal": timed(lambda: sealer.seal(next(it), checks=checks, calibration=None), runs),
        "open (the ingest)": timed(
            lambda: open_sealed(c.envelope, c.sealed, private, version=2, suite=suite), runs
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    fixed = frames()
    size = len(build_archive(fixed))
    import cv2

    png = timed(
        lambda: [cv2.imencode(".png", f.pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1]) for f in fixed], args.runs
    )
    tar = timed(lambda: build_archive(fixed), args.runs)
    key = Ed25519PrivateKey.generate()
    sign = timed(lambda: key.sign(b"m" * 84), args.runs)
    suites = [SUITE_X25519] + ([SUITE_XWING] if has_xwing() else [])
    results = {suite: bench_suite(suite, args.runs) for suite in suites}
    print(f"sealing 4 frames of 320 x 320 ({4 * 320 * 320} pixels, archive {size} bytes), {args.runs} runs")
    row("archive (stored PNGs)", tar)
    row("Ed25519 sign", sign)
    for suite, r in results.items():
        print(f"{suite} (enc {ENC_LEN[suite]} bytes):")
        for name, ms in r.items():
            row(f"  {name}", ms)
        ratio = statistics.median(r["whole seal"]) / statistics.median(r["HPKE alone"])
        print(f"  whole seal / HPKE alone: {ratio:.1f}x")
    if SUITE_XWING in results:
        x, w = results[SUITE_X25519], results[SUITE_XWING]
        for name in ("HPKE alone", "whole seal", "open (the ingest)"):
            extra = statistics.median(w[name]) - statistics.median(x[name])
            ratio = statistics.median(w[name]) / statistics.median(x[name])
            print(f"X-Wing / X25519, {name}: {ratio:.2f}x ({extra:+.3f} ms)")
        more = ENC_LEN[SUITE_XWING] - ENC_LEN[SUITE_X25519]
        print(f"X-Wing adds {more} bytes to enc, and 1184 to the config's key")
    else:
        print("X-Wing: this cryptography has no MLKEM768_X25519 (48 or newer has)")
    row("not used: OpenCV PNG, zlib 1", png)
    print("(compressed PNG would halve the bytes but cost about 5 ms per frame here, 30+ on a Pi 4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
