"""A rig's own liveness fit, from labelled bursts taken on it: ``palm calibrate liveness``.

A lab or a hardware team bringing a new rig up holds live palms and attacks over it and saves
the bursts (the protocol's plaintext layout, as ``palm check`` reads them):

    BDIR/live/NAME/                 manifest.json and one PNG per LED pattern
    BDIR/attack/KIND/NAME/          KIND: print_flat, print_curved, screen, fake_hand, ...

Starting from the shipped model, the fit refits what a rig changes and keeps what it does not:

- each cue's standardisation moves so that the rig's live palms' median lands on the shipped
  model's bona fide median (a rig's optics shift a cue by a factor: its logarithm by a constant
  for every surface alike), shrunk toward no move for few bursts;
- the combiner's logit is recalibrated (scale and shift, a ridge toward the shipped 1 and 0);
- the support widens to the rig's live palms (its margin kept), and the attack sides take the
  rig's attacks in too;
- the threshold is set where the worst error on the rig's bursts is least, but never looser than
  the shipped one on the recalibrated logit (a few attacks of each kind cannot show where unseen
  ones fall: the fit moves the cues to the rig and may tighten, never loosen).

The figures it reports are cross-validated (stratified folds: every burst is judged by a fit
that did not see it), BPCER over live bursts that passed quality and APCER per attack kind, each
with its count and a 95 % Clopper-Pearson interval. Where the cross-validated errors stay above
REFUSE_ABOVE, the rig cannot separate live palms from its attacks and the fit is refused.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from device.errors import UsageError
from device.stats import Rate
from device.vision import liveness as L
from device.vision.fitting import BONA_FIDE, best_threshold, class_weights
from device.vision.liveness import FEATURES, SUPPORT_MARGIN, Model

MIN_LIVE, MIN_ATTACK = 20, 20
FOLDS = 5
#: a median from n bursts moves a cue by n / (n + SHRINK_BURSTS) of the way
SHRINK_BURSTS = 5
#: the ridge on the logit's recalibration, toward the shipped scale 1 and shift 0
RECAL_RIDGE = 2.0
#: a fit whose cross-validated BPCER (with its "can't tell" verdicts) or APCER over all attack
#: kinds stays above this is refused
REFUSE_ABOVE = 0.10


class RigFitError(UsageError):
    """The bursts cannot give a fit (too few, or the rig cannot separate them)."""


@dataclass(frozen=True)
class Labelled:
    kind: str  # BONA_FIDE or an attack kind
    name: str
    cues: dict[str, float]
    quality_ok: bool = True


def _recalibrate(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Scale and shift of the logit by weighted logistic regression, with a ridge toward (1, 0)."""
    beta = np.array([1.0, 0.0])
    prior = beta.copy()
    a = np.stack([z, np.ones_like(z)], axis=1)
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(a @ beta, -30, 30)))
        grad = a.T @ (w * (p - y)) + RECAL_RIDGE * (beta - prior)
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + RECAL_RIDGE * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-9:
            break
    return max(float(beta[0]), 0.05), float(beta[1])  # the logit keeps its sense


