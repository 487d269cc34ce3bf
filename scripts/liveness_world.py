#!/usr/bin/env python3
"""Does liveness travel? Two measurements of issue #14, printed as tables with counts and 95 %
Clopper-Pearson intervals.

    python scripts/liveness_world.py lofo --cache ROWS.json
    python scripts/liveness_world.py unseen [--per-class 60] [--fit-bursts 20] [--jobs 2] [--json OUT]

lofo: leave one factor out. From the rows scripts/train_liveness.py cached (every presentation's
rig, palm facts and cues), for each factor of the world: fit on the presentations whose factor
lies in the middle half of its range, judge those in the outer half (both tails: the model
extrapolates there). A factor the model leans on by fit, not by physics, shows here.

unseen: the rigs of device.sim.world.UNSEEN, each outside the training world in several factors.
Each is calibrated with its own grey-card frames, then judged twice on the same fresh
presentations (seeds apart from the development ones and from the fit's): by the shipped model,
and after `palm calibrate liveness`'s fit (device.vision.rigfit) on --fit-bursts live and as many
attack bursts of that rig.

What in the simulator could make these figures wrong: every rig, palm and attack here is the
simulator's own (device/sim); the attacks are its five kinds only, drawn from its own materials;
a real rig's LEDs are not points, its lens has distortion, and its ISP is the Pi's, not a
Gaussian. The figures say the cues travel across the simulator's factors; a real rig's bursts
(palm check --calibration) are the test that counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from device.config import load_config
from device.evaluation import BONA_FIDE, collect, sim_flat_field
from device.sim.scene import ATTACKS
from device.sim.world import TRAIN, UNSEEN, outside_train
from device.stats import Rate
from device.vision import liveness as L
from device.vision import rigfit
from device.vision.fitting import fit_model

ROOT = Path(__file__).resolve().parent.parent
#: fresh seeds: apart from the development seeds (900000..) and from palm eval's defaults
TEST_SEEDS, FIT_SEEDS = 700_000, 760_000
PALM_FACTORS = ("skin_albedo", "vein_depth", "scatter_mm", "distance_mm")


def _row_factor(row: dict, name: str) -> float | None:  # type: ignore[type-arg]
    if name in PALM_FACTORS:
        v = row["facts"].get(name)
        return None if v is None else float(v)
    return float(row["rig_factors"][name])


def _labelled(rows: list[dict]) -> list[rigfit.Labelled]:  # type: ignore[type-arg]
    return [
        rigfit.Labelled(r["kind"], str(r["seed"]), r["cues"], bool(r["quality_ok"]))
        for r in rows
        if r["cues"] is not None
    ]


def _worst_apcer(cv: rigfit.CrossValidated) -> tuple[str, Rate]:
    kind = max(cv.apcer, key=lambda k: (cv.apcer[k].value, k))
    return kind, cv.apcer[kind]


def lofo(args: argparse.Namespace) -> int:
    rows = json.loads(args.cache.read_text())
    print(f"leave one factor out: {len(rows)} presentations from {args.cache}")
    print("fitted on the middle half of each factor's values, judged on the outer half (both tails)")
    print(f"{'factor':12s} {'fitted on':>14s} {'range':>14s} | {'BPCER':36s} {'try':>4s} | worst APCER")
    out = []
    # the baseline: no factor held out, a random half (by seed) fitted, the other judged
    half = [r for r in rows if r["seed"] % 2 == 0], [r for r in rows if r["seed"] % 2 == 1]
    base_model, _ = fit_model([(r.kind, r.cues) for r in _labelled(half[0])])
    base = rigfit.judge(base_model, _labelled(half[1]))
    kind, worst = _worst_apcer(base)
    print(
        f"{'(baseline)':12s} {'a random half':>29s} | {base.bpcer.text():36s} "
        f"{base.try_again.errors:>4d} | {kind} {worst.text()}"
    )
    out.append({"factor": None, **base.as_json()})
    for factor in (*TRAIN, *PALM_FACTORS):
        if factor == "sectors":
            continue  # a count, not a range: every split leaves one side with too few rigs
        vals = [_row_factor(r, factor) for r in rows]
        # palm facts belong to palms; attacks are split by the rig's factors only
        have = [v for r, v in zip(rows, vals, strict=True) if v is not None and r["kind"] == BONA_FIDE]
        if not have:
            continue
        lo, hi = np.percentile(have, [25, 75])
        if factor in PALM_FACTORS:
            # attacks have no palm: half of them (by seed) fit, the other half is judged
            inner = [
                r
                for r, v in zip(rows, vals, strict=True)
                if (r["seed"] % 2 == 0 if r["kind"] != BONA_FIDE else lo <= v <= hi)
            ]
            outer = [
                r
                for r, v in zip(rows, vals, strict=True)
                if (r["seed"] % 2 == 1 if r["kind"] != BONA_FIDE else not lo <= v <= hi)
            ]
        else:
            inner = [r for r, v in zip(rows, vals, strict=True) if lo <= v <= hi]
            outer = [r for r, v in zip(rows, vals, strict=True) if not lo <= v <= hi]
        train = _labelled(inner)
        model, _ = fit_model([(r.kind, r.cues) for r in train])
        judged = rigfit.judge(model, _labelled(outer))
        kind, worst = _worst_apcer(judged)
        all_v = [v for v in vals if v is not None]
        print(
            f"{factor:12s} {f'{lo:.3g}..{hi:.3g}':>14s} {f'{min(all_v):.3g}..{max(all_v):.3g}':>14s} | "
            f"{judged.bpcer.text():36s} {judged.try_again.errors:>4d} | {kind} {worst.text()}"
        )
        out.append({"factor": factor, "fitted": [lo, hi], **judged.as_json()})
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def unseen(args: argparse.Namespace) -> int:
    config = load_config(ROOT / "config.example.toml")
    shipped = L.load_model(args.model)
    kinds = (BONA_FIDE, *ATTACKS)
    results = {}
    for name, rig in UNSEEN.items():
        if args.only and name not in args.only:
            continue
        c = rig.apply(config)
        flat = sim_flat_field(c)
        test = collect(
            c,
            kinds,
            range(TEST_SEEDS, TEST_SEEDS + args.per_class),
            flat,
            None,
            jobs=args.jobs,
            reach=rig.reach,
        )
        per_attack = -(-args.fit_bursts // len(ATTACKS))
        fit_live = collect(
            c,
            (BONA_FIDE,),
            range(FIT_SEEDS, FIT_SEEDS + 4 * args.fit_bursts),
            flat,
            None,
            jobs=args.jobs,
            reach=rig.reach,
        )
        fit_att = collect(
            c, ATTACKS, range(FIT_SEEDS, FIT_SEEDS + per_attack), flat, None, jobs=args.jobs, reach=rig.reach
        )
        rows_test = [
            rigfit.Labelled(p.kind, str(p.seed), p.cues, p.verdict.quality.ok)
            for p in test
            if p.cues is not None
        ]
        no_hand = [p for p in test if p.cues is None]
        live_fit = [
            rigfit.Labelled(p.kind, str(p.seed), p.cues, True)
            for p in fit_live
            if p.cues is not None and p.verdict.quality.ok
        ][: args.fit_bursts]
        att_fit = [
            rigfit.Labelled(p.kind, str(p.seed), p.cues, p.verdict.quality.ok)
            for p in fit_att
            if p.cues is not None
        ]
        before = rigfit.judge(shipped, rows_test)
        reasons: dict[str, int] = {}
        for r in rows_test:
            if r.kind == BONA_FIDE and r.quality_ok:
                lv = L.assess(r.cues, shipped)
                for why in lv.reasons:
                    reasons[why] = reasons.get(why, 0) + 1
        q_reasons: dict[str, int] = {}
        for p in test:
            if p.kind == BONA_FIDE and not p.verdict.quality.ok:
                for why in p.verdict.quality.reasons:
                    q_reasons[why] = q_reasons.get(why, 0) + 1
        try:
            fitted, cv = rigfit.fit_rig(shipped, live_fit + att_fit, fitted_for={"rig": name})
            after = rigfit.judge(fitted, rows_test)
            refused = None
        except rigfit.RigFitError as exc:
            after, cv, refused = None, None, str(exc)
        print(
            f"\n{name}: outside the training world in {', '.join(outside_train(rig))}; "
            f"ring spread {flat.ring_spread}"
        )
        print(
            f"  fresh presentations: {args.per_class} per class "
            f"(no hand found: {len(no_hand)}); bona fide refused by quality: {q_reasons}"
        )
        print("  shipped model:")
        for line in before.lines():
            print(f"  {line}")
        print(f"  bona fide not live, by reason: {reasons}")
        if refused:
            print(f"  rig fit REFUSED: {refused}")
        else:
            assert after is not None and cv is not None
            print(f"  rig fit on {len(live_fit)} live + {len(att_fit)} attack bursts, cross-validated:")
            for line in cv.lines():
                print(f"  {line}")
            print("  the rig's model on the fresh presentations:")
            for line in after.lines():
                print(f"  {line}")
        results[name] = {
            "rig": rig.as_json(),
            "outside": outside_train(rig),
            "shipped": before.as_json(),
            "bona_fide_reasons": reasons,
            "quality_reasons": q_reasons,
            "fit_cv": cv.as_json() if cv else None,
            "fitted": after.as_json() if after else None,
            "refused": refused,
        }
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    lo = sub.add_parser("lofo", help="leave one factor out, from train_liveness.py's cache")
    lo.add_argument("--cache", type=Path, required=True)
    lo.add_argument("--json", type=Path)
    un = sub.add_parser("unseen", help="the rigs outside the training world, before and after a rig fit")
    un.add_argument("--model", type=Path, help="the model to judge with (default: the shipped one)")
    un.add_argument("--per-class", type=int, default=60)
    un.add_argument("--fit-bursts", type=int, default=20, help="live bursts, and attack bursts, for the fit")
    un.add_argument("--jobs", type=int, default=2)
    un.add_argument("--only", nargs="*")
    un.add_argument("--json", type=Path)
    args = ap.parse_args()
    return lofo(args) if args.what == "lofo" else unseen(args)


if __name__ == "__main__":
    sys.exit(main())
