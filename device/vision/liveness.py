"""Liveness: is this a live palm, or a print, a screen or a fake hand?

Cues a Raspberry Pi can afford, all from one burst (ambient, flood, one frame per
ring sector) and the scanner's flat fields:

- ``albedo``: how strongly the surface answers the ring, against the grey card:
  skin returns about half the NIR, paper more, a screen almost nothing;
- ``relief``: photometric stereo against the flat fields. Divided by each
  sector's flat field, a flat print looks the same under every sector, whatever
  it shows; a palm's relief (eminences, hollow, creases, rim) makes the sectors
  disagree, in a pattern that a plane or a smooth bend (a curved print) does not
  explain;
- ``halftone``: fine periodic texture (printed dots, paper) that skin, which
  scatters 940 nm light over a millimetre, does not have;
- ``veins``: a vein network under the skin (absent from a fake hand and from
  most prints);
- ``smooth``: detail at the finest scale relative to the vein scale: silicone
  scatters more than skin.

A logistic combiner fuses them into one score. Its coefficients and the operating
threshold ship as data (liveness_model.json), fitted on development seeds by
scripts/train_liveness.py; the reported error rates come from other seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import cv2
import numpy as np

from device.calibration.flatfield import FlatField
from device.hardware import patterns
from device.vision.roi import Hand

WORK_PX = 128  # liveness works on a small crop: the cues are not fine-grained

FEATURES = ("albedo", "relief", "relief_fine", "halftone", "veins", "smooth", "ambient_ratio")
#: cues that vary by factors rather than by steps enter the combiner as logarithms
LOG_FEATURES = frozenset({"albedo", "relief", "relief_fine", "veins", "smooth", "ambient_ratio"})


def expand(xs: Mapping[str, float]) -> dict[str, float]:
    """The combiner's terms: each standardised cue, and every product of two (a quadratic model,
    so that "too much" of a cue, such as print texture read as veins, can count against)."""
    out = dict(xs)
    for i, a in enumerate(FEATURES):
        for b in FEATURES[i:]:
            out[f"{a}*{b}"] = xs[a] * xs[b]
    return out


def transformed(cues: Mapping[str, float]) -> dict[str, float]:
    """The combiner's inputs: the cues, some as logarithms."""
    return {k: math.log(max(cues[k], 1e-6)) if k in LOG_FEATURES else cues[k] for k in FEATURES}


@dataclass(frozen=True)
class Liveness:
    live: bool
    score: float
    reasons: list[str]
    cues: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    weights: dict[str, float]
    bias: float
    mean: dict[str, float]
    scale: dict[str, float]
    threshold: float
    trained_on: str = ""

    @classmethod
    def load(cls, text: str | None = None) -> Model:
        if text is None:
            text = resources.files("device.vision").joinpath("liveness_model.json").read_text()
        d = json.loads(text)
        return cls(
            weights=d["weights"],
            bias=d["bias"],
            mean=d["mean"],
            scale=d["scale"],
            threshold=d["threshold"],
            trained_on=d.get("trained_on", ""),
        )

    def standardised(self, cues: Mapping[str, float]) -> dict[str, float]:
        x = transformed(cues)
        return {k: (x[k] - self.mean[k]) / self.scale[k] for k in FEATURES}

    def score(self, cues: Mapping[str, float]) -> float:
        terms = expand(self.standardised(cues))
        z = self.bias + sum(self.weights[k] * terms[k] for k in self.weights)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def _plane_residual(img: np.ndarray, order: int) -> np.ndarray:
    """What a polynomial surface of the given order does not explain."""
    h, w = img.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs = xs / w - 0.5
    ys = ys / h - 0.5
    terms = [np.ones_like(xs), xs, ys]
    if order >= 2:
        terms += [xs * xs, xs * ys, ys * ys]
    a = np.stack([t.ravel() for t in terms], axis=1)
    coef, *_ = np.linalg.lstsq(a, img.ravel(), rcond=None)
    return (img.ravel() - a @ coef).reshape(h, w)