def refit(model: Model, rows: Sequence[Labelled]) -> Model:
    """The shipped ``model`` refitted to one rig's labelled bursts (see the module's text)."""
    live = [r for r in rows if r.kind == BONA_FIDE and r.quality_ok]
    attacks = [r for r in rows if r.kind != BONA_FIDE]
    xs_live = np.array([[model.standardised(r.cues)[f] for f in FEATURES] for r in live])
    shrink = len(live) / (len(live) + SHRINK_BURSTS)
    mean = dict(model.mean)
    for i, f in enumerate(FEATURES):
        delta = (float(np.median(xs_live[:, i])) - model.bona_fide_median.get(f, 0.0)) * shrink
        mean[f] = model.mean[f] + delta * model.scale[f]
    moved = dataclasses.replace(model, mean=mean, logit_scale=1.0, logit_shift=0.0)
    x_live = np.array([[moved.standardised(r.cues)[f] for f in FEATURES] for r in live])
    x_att = np.array([[moved.standardised(r.cues)[f] for f in FEATURES] for r in attacks])
    support = {}
    for i, f in enumerate(FEATURES):
        lo, hi = model.support.get(f, (-math.inf, math.inf))
        support[f] = (
            min(lo, float(x_live[:, i].min()) - SUPPORT_MARGIN),
            max(hi, float(x_live[:, i].max()) + SUPPORT_MARGIN),
        )
    side = {}
    for i, f in enumerate(FEATURES):
        below, above = model.attack_side.get(f, (True, True))
        lo, hi = support[f]
        side[f] = (below or bool((x_att[:, i] < lo).any()), above or bool((x_att[:, i] > hi).any()))
    moved = dataclasses.replace(moved, support=support, attack_side=side)
    used = live + attacks
    kinds = [r.kind for r in used]
    xs = [moved.standardised(r.cues) for r in used]
    z = np.array([moved.logit(x) for x in xs])
    y = np.array([1.0 if k == BONA_FIDE else 0.0 for k in kinds])
    scale, shift = _recalibrate(z, y, class_weights(kinds))
    zz = scale * z + shift
    # What the support refuses or leaves at "can't tell" is never live, whatever the threshold.
    zz = np.where([moved.outside(x) is None for x in xs], zz, -30.0)
    t_logit, _ = best_threshold(zz, kinds)
    # A handful of attacks of each kind cannot show where unseen ones fall: the fit may tighten
    # the shipped threshold on the recalibrated logit, never loosen it.
    t_shipped = math.log(model.threshold / (1 - model.threshold))
    t_logit = max(t_logit, scale * t_shipped + shift)
    return dataclasses.replace(
        moved, logit_scale=scale, logit_shift=shift, threshold=1 / (1 + math.exp(-t_logit))
    )


@dataclass(frozen=True)
class CrossValidated:
    bpcer: Rate  # live bursts that passed quality, called attacks
    try_again: Rate  # live bursts that passed quality, left at "can't tell"
    apcer: dict[str, Rate]  # per attack kind
    quality_refused: int  # live bursts refused by quality (apart)

    @property
    def pooled_apcer(self) -> Rate:
        """Attacks of every kind judged live, over all attacks: with a few bursts of each kind, one
        error in four must not decide alone."""
        return Rate(sum(r.errors for r in self.apcer.values()), sum(r.n for r in self.apcer.values()))

    def worst(self) -> float:
        return max(self.bpcer.value + self.try_again.value, self.pooled_apcer.value)

    def lines(self) -> list[str]:
        out = [f"  {'BPCER':18s} {self.bpcer.text()}"]
        out.append(f"  {'  try again':18s} {self.try_again.text()}")
        for kind, r in self.apcer.items():
            out.append(f"  {'APCER ' + kind:18s} {r.text()}")
        out.append(f"  {'APCER, all kinds':18s} {self.pooled_apcer.text()}")
        out.append(f"  live bursts refused by quality (not counted above): {self.quality_refused}")
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "bpcer": self.bpcer.as_json(),
            "try_again": self.try_again.as_json(),
            "apcer": {k: r.as_json() for k, r in self.apcer.items()},
            "quality_refused": self.quality_refused,
        }


def _tally(said: Sequence[tuple[Labelled, str]]) -> CrossValidated:
    live = [v for r, v in said if r.kind == BONA_FIDE and r.quality_ok]
    apcer = {}
    for kind in sorted({r.kind for r, _ in said} - {BONA_FIDE}):
        verdicts = [v for r, v in said if r.kind == kind]
        apcer[kind] = Rate(verdicts.count(L.LIVE), len(verdicts))
    return CrossValidated(
        bpcer=Rate(live.count(L.ATTACK), len(live)),
        try_again=Rate(live.count(L.TRY_AGAIN), len(live)),
        apcer=apcer,
        quality_refused=sum(1 for r, _ in said if r.kind == BONA_FIDE and not r.quality_ok),
    )


