"""Liveness: is this a live palm, or a print, a screen or a fake hand?

Cues a Raspberry Pi can afford, all from one burst (ambient, flood, one frame per ring sector)
and the scanner's flat fields. Each rests on a physical fact, and says what in a rig moves it:

- ``distance_mm`` (no verdict of its own): the palm's distance, from how each sector's share of
  the ring's light changes across it, against the grey card at its known distance (near-light
  photometric stereo: ring_distance_mm). The card carries the rig's ring radius, sector angles,
  beam and power into it; a curved surface biases it (a palm by up to a fifth);
- ``albedo``: how strongly the surface answers the ring, against the grey card, at the palm's
  measured distance (the ring's light falls with its square): skin returns 0.35 to 0.7 of the
  NIR, paper more, a screen almost nothing. Rests on the card's stated albedo and distance;
- ``relief``, ``relief_fine``: photometric stereo against the flat fields. Divided by each
  sector's flat field, a flat print looks the same under every sector, whatever it shows; a
  palm's relief (eminences, hollow, creases, rim) makes the sectors disagree, in a pattern that
  a plane or a smooth bend (a curved print) does not explain. The disagreement grows with the
  angle between the sectors' light, the ring's radius over the distance: the card's ring spread
  at the measured distance divides it out (a beam narrower than the card showed, cos^m, is in the
  spread as 3 + m: the relief of a rig of narrow-beam LEDs reads somewhat low);
- ``halftone``: fine periodic texture (printed dots, paper) that skin, which scatters 940 nm
  light over a millimetre, does not have; measured against its own frequency ring, so neither the
  surface's fall-off nor the rig's resolution moves it;
- ``veins``: a vein network under the skin (absent from a fake hand and from most prints),
  relative to the palm's brightness: the vein's depth and the blood's absorption set it, the
  rig's blur at a few millimetres barely;
- ``ambient_ratio``: the room's light on the surface against the ring's (a screen lights itself);
- ``smooth``: detail at the finest scale relative to the vein scale, reported, not combined (see
  FEATURES).

A logistic combiner fuses them into one score. Its coefficients, the operating threshold and
each cue's range over bona fide palms (outside it, a surface is no palm the model has seen) ship
as data (liveness_model.json), fitted on development seeds over many simulated rigs by
scripts/train_liveness.py. A cue beyond that range on a side where attacks were seen refuses; on
a side no attack reached, the verdict is TRY_AGAIN ("can't tell"), not an attack. A rig's own fit
(device.vision.rigfit) refits the standardisation, the combiner's logit and the threshold from
its labelled bursts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import cv2
import numpy as np

from device import inputs
from device.calibration.flatfield import PALM_DISTANCE_MM, FlatField
from device.errors import ScannerError
from device.hardware import patterns
from device.vision.quality import crop as palm_crop
from device.vision.roi import NOMINAL_ZOOM, Hand
from device.vision.scales import Scales

WORK_PX = 96  # the shape cues work on a small crop: relief is not fine-grained
#: the ring spread (flatfield.ring_spread) of the nominal rig (a 30 mm ring at 125 mm). The
#: relief a ring shows grows with its spread; relief is divided by a calibration's spread and
#: multiplied by this, so the combiner reads every ring's relief as the nominal ring's.
FITTED_RING_SPREAD = 0.858


#: the cues the combiner reads. ``smooth`` (fine detail over mid, see band_cues) is measured and
#: reported but not combined: it follows the rig's sharpness, denoise and noise more than the
#: surface (on rigs outside the training world it called a quarter of live palms attacks, issue
#: #14), and the veins cue tells a vein-less fake hand apart by itself
FEATURES = ("albedo", "relief", "relief_fine", "halftone", "veins", "ambient_ratio")
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


LIVE, ATTACK, TRY_AGAIN = "live", "attack", "try_again"


@dataclass(frozen=True)
class Liveness:
    live: bool
    score: float
    reasons: list[str]
    cues: dict[str, float] = field(default_factory=dict)
    #: LIVE, ATTACK, or TRY_AGAIN: a cue outside every palm the model has seen, in no attack's
    #: direction (not evidence of an attack; another burst, perhaps with other settings, may tell)
    verdict: str = ""

    def __post_init__(self) -> None:
        if not self.verdict:
            object.__setattr__(self, "verdict", LIVE if self.live else ATTACK)


@dataclass(frozen=True)
class Model:
    weights: dict[str, float]
    bias: float
    mean: dict[str, float]
    scale: dict[str, float]
    threshold: float
    trained_on: str = ""
    #: per cue, the standardised range bona fide palms gave in training, widened by
    #: SUPPORT_MARGIN: a surface outside it on any cue is no palm the combiner has seen, and a
    #: quadratic combiner must not be trusted out there (a dark screen's noise once read as
    #: relief and veins together and scored as live)
    support: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: per cue, whether attacks were seen beyond the bona fide support below it and above it: a
    #: surface out there is refused; beyond a side no attack reached, the verdict is TRY_AGAIN
    attack_side: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    #: per cue, the standardised median of the bona fide training palms (a rig's fit moves its own
    #: palms' median there: device.vision.rigfit)
    bona_fide_median: dict[str, float] = field(default_factory=dict)
    #: what the model was refitted for, if it was (the rig and its bursts), else empty
    fitted_for: dict[str, object] = field(default_factory=dict)
    #: a rig's recalibration of the combiner's logit: scale x logit + shift (device.vision.rigfit)
    logit_scale: float = 1.0
    logit_shift: float = 0.0

    @classmethod
    def load(cls, text: str | None = None) -> Model:
        if text is None:
            text = resources.files("device.vision").joinpath("liveness_model.json").read_text()
        return cls.from_json(json.loads(text))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Model:
        return cls(
            weights=d["weights"],
            bias=d["bias"],
            mean=d["mean"],
            scale=d["scale"],
            threshold=d["threshold"],
            trained_on=d.get("trained_on", ""),
            support={k: (float(lo), float(hi)) for k, (lo, hi) in d.get("support", {}).items()},
            attack_side={k: (bool(lo), bool(hi)) for k, (lo, hi) in d.get("attack_side", {}).items()},
            bona_fide_median={k: float(v) for k, v in d.get("bona_fide_median", {}).items()},
            fitted_for=dict(d.get("fitted_for", {})),
            logit_scale=float(d.get("logit_scale", 1.0)),
            logit_shift=float(d.get("logit_shift", 0.0)),
        )

    def as_json(self) -> dict[str, object]:
        return {
            "features": list(FEATURES),
            "weights": self.weights,
            "bias": self.bias,
            "mean": self.mean,
            "scale": self.scale,
            "threshold": self.threshold,
            "support": {k: list(v) for k, v in self.support.items()},
            "attack_side": {k: list(v) for k, v in self.attack_side.items()},
            "bona_fide_median": self.bona_fide_median,
            "trained_on": self.trained_on,
            "logit_scale": self.logit_scale,
            "logit_shift": self.logit_shift,
            **({"fitted_for": self.fitted_for} if self.fitted_for else {}),
        }

    def standardised(self, cues: Mapping[str, float]) -> dict[str, float]:
        x = transformed(cues)
        return {k: (x[k] - self.mean[k]) / self.scale[k] for k in FEATURES}

    def outside(self, xs: Mapping[str, float]) -> str | None:
        """The standardised cue farthest outside the bona fide support, if any is."""
        worst, by = None, 0.0
        for k, (lo, hi) in self.support.items():
            out = max(lo - xs[k], xs[k] - hi)
            if out > by:
                worst, by = k, out
        return worst

    def toward_attack(self, xs: Mapping[str, float]) -> str | None:
        """The cue farthest outside the bona fide support on a side where attacks were seen, if any.
        A model without attack sides (an older file) takes every side for an attack's."""
        worst, by = None, 0.0
        for k, (lo, hi) in self.support.items():
            below, above = self.attack_side.get(k, (True, True))
            out = max(lo - xs[k] if below else 0.0, xs[k] - hi if above else 0.0)
            if out > by:
                worst, by = k, out
        return worst

    def logit(self, xs: Mapping[str, float]) -> float:
        """The combiner's logit, as the rig's recalibration (if any) reads it."""
        terms = expand(xs)
        z = self.bias + sum(self.weights[k] * terms[k] for k in self.weights)
        return self.logit_scale * z + self.logit_shift

    def combined(self, xs: Mapping[str, float]) -> float:
        """The combiner's score alone, whatever the support says."""
        z = self.logit(xs)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def score(self, cues: Mapping[str, float]) -> float:
        return self.score_standardised(self.standardised(cues))

    def score_standardised(self, xs: Mapping[str, float]) -> float:
        if self.outside(xs) is not None:
            return 0.0
        return self.combined(xs)