def _periodic(img: np.ndarray) -> float:
    """How peaked the fine spectrum is: printed dots (and their moire) are periodic; skin and
    sensor noise are not. log10 of the strongest fine-scale peak over the median."""
    f = img - float(img.mean())
    win = np.outer(np.hanning(f.shape[0]), np.hanning(f.shape[1])).astype(np.float32)
    power = np.abs(np.fft.rfft2(f * win)) ** 2
    h, w = power.shape
    fy = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    fx = np.arange(w)[None, :]
    radius = np.hypot(fy, fx)
    band = power[(radius > 12) & (radius < 0.45 * img.shape[0])]
    return float(np.log10(band.max() / max(float(np.median(band)), 1e-12)))


def cues(
    frames: Mapping[str, np.ndarray], hand: Hand, flat: FlatField, *, exposure_us: int, gain: float
) -> dict[str, float]:
    """The liveness cues of one burst (raw uint8 frames by role)."""
    m = hand.crop_matrix(WORK_PX)
    size = (WORK_PX, WORK_PX)
    ambient = frames[patterns.AMBIENT].astype(np.float32)
    norm = 1.0 / float(exposure_us * gain)

    def lit(role: str) -> np.ndarray:
        img = np.maximum(frames[role].astype(np.float32) - ambient, 0) * norm
        return cv2.warpAffine(img, m, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)

    def flat_crop(role: str) -> np.ndarray:
        return cv2.warpAffine(
            flat.response[role], m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )

    inner = (slice(8, -8), slice(8, -8))
    flood = lit(patterns.FLOOD)
    flood_flat = flat_crop(patterns.FLOOD)
    ratio = flood / np.maximum(flood_flat, 1e-6)
    albedo = float(np.median(ratio[inner])) * flat.card_albedo
    # Sector by sector against the flat fields: log ratios, each relative to their mean.
    logs = []
    for role in flat.lit_roles():
        # Smoothed well below the palm's relief (eminences span a quarter of the crop), above the noise.
        r = cv2.GaussianBlur(lit(role), (0, 0), 3.5) / np.maximum(
            cv2.GaussianBlur(flat_crop(role), (0, 0), 3.5), 1e-6
        )
        logs.append(np.log(np.maximum(r, 1e-6)))
    stack = np.stack(logs)
    dev = stack - stack.mean(axis=0)
    relief = float(np.mean([_plane_residual(d[inner], 2).std() for d in dev]))
    relief_fine = float(np.mean([(d - cv2.GaussianBlur(d, (0, 0), 6.0))[inner].std() for d in dev]))
    # Texture on the full-resolution flood crop (the work crop would smooth it away).
    full = cv2.warpAffine(
        np.maximum(frames[patterns.FLOOD].astype(np.float32) - ambient, 0),
        hand.crop_matrix(320),
        (320, 320),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    mean = max(float(full.mean()), 1.0)
    fine = (full - cv2.GaussianBlur(full, (0, 0), 1.0))[16:-16, 16:-16]
    mid = (cv2.GaussianBlur(full, (0, 0), 1.0) - cv2.GaussianBlur(full, (0, 0), 3.0))[16:-16, 16:-16]
    vein = (cv2.GaussianBlur(full, (0, 0), 4.0) - cv2.GaussianBlur(full, (0, 0), 12.0))[24:-24, 24:-24]
    amb = float(np.median(cv2.warpAffine(ambient, m, size)[inner])) * norm
    return {
        "albedo": albedo,
        "relief": relief,
        "relief_fine": relief_fine,
        "halftone": _periodic(full[32:288, 32:288]),
        "veins": float(vein.std() / mean),
        "smooth": float(fine.std() / max(float(mid.std()), 1e-6)),
        "ambient_ratio": float(amb / max(float(np.median(flood[inner])), 1e-9)),
    }


def assess(values: Mapping[str, float], model: Model) -> Liveness:
    score = model.score(values)
    live = score >= model.threshold
    why: list[str] = []
    if not live:
        # Name the cue that pulled hardest toward "attack", for a person reading the verdict.
        terms = expand(model.standardised(values))
        pulls = {k: model.weights[k] * terms[k] for k in FEATURES if k in model.weights}
        worst = min(pulls, key=lambda k: pulls[k])
        why.append(f"{worst}_not_skin")
    return Liveness(
        live=live, score=round(score, 4), reasons=why, cues={k: round(v, 6) for k, v in values.items()}
    )


def default_model() -> Model:
    return Model.load()