def judge(model: Model, rows: Sequence[Labelled]) -> CrossValidated:
    """BPCER, try-again and APCER of ``model`` on ``rows`` (no fitting)."""
    return _tally([(r, L.assess(r.cues, model).verdict) for r in rows])


def cross_validate(
    model: Model, rows: Sequence[Labelled], folds: int = FOLDS, seed: int = 0
) -> CrossValidated:
    """Stratified ``folds``-fold cross-validation of :func:`refit`: each burst is judged by a fit
    on the others."""
    rng = np.random.default_rng(seed)
    fold_of: dict[int, int] = {}
    for kind in sorted({r.kind for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.kind == kind]
        for j, i in enumerate(rng.permutation(idx)):
            fold_of[int(i)] = j % folds
    said: list[tuple[Labelled, str]] = []
    for k in range(folds):
        fitted = refit(model, [r for i, r in enumerate(rows) if fold_of[i] != k])
        said += [(r, L.assess(r.cues, fitted).verdict) for i, r in enumerate(rows) if fold_of[i] == k]
    return _tally(said)


def check_counts(rows: Sequence[Labelled]) -> None:
    live = sum(1 for r in rows if r.kind == BONA_FIDE and r.quality_ok)
    attacks = sum(1 for r in rows if r.kind != BONA_FIDE)
    if live < MIN_LIVE or attacks < MIN_ATTACK:
        raise RigFitError(
            f"a rig's fit needs at least {MIN_LIVE} live bursts that pass quality and {MIN_ATTACK} attack "
            f"bursts; these give {live} live and {attacks} attack: take more (live/NAME/ and "
            "attack/KIND/NAME/ folders)"
        )


def weakest_cue(model: Model, rows: Sequence[Labelled], kind: str) -> str:
    """The cue on which attacks of ``kind`` lie nearest the live palms (medians, in live spreads)."""
    live = np.array([[model.standardised(r.cues)[f] for f in FEATURES] for r in rows if r.kind == BONA_FIDE])
    att = np.array([[model.standardised(r.cues)[f] for f in FEATURES] for r in rows if r.kind == kind])
    sep = np.abs(np.median(live, axis=0) - np.median(att, axis=0)) / (live.std(axis=0) + 1e-9)
    return ", ".join(f"{FEATURES[i]} {sep[i]:.1f}" for i in np.argsort(-sep)[:3])


def fit_rig(
    model: Model, rows: Sequence[Labelled], *, fitted_for: dict[str, object]
) -> tuple[Model, CrossValidated]:
    """The rig's model and its cross-validated figures; RigFitError where it cannot separate."""
    check_counts(rows)
    cv = cross_validate(model, rows)
    if cv.worst() > REFUSE_ABOVE:
        worst_kind = max(cv.apcer, key=lambda k: cv.apcer[k].value)
        raise RigFitError(
            "this rig cannot separate its live palms from its attacks: cross-validated BPCER "
            f"{cv.bpcer.text()}, try again {cv.try_again.text()}, APCER over all attacks "
            f"{cv.pooled_apcer.text()} (worst kind {worst_kind}: {cv.apcer[worst_kind].text()}), over "
            f"the {REFUSE_ABOVE:.0%} a fit may leave. The cues that "
            f"set {worst_kind} farthest apart from live palms (medians, in live spreads): "
            f"{weakest_cue(model, rows, worst_kind)}. Check the rig (ring, focus, calibration) or "
            "take more bursts"
        )
    fitted = refit(model, rows)
    return dataclasses.replace(fitted, fitted_for={**fitted_for, "cross_validated": cv.as_json()}), cv