#: how far (in standard deviations of each cue) beyond the bona fide training range the support
#: reaches: wide enough that palms of rigs and people between the training ones stay inside
SUPPORT_MARGIN = 0.5


@lru_cache(maxsize=8)
def _surface_projection(h: int, w: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """The basis of polynomial surfaces of the given order on an h x w grid, and its pseudo-inverse:
    fitting a surface is then two small matrix products, the same for every burst."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xs = xs / w - 0.5
    ys = ys / h - 0.5
    terms = [np.ones_like(xs), xs, ys]
    if order >= 2:
        terms += [xs * xs, xs * ys, ys * ys]
    a = np.stack([t.ravel() for t in terms], axis=1)
    return a.astype(np.float32), np.linalg.pinv(a).astype(np.float32)


def _plane_residual(img: np.ndarray, order: int) -> np.ndarray:
    """What a polynomial surface of the given order does not explain (least squares)."""
    h, w = img.shape
    a, pinv = _surface_projection(h, w, order)
    v = img.astype(np.float32).ravel()
    return (v - a @ (pinv @ v)).reshape(h, w)


@lru_cache(maxsize=4)
def _spectrum_tools(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D Hann window, and the radius of each bin of the real spectrum (cycles per crop),
    rounded to whole rings."""
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fy = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    fx = np.arange(w // 2 + 1)[None, :]
    return win, np.rint(np.hypot(fy, fx)).astype(np.intp).ravel()


#: the fine band of the print-dot spectrum, in cycles per crop: above the palm's own relief and
#: below what the sensor holds (nine tenths of the frame's Nyquist frequency, at most 0.45 of
#: the crop's). Above the frame's Nyquist an enlarged crop has only its interpolation's images.
SPECTRUM_LOW, SPECTRUM_HIGH_OF_NYQUIST = 12, 0.9


def _periodic(img: np.ndarray, zoom: float = 1.0) -> float:
    """How peaked the fine spectrum is: printed dots (and their moire) are periodic; skin and
    sensor noise are not. log10 of the strongest fine-scale bin over the typical bin at the same
    frequency (the geometric mean of its ring), so that neither the surface's fall-off with
    frequency nor how much of it the sensor resolves (``zoom``, crop pixels per frame pixel:
    roi.Hand.zoom) moves the measure; only a peak standing out of its ring does."""
    h, w = img.shape
    win, ring = _spectrum_tools(h, w)
    high = max(min(0.45 * h, SPECTRUM_HIGH_OF_NYQUIST * h / (2 * max(zoom, 1.0))), 2 * SPECTRUM_LOW)
    f = (img - float(img.mean())) * win
    spec = cv2.dft(np.ascontiguousarray(f, dtype=np.float32), flags=cv2.DFT_COMPLEX_OUTPUT)
    spec = spec[:, : w // 2 + 1]
    power = np.log10(spec[..., 0] ** 2 + spec[..., 1] ** 2 + 1e-12).ravel()
    level = np.bincount(ring, weights=power) / np.maximum(np.bincount(ring), 1)
    band = (ring > SPECTRUM_LOW) & (ring < high)
    return float((power[band] - level[ring[band]]).max())


def _median(v: np.ndarray) -> float:
    """numpy's median, by partial sorting (a third of the time on a spectrum's band)."""
    v = v.ravel()
    mid = v.size // 2
    if v.size % 2:
        return float(np.partition(v, mid)[mid])
    part = np.partition(v, [mid - 1, mid])
    return float((part[mid - 1] + part[mid]) / 2)


def lit_frames(frames: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every lit pattern's frame minus the ambient frame (float32, at least 0): only the ring's light."""
    ambient = frames[patterns.AMBIENT]
    if ambient.dtype != np.uint8:
        amb = ambient.astype(np.float32)
        return {
            r: np.maximum(img.astype(np.float32) - amb, 0)
            for r, img in frames.items()
            if r != patterns.AMBIENT
        }
    # 8-bit frames: a saturating subtraction is the same, at a fraction of the cost.
    return {
        role: cv2.subtract(img, ambient).astype(np.float32)
        for role, img in frames.items()
        if role != patterns.AMBIENT
    }


def cues(
    frames: Mapping[str, np.ndarray],
    hand: Hand,
    flat: FlatField,
    *,
    exposure_us: int,
    gain: float,
    lit: Mapping[str, np.ndarray] | None = None,
    texture: Scales | None = None,
) -> dict[str, float]:
    """The liveness cues of one burst (raw uint8 frames by role).

    ``lit`` (the frames minus ambient, as :func:`lit_frames` gives them) and ``texture``
    (the full-size palm crop of the lit flood frame) may be passed in when the caller
    has them already; they are computed otherwise.
    """
    if lit is None:
        lit = lit_frames(frames)
    if texture is None:
        texture = texture_of(lit[patterns.FLOOD], hand)
    return {
        **shape_cues(frames, lit, hand, flat, exposure_us=exposure_us, gain=gain),
        **texture_cues(texture, hand.zoom),
    }


def texture_of(lit_flood: np.ndarray, hand: Hand) -> Scales:
    """The full-resolution palm crop of the lit flood frame (the work crop would smooth texture
    away), as quality takes it."""
    return Scales(palm_crop(lit_flood, hand))


def shape_cues(
    frames: Mapping[str, np.ndarray],
    lit: Mapping[str, np.ndarray],
    hand: Hand,
    flat: FlatField,
    *,
    exposure_us: int,
    gain: float,
) -> dict[str, float]:
    """The cues of the ring's light: albedo, relief (photometric stereo), ambient ratio."""
    m = hand.crop_matrix(WORK_PX)
    size = (WORK_PX, WORK_PX)
    norm = 1.0 / float(exposure_us * gain)
    scale = WORK_PX / 128  # blur widths were chosen on a 128-pixel crop

    def work(img: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        return cv2.warpAffine(img, m, size, flags=interpolation, borderMode=cv2.BORDER_REPLICATE)

    edge = round(8 * scale)
    inner = (slice(edge, -edge), slice(edge, -edge))
    flood = work(lit[patterns.FLOOD]) * norm
    flood_flat = work(flat.response[patterns.FLOOD], cv2.INTER_LINEAR)
    ratio = flood / np.maximum(flood_flat, 1e-6)
    # Sector by sector against the flat fields: log ratios, each relative to their mean. The
    # frames are smoothed well below the palm's relief (eminences span a quarter of the crop),
    # above the noise; the flat fields are smooth already.
    roles = flat.lit_roles()
    logs = np.empty((len(roles), WORK_PX, WORK_PX), np.float32)
    card = np.empty((len(roles), WORK_PX, WORK_PX), np.float32)
    for i, role in enumerate(roles):
        r = cv2.GaussianBlur(work(lit[role]), (0, 0), 3.5 * scale) * norm
        card[i] = work(flat.response[role], cv2.INTER_LINEAR)
        r /= np.maximum(card[i], 1e-6)
        np.log(np.maximum(r, 1e-6), out=logs[i])
    dev = logs - logs.mean(axis=0)
    np.log(np.maximum(card, 1e-12), out=card)
    card -= card.mean(axis=0)
    distance = ring_distance_mm(
        dev[:, inner[0], inner[1]], card[:, inner[0], inner[1]], flat.card_distance_mm
    )
    # The card was lit at its own distance, the palm at its measured one: the ring's light on a
    # surface falls with the square of the distance (a palm at 80 mm over a card at 125 mm otherwise
    # read two and a half times as bright as it is).
    albedo = _median(ratio[inner]) * flat.card_albedo * (distance / flat.card_distance_mm) ** 2
    # The sectors' light directions differ by about the ring's radius over the palm's distance: the
    # relief a palm shows grows with that, so it is read as the nominal ring would show it.
    spread = (flat.ring_spread or FITTED_RING_SPREAD) * PALM_DISTANCE_MM / distance
    ring = FITTED_RING_SPREAD / spread
    relief = ring * float(np.mean([_plane_residual(d[inner], 2).std() for d in dev]))
    relief_fine = ring * float(
        np.mean([(d - cv2.GaussianBlur(d, (0, 0), 6.0 * scale))[inner].std() for d in dev])
    )
    ambient = cv2.warpAffine(frames[patterns.AMBIENT].astype(np.float32), m, size)
    amb = _median(ambient[inner]) * norm
    return {
        "distance_mm": distance,
        "albedo": albedo,
        "relief": relief,
        "relief_fine": relief_fine,
        "ambient_ratio": float(amb / max(_median(flood[inner]), 1e-9)),
    }


#: the nearest and farthest a ring-lit surface is taken to be, mm: beyond them the fit has no grip
DISTANCE_RANGE_MM = (30.0, 400.0)


def ring_distance_mm(dev: np.ndarray, card: np.ndarray, card_distance_mm: float) -> float:
    """The surface's distance, measured by the ring's own light (near-light photometric stereo).

    Physics: sector k lights a point from the LED's position, so its share of the ring's light
    changes across a surface as the direction to the LED does: on a frontal surface at distance d,
    the log share's slope across the image is in proportion to the ring's radius over d (times
    (3 + m) for a beam of cos^m). The grey card at its known distance shows the same slope for its
    own distance, with the rig's ring radius, beam and sector powers in it. A tilt of the surface
    adds a constant to each sector's share, not a slope; so the palm's log shares, less the card's,
    change across the palm with a slope of card slope x (d_card / d - 1), and the least-squares
    ratio of the two slopes over every sector gives d. Albedo and inverse-square fall-off are the
    same for every sector and drop out of the shares.

    What changes it in a rig: nothing the card does not show (ring radius, sector angles, beam
    shape, LED power); it rests on the card's distance being right. What biases it: a curved
    surface's normals turn across it (a palm's convexity reads it up to a fifth nearer or farther;
    a print bent round a bottle, more), and the first-order shares lose accuracy when the ring's
    radius is not small against the distance.

    ``dev``: (sectors, h, w) the surface's log shares against the card's (each sector's log ratio
    to the card, less their mean); ``card``: (sectors, h, w) the card's own log shares.
    """
    k, h, w = dev.shape
    _, pinv = _surface_projection(h, w, 1)
    slope_palm = dev.reshape(k, -1) @ pinv[1:].T  # (sectors, 2): the x and y slopes
    slope_card = card.reshape(k, -1) @ pinv[1:].T
    energy = float((slope_card * slope_card).sum())
    if energy <= 1e-12:
        return card_distance_mm
    beta = float((slope_palm * slope_card).sum()) / energy
    lo, hi = DISTANCE_RANGE_MM
    return float(min(max(card_distance_mm / max(1.0 + beta, 1e-3), lo), hi))


def texture_cues(texture: Scales, zoom: float) -> dict[str, float]:
    """The cues of the surface's texture: print dots, vein contrast, fine detail against mid.
    ``zoom``: crop pixels per frame pixel of the palm's crop (roi.Hand.zoom)."""
    return {"halftone": halftone(texture, zoom), **band_cues(texture, zoom)}


def halftone(texture: Scales, zoom: float) -> float:
    """Printed dots: how peaked the fine spectrum of the crop's centre is."""
    return _periodic(texture.image[32:288, 32:288], zoom)


def band_cues(texture: Scales, zoom: float) -> dict[str, float]:
    """Vein contrast, and fine detail against mid (silicone scatters more than skin).

    The finest detail is what one frame pixel holds; a palm enlarged more in its crop (a wider
    lens, a farther or smaller palm: ``zoom`` over NOMINAL_ZOOM) spreads it over more crop
    pixels, so the fine bands widen with the zoom to hold the same detail (a palm larger than its
    crop is smoothed to the crop's resolution: quality.crop)."""
    k = zoom / NOMINAL_ZOOM
    return {
        "veins": texture.band_std(4.0, 12.0, 24) / texture.mean,
        "smooth": texture.band_std(0, 1.0 * k, 16) / max(texture.band_std(1.0 * k, 3.0 * k, 16), 1e-6),
    }


def assess(values: Mapping[str, float], model: Model) -> Liveness:
    """The verdict on one burst's cues: LIVE, ATTACK (with the cue that pulled hardest toward an
    attack, or lies beyond the palms' range in an attack's direction), or TRY_AGAIN (a cue beyond
    every palm the model has seen, in no attack's direction: not evidence of an attack)."""
    xs = model.standardised(values)
    rounded = {k: round(v, 6) for k, v in values.items()}
    toward = model.toward_attack(xs)
    if toward is not None:
        return Liveness(False, 0.0, [f"{toward}_not_skin"], rounded, ATTACK)
    unknown = model.outside(xs)
    if unknown is not None:
        return Liveness(
            False, round(model.combined(xs), 4), [f"{unknown}_unlike_any_palm"], rounded, TRY_AGAIN
        )
    score = model.combined(xs)
    if score >= model.threshold:
        return Liveness(True, round(score, 4), [], rounded, LIVE)
    # Name the cue that pulled hardest toward "attack", for a person reading the verdict.
    terms = expand(xs)
    pulls = {k: model.weights[k] * terms[k] for k in FEATURES if k in model.weights}
    return Liveness(
        False, round(score, 4), [f"{min(pulls, key=lambda k: pulls[k])}_not_skin"], rounded, ATTACK
    )


def default_model() -> Model:
    return Model.load()


class ModelError(ScannerError, ValueError):
    """A liveness model file that cannot be used (the message names the file and the fault)."""


def load_model(path: str | os.PathLike[str] | None) -> Model:
    """The liveness model in ``path`` (a `palm calibrate liveness` result), or the shipped one."""
    if path is None:
        return default_model()
    try:
        d = inputs.read_json(path, what="liveness model")
    except inputs.InputError as exc:
        raise ModelError(str(exc)) from None
    try:
        if not isinstance(d, dict):
            raise ValueError("the file holds no JSON object")
        model = Model.from_json(d)
        for name in ("weights", "mean", "scale"):
            table = getattr(model, name)
            missing = [f for f in FEATURES if f not in table]
            if missing or not all(_is_number(table[f]) for f in FEATURES):
                raise ValueError(f"{name} needs a number for each of {', '.join(FEATURES)}")
        if not all(model.scale[f] > 0 for f in FEATURES):
            raise ValueError("every scale must be above 0")
        if not (_is_number(model.bias) and _is_number(model.threshold) and 0.0 < model.threshold < 1.0):
            raise ValueError("bias must be a number and threshold a number between 0 and 1")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"{path}: not a liveness model (the JSON `palm calibrate liveness` writes): "
            + inputs.cut(str(exc), 200)
        ) from None
    return model


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def describe_model(model: Model, path: str | os.PathLike[str] | None) -> str:
    """One line for the log: which model judges liveness, and for what it was fitted."""
    if path is None:
        return f"the shipped model (threshold {model.threshold:.4f})"
    f = model.fitted_for
    what = (
        f"fitted for the rig of {f.get('calibration', '?')} on {f.get('live', '?')} live bursts"
        if f
        else "a model file"
    )
    return f"{path}: {what} (threshold {model.threshold:.4f})"
