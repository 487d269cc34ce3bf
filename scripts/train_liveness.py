#!/usr/bin/env python3
"""Fit the liveness combiner on development seeds and write device/vision/liveness_model.json.

    python scripts/train_liveness.py [--samples 300] [--rigs 12] [--jobs 2] [--cache cues.json]

Renders bona fide and attack presentations on the simulated scanner at the
development seeds (device.evaluation.DEV_SEEDS, never used for reporting), takes
the liveness cues of each kept burst, fits a logistic regression on the cues and
their pairwise products (bona fide against every attack type, each type weighted
alike) and sets the threshold where the worst error on these seeds is smallest, in
the middle of any gap. Each cue's range on the bona fide presentations, widened by
liveness.SUPPORT_MARGIN, is kept with the model: a presentation outside it on any cue
is not live, whatever the combiner's extrapolation would say. The reported figures
come from `palm eval` on other seeds.

The presentations are spread over --rigs simulated rigs drawn at random within the
geometries the checks are meant for (issue #7): a ring of 22 to 45 mm (a nearer one is
called weak), a focal length of 380 px plus or minus 30 %, a grey card at 125 mm plus
or minus 20 %, 3 to 8 sectors. Each rig is judged with only its own calibration
frames, so the combiner learns cues that travel, not one rig's quirks. --rigs 0 fits
on the default rig alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from device.config import load_config
from device.evaluation import BONA_FIDE, DEV_SEEDS, collect, sim_flat_field, with_rig
from device.sim.scene import ATTACKS
from device.vision.liveness import FEATURES, SUPPORT_MARGIN, expand, transformed

ROOT = Path(__file__).resolve().parent.parent
#: ranges the training rigs are drawn from: ring radius mm, focal length px, card distance mm, sectors
RING_MM, FOCAL_PX, CARD_MM, SECTORS = (22.0, 45.0), (266.0, 494.0), (100.0, 150.0), (3, 8)


def training_rigs(n: int, seed: int = 7) -> list[tuple[float, float, float, int]]:
    """n rigs (ring mm, focal px, card mm, sectors) within the ranges above, a Latin hypercube:
    each range cut into n strata, each stratum drawn once, so that its ends are covered too."""
    rng = np.random.default_rng(seed)

    def spread(lo: float, hi: float) -> np.ndarray:
        return lo + (hi - lo) * (rng.permutation(n) + rng.uniform(size=n)) / n

    rings, focals, cards, sectors = (
        spread(*RING_MM),
        spread(*FOCAL_PX),
        spread(*CARD_MM),
        spread(SECTORS[0], SECTORS[1] + 1),
    )
    return [
        (round(float(r), 1), round(float(f)), round(float(c)), int(k))
        for r, f, c, k in zip(rings, focals, cards, sectors, strict=True)
    ]


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Weighted, L2-regularised logistic regression by Newton's method; returns [bias, weights...]."""
    a = np.hstack([np.ones((len(x), 1)), x])
    beta = np.zeros(a.shape[1])
    reg = np.full(a.shape[1], l2)
    reg[0] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(a @ beta, -30, 30)))
        grad = a.T @ (w * (p - y)) + reg * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=300, help="development presentations per class")
    ap.add_argument(
        "--rigs", type=int, default=12, help="simulated rigs to spread them over (0: the default rig)"
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="read cues from / write cues to this JSON file")
    ap.add_argument("--l2", type=float, default=0.1, help="ridge penalty on the combiner's weights")
    ap.add_argument("--out", type=Path, default=ROOT / "device" / "vision" / "liveness_model.json")
    args = ap.parse_args()
    config = load_config(ROOT / "config.example.toml")
    seeds = range(DEV_SEEDS.start, DEV_SEEDS.start + args.samples)
    rigs = training_rigs(args.rigs)
    if args.cache and args.cache.exists():
        rows = json.loads(args.cache.read_text())
    else:
        rows = []
        configs = [with_rig(config, ring_mm=r, focal_px=f, card_mm=c, sectors=n) for r, f, c, n in rigs]
        configs = configs or [config]
        # Each rig gets its own run of seeds: every presentation is a different palm or attack.
        for i, config_i in enumerate(configs):
            share = range(
                seeds.start + i * len(seeds) // len(configs),
                seeds.start + (i + 1) * len(seeds) // len(configs),
            )
            found = collect(
                config_i,
                (BONA_FIDE, *ATTACKS),
                share,
                sim_flat_field(config_i),
                None,
                jobs=args.jobs,
                progress=lambda j, n, i=i: print(
                    f"\rrig {i + 1}/{len(configs)}: {j}/{n} presentations", end="", file=sys.stderr
                ),
            )
            rows += [[p.kind, p.seed, p.cues] for p in found]
        print(file=sys.stderr)
        if args.cache:
            args.cache.write_text(json.dumps(rows))
    rows = [r for r in rows if r[2] is not None]
    kinds = [r[0] for r in rows]
    x = np.array([[transformed(r[2])[f] for f in FEATURES] for r in rows])
    y = np.array([1.0 if k == BONA_FIDE else 0.0 for k in kinds])
    counts = {k: kinds.count(k) for k in set(kinds)}
    n_attack_types = len(set(kinds) - {BONA_FIDE})
    w = np.array([0.5 / counts[k] if k == BONA_FIDE else 0.5 / (n_attack_types * counts[k]) for k in kinds])
    w *= len(w)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-12
    xs = (x - mean) / scale
    terms = [expand(dict(zip(FEATURES, row, strict=True))) for row in xs]
    names = list(terms[0])
    phi = np.array([[t[n] for n in names] for t in terms])
    beta = fit(phi, y, w, l2=args.l2)
    z = beta[0] + phi @ beta[1:]
    # The bona fide support: outside it on any cue, a presentation scores 0 whatever the combiner says.
    lo = xs[y == 1].min(axis=0) - SUPPORT_MARGIN
    hi = xs[y == 1].max(axis=0) + SUPPORT_MARGIN
    inside = ((xs >= lo) & (xs <= hi)).all(axis=1)
    z = np.where(inside, z, -30.0)
    # Threshold in logit space where the worst dev error is least; within ties, the middle.
    cands = np.sort(np.unique(np.concatenate([z, [z.min() - 1, z.max() + 1]])))
    best = None
    for t in (cands[:-1] + cands[1:]) / 2:
        bpcer = np.mean(z[y == 1] < t)
        apcer = max(np.mean(z[np.array(kinds) == k] >= t) for k in set(kinds) - {BONA_FIDE})
        worst = max(bpcer, apcer)
        if best is None or worst < best[0] - 1e-12:
            best = (worst, [t])
        elif abs(worst - best[0]) <= 1e-12:
            best[1].append(t)
    assert best is not None
    t_logit = float(np.median(best[1]))
    model = {
        "features": list(FEATURES),
        "weights": {n: float(b) for n, b in zip(names, beta[1:], strict=True)},
        "bias": float(beta[0]),
        "mean": {f: float(m) for f, m in zip(FEATURES, mean, strict=True)},
        "scale": {f: float(s) for f, s in zip(FEATURES, scale, strict=True)},
        "threshold": 1 / (1 + math.exp(-t_logit)),
        "support": {f: [float(lo[i]), float(hi[i])] for i, f in enumerate(FEATURES)},
        "trained_on": f"simulated development seeds {seeds.start}..{seeds.stop - 1}, "
        + ", ".join(f"{k} {counts[k]}" for k in sorted(counts))
        + (
            "; rigs (ring mm, focal px, card mm, sectors): "
            + ", ".join(f"{r:g}/{f:g}/{c:g}/{n}" for r, f, c, n in rigs)
            if rigs
            else "; the default rig"
        ),
    }
    args.out.write_text(json.dumps(model, indent=2) + "\n")
    print(f"wrote {args.out}: worst development error {best[0]:.4f} at threshold {model['threshold']:.4f}")
    for k in sorted(counts):
        zk = z[np.array(kinds) == k]
        out = int(np.sum(~inside[np.array(kinds) == k]))
        print(
            f"  {k:18s} n={counts[k]:4d}  logit p5 {np.percentile(zk, 5):7.2f}  p50 {np.median(zk):7.2f}  "
            f"p95 {np.percentile(zk, 95):7.2f}  outside the bona fide support {out}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
