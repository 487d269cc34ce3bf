#!/usr/bin/env python3
"""Compare the simulator's genuine flood frames with real 940 nm palm captures.

    python scripts/sim_realism.py [--real DIR] [--samples N]

Prints, per measure (see device/sim/realism.py), the real captures' min / median /
max beside the simulated frames' 10th percentile / median / 90th percentile.
Reads the real images in place; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from device.config import load_config
from device.sim.realism import measure, simulated_palms

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REAL = ROOT.parent / "shared" / "data" / "real-palms" / "casia-ms-940nm"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, default=DEFAULT_REAL, help="folder of real NIR palm images")
    ap.add_argument("--samples", type=int, default=40, help="simulated palms (default 40)")
    ap.add_argument("--seed", type=int, default=1000, help="first simulated seed")
    args = ap.parse_args()
    files = sorted(p for p in args.real.glob("*") if p.suffix.lower() in (".jpg", ".png", ".bmp"))
    if not files:
        print(f"no images in {args.real}", file=sys.stderr)
        return 1
    real = [m for m in (measure(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)) for f in files) if m]
    sim = simulated_palms(
        load_config(ROOT / "config.example.toml"), range(args.seed, args.seed + args.samples)
    )
    print(
        f"palm square measures: {len(real)} real ({args.real.name}), {len(sim)} simulated "
        f"(seeds {args.seed}..{args.seed + args.samples - 1})"
    )
    heads = ("real min", "median", "max", "| sim p10", "median", "p90", "in range")
    print(f"{'measure':14s} " + " ".join(f"{h:>9s}" for h in heads))
    for name in ("mean", "std", "vein_contrast", "sharpness", "fine_texture"):
        r = [getattr(m, name) for m in real]
        s = [getattr(m, name) for m in sim]
        inside = sum(min(r) <= x <= max(r) for x in s)
        print(
            f"{name:14s} {min(r):9.4f} {np.median(r):9.4f} {max(r):9.4f} | "
            f"{np.percentile(s, 10):9.4f} {np.median(s):9.4f} {np.percentile(s, 90):9.4f} "
            f"{inside:>4d}/{len(s)}"
        )
    print("(mean: each simulated frame is exposed so that its palm reads the real median, 100, as the")
    print(" scanner's metering exposes a palm; in range: simulated palms within the real min..max)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
