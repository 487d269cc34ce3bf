#!/usr/bin/env python3
"""Fit the liveness combiner on development seeds and write device/vision/liveness_model.json.

    python scripts/train_liveness.py [--rigs 48] [--per-rig 6] [--jobs 2] [--cache cues.json]

Renders bona fide and attack presentations on simulated rigs drawn across the training world
(device.sim.world.TRAIN: ring, lens, card, sectors, LED beam and power, focus, the ISP's
softening and denoise, sensor noise; each palm with its own skin, veins, scatter and distance),
each rig judged with only its own calibration frames, at the development seeds
(device.evaluation.DEV_SEEDS, never used for reporting). Takes the liveness cues of each kept
burst and fits the combiner (device.vision.fitting). The reported figures come from `palm eval`
and scripts/liveness_world.py on other seeds and rigs outside the training world.

The cache (--cache) keeps every presentation's kind, seed, rig, facts and cues: the
leave-one-factor-out table (scripts/liveness_world.py lofo) is computed from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from device.config import load_config
from device.evaluation import BONA_FIDE, DEV_SEEDS, collect, sim_flat_field
from device.sim.scene import ATTACKS
from device.sim.world import TRAIN, draw_rigs
from device.vision.fitting import fit_model

ROOT = Path(__file__).resolve().parent.parent


def collect_rows(rigs: list, seeds_from: int, per_rig: int, jobs: int) -> list[dict]:  # type: ignore[type-arg]
    """Every class at ``per_rig`` seeds on each rig: one row per presentation."""
    config = load_config(ROOT / "config.example.toml")
    rows = []
    for i, rig in enumerate(rigs):
        c = rig.apply(config)
        seeds = range(seeds_from + i * per_rig, seeds_from + (i + 1) * per_rig)
        found = collect(
            c, (BONA_FIDE, *ATTACKS), seeds, sim_flat_field(c), None, jobs=jobs, reach=rig.reach,
            progress=lambda j, n, i=i: print(f"\rrig {i + 1}/{len(rigs)}: {j}/{n}", end="", file=sys.stderr),
        )  # fmt: skip
        for p in found:
            rows.append(
                {
                    "kind": p.kind,
                    "seed": p.seed,
                    "rig": i,
                    "rig_factors": rig.as_json(),
                    "facts": p.facts,
                    "quality_ok": p.verdict.quality.ok,
                    "quality_reasons": p.verdict.quality.reasons,
                    "cues": p.cues,
                }
            )
    print(file=sys.stderr)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rigs", type=int, default=48, help="simulated rigs drawn across the training world")
    ap.add_argument("--per-rig", type=int, default=6, help="presentations per class on each rig")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="read rows from / write rows to this JSON file")
    ap.add_argument("--l2", type=float, default=0.1, help="ridge penalty on the combiner's weights")
    ap.add_argument("--out", type=Path, default=ROOT / "device" / "vision" / "liveness_model.json")
    args = ap.parse_args()
    if args.rigs * args.per_rig > len(DEV_SEEDS):
        raise SystemExit(f"--rigs x --per-rig must stay within the {len(DEV_SEEDS)} development seeds")
    if args.cache and args.cache.exists():
        rows = json.loads(args.cache.read_text())
    else:
        rows = collect_rows(draw_rigs(args.rigs), DEV_SEEDS.start, args.per_rig, args.jobs)
        if args.cache:
            args.cache.write_text(json.dumps(rows))
    kept = [(r["kind"], r["cues"]) for r in rows if r["cues"] is not None]
    counts = {k: sum(1 for kk, _ in kept if kk == k) for k in sorted({k for k, _ in kept})}
    n_rigs = len({r["rig"] for r in rows})
    ranges = "; ".join(f"{k} {lo:g}..{hi:g}" for k, (lo, hi) in TRAIN.items())
    model, worst = fit_model(
        kept,
        l2=args.l2,
        trained_on=f"simulated development seeds from {DEV_SEEDS.start}, "
        + ", ".join(f"{k} {n}" for k, n in counts.items())
        + f"; {n_rigs} rigs drawn over {ranges}",
    )
    args.out.write_text(json.dumps(model.as_json(), indent=2) + "\n")
    print(f"wrote {args.out}: worst development error {worst:.4f} at threshold {model.threshold:.4f}")
    xs = {k: [model.standardised(c) for kk, c in kept if kk == k] for k in counts}
    for k, rows_k in xs.items():
        z = np.array([model.score_standardised(x) for x in rows_k])
        print(f"  {k:18s} n={counts[k]:4d}  score p5 {np.percentile(z, 5):.3f}  p50 {np.median(z):.3f}")
    print("  attack sides (below, above):", {k: v for k, v in model.attack_side.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
