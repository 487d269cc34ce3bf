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

A logistic combiner fuses them into one score. Its coefficients, the operating
threshold and each cue's range over bona fide palms (outside it, a surface is not
live) ship as data (liveness_model.json), fitted on development seeds over many
simulated rigs by scripts/train_liveness.py; the reported error rates come from
other seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from device.calibration.flatfield import PALM_DISTANCE_MM, FlatField
from device.hardware import patterns
from device.vision.roi import CROP_PX, Hand
from device.vision.scales import Scales

WORK_PX = 96  # the shape cues work on a small crop: relief is not fine-grained
#: the ring spread (flatfield.ring_spread) of the nominal rig (a 30 mm ring at 125 mm). The
#: relief a ring shows grows with its spread; relief is divided by a calibration's spread and
#: multiplied by this, so the combiner reads every ring's relief as the nominal ring's.
FITTED_RING_SPREAD = 0.858

#: crop pixels per frame pixel (roi.Hand.zoom) of the median palm through the nominal lens at the
#: nominal distance. The texture cues' finest band is one frame pixel wide, whatever the lens and
#: the distance: a palm small in the frame is enlarged more in the crop, and its finest detail
#: spreads over more crop pixels.
NOMINAL_ZOOM = 1.75

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
    #: per cue, the standardised range bona fide palms gave in training, widened by
    #: SUPPORT_MARGIN: a surface outside it on any cue is no palm the combiner has seen, and a
    #: quadratic combiner must not be trusted out there (a dark screen's noise once read as
    #: relief and veins together and scored as live)
    support: dict[str, tuple[float, float]] = field(default_factory=dict)

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
            support={k: (float(lo), float(hi)) for k, (lo, hi) in d.get("support", {}).items()},
        )

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

    def score(self, cues: Mapping[str, float]) -> float:
        return self.score_standardised(self.standardised(cues))

    def score_standardised(self, xs: Mapping[str, float]) -> float:
        if self.outside(xs) is not None:
            return 0.0
        terms = expand(xs)
        z = self.bias + sum(self.weights[k] * terms[k] for k in self.weights)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


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
    """The full-resolution palm crop of the lit flood frame (the work crop would smooth texture away)."""
    return Scales(
        cv2.warpAffine(
            lit_flood,
            hand.crop_matrix(CROP_PX),
            (CROP_PX, CROP_PX),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    )


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
    # The card was lit at its own distance; a palm is judged at PALM_DISTANCE_MM, where the
    # ring's light is weaker by the square of the distances (a card at 100 mm otherwise made
    # every surface read two thirds as bright as on the nominal rig's card at 125 mm).
    albedo = _median(ratio[inner]) * flat.card_albedo * (PALM_DISTANCE_MM / flat.card_distance_mm) ** 2
    # Sector by sector against the flat fields: log ratios, each relative to their mean. The
    # frames are smoothed well below the palm's relief (eminences span a quarter of the crop),
    # above the noise; the flat fields are smooth already.
    roles = flat.lit_roles()
    logs = np.empty((len(roles), WORK_PX, WORK_PX), np.float32)
    for i, role in enumerate(roles):
        r = cv2.GaussianBlur(work(lit[role]), (0, 0), 3.5 * scale) * norm
        r /= np.maximum(work(flat.response[role], cv2.INTER_LINEAR), 1e-6)
        np.log(np.maximum(r, 1e-6), out=logs[i])
    dev = logs - logs.mean(axis=0)
    ring = FITTED_RING_SPREAD / flat.ring_spread if flat.ring_spread else 1.0
    relief = ring * float(np.mean([_plane_residual(d[inner], 2).std() for d in dev]))
    relief_fine = ring * float(
        np.mean([(d - cv2.GaussianBlur(d, (0, 0), 6.0 * scale))[inner].std() for d in dev])
    )
    ambient = cv2.warpAffine(frames[patterns.AMBIENT].astype(np.float32), m, size)
    amb = _median(ambient[inner]) * norm
    return {
        "albedo": albedo,
        "relief": relief,
        "relief_fine": relief_fine,
        "ambient_ratio": float(amb / max(_median(flood[inner]), 1e-9)),
    }


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
    pixels, so the fine bands widen with the zoom to hold the same detail."""
    k = zoom / NOMINAL_ZOOM
    return {
        "veins": texture.band_std(4.0, 12.0, 24) / texture.mean,
        "smooth": texture.band_std(0, 1.0 * k, 16) / max(texture.band_std(1.0 * k, 3.0 * k, 16), 1e-6),
    }


def assess(values: Mapping[str, float], model: Model) -> Liveness:
    xs = model.standardised(values)
    score = model.score_standardised(xs)
    live = score >= model.threshold
    why: list[str] = []
    if not live:
        # Name the cue that pulled hardest toward "attack" (or lies outside any palm's range),
        # for a person reading the verdict.
        worst = model.outside(xs)
        if worst is None:
            terms = expand(xs)
            pulls = {k: model.weights[k] * terms[k] for k in FEATURES if k in model.weights}
            worst = min(pulls, key=lambda k: pulls[k])
        why.append(f"{worst}_not_skin")
    return Liveness(
        live=live, score=round(score, 4), reasons=why, cues={k: round(v, 6) for k, v in values.items()}
    )


def default_model() -> Model:
    return Model.load()
