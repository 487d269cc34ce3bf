"""Fitting the liveness combiner: from labelled cues to a Model (device.vision.liveness).

Used by scripts/train_liveness.py for the shipped model and by ``palm calibrate liveness``
(device.vision.rigfit) for a rig's own. A logistic regression on the standardised cues and
their pairwise products, bona fide against every attack kind (each kind weighted alike), by
Newton's method with a ridge penalty; the threshold where the worst error on the fitting data
is least (the middle of any tie); each cue's bona fide range widened by SUPPORT_MARGIN as the
support; and, per cue and side, whether attacks lie beyond the support there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from device.vision.liveness import FEATURES, SUPPORT_MARGIN, Model, expand, transformed

BONA_FIDE = "genuine"
#: attacks beyond a side of the support make it an attack's side when they are at least this
#: share of the attacks there (and at least two): one stray presentation does not decide a side
ATTACK_SIDE_SHARE = 0.01


def logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
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


def class_weights(kinds: Sequence[str]) -> np.ndarray:
    """Half the weight to bona fide, half shared alike by the attack kinds; mean weight 1."""
    counts = {k: list(kinds).count(k) for k in set(kinds)}
    n_attack = max(len(set(kinds) - {BONA_FIDE}), 1)
    w = np.array([0.5 / counts[k] if k == BONA_FIDE else 0.5 / (n_attack * counts[k]) for k in kinds])
    return w * len(w)


def best_threshold(z: np.ndarray, kinds: Sequence[str]) -> tuple[float, float]:
    """(logit threshold, worst error): where max(BPCER, every APCER) is least, the middle of ties."""
    kinds_a = np.asarray(kinds)
    bona = z[kinds_a == BONA_FIDE]
    attack_kinds = sorted(set(kinds) - {BONA_FIDE})
    cands = np.sort(np.unique(np.concatenate([z, [z.min() - 1, z.max() + 1]])))
    best: tuple[float, list[float]] | None = None
    for t in (cands[:-1] + cands[1:]) / 2:
        worst = max([float(np.mean(bona < t))] + [float(np.mean(z[kinds_a == k] >= t)) for k in attack_kinds])
        if best is None or worst < best[0] - 1e-12:
            best = (worst, [t])
        elif abs(worst - best[0]) <= 1e-12:
            best[1].append(t)
    assert best is not None
    return float(np.median(best[1])), best[0]


def fit_model(
    rows: Sequence[tuple[str, dict[str, float]]], *, l2: float = 0.1, trained_on: str = ""
) -> tuple[Model, float]:
    """The model fitted on (kind, cues) rows, and its worst error on them."""
    kinds = [k for k, _ in rows]
    if BONA_FIDE not in kinds or len(set(kinds)) < 2:
        raise ValueError("fitting needs bona fide and attack presentations")
    x = np.array([[transformed(c)[f] for f in FEATURES] for _, c in rows])
    y = np.array([1.0 if k == BONA_FIDE else 0.0 for k in kinds])
    w = class_weights(kinds)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-12
    xs = (x - mean) / scale
    terms = [expand(dict(zip(FEATURES, row, strict=True))) for row in xs]
    names = list(terms[0])
    phi = np.array([[t[n] for n in names] for t in terms])
    beta = logistic(phi, y, w, l2=l2)
    z = beta[0] + phi @ beta[1:]
    lo = xs[y == 1].min(axis=0) - SUPPORT_MARGIN
    hi = xs[y == 1].max(axis=0) + SUPPORT_MARGIN
    inside = ((xs >= lo) & (xs <= hi)).all(axis=1)
    t_logit, worst = best_threshold(np.where(inside, z, -30.0), kinds)
    attacks = xs[y == 0]
    need = max(2, math.ceil(ATTACK_SIDE_SHARE * len(attacks)))
    side = {
        f: (int((attacks[:, i] < lo[i]).sum()) >= need, int((attacks[:, i] > hi[i]).sum()) >= need)
        for i, f in enumerate(FEATURES)
    }
    model = Model(
        weights={n: float(b) for n, b in zip(names, beta[1:], strict=True)},
        bias=float(beta[0]),
        mean={f: float(m) for f, m in zip(FEATURES, mean, strict=True)},
        scale={f: float(s) for f, s in zip(FEATURES, scale, strict=True)},
        threshold=1 / (1 + math.exp(-t_logit)),
        trained_on=trained_on,
        support={f: (float(lo[i]), float(hi[i])) for i, f in enumerate(FEATURES)},
        attack_side=side,
        bona_fide_median={f: float(np.median(xs[y == 1, i])) for i, f in enumerate(FEATURES)},
    )
    return model, worst
