"""Quality of a capture: focus, exposure, position and distance, motion, an open hand, visible veins.

Each measure is a pure function of the frames; ``assess`` combines them into a
score in [0, 1] and the reasons (device.vision.reasons) a shopper can act on.
Thresholds are physical where they can be (fractions of the frame, grey levels)
and were set on simulated development scenes, then checked on real captures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from device.calibration.flatfield import NOMINAL_FOCAL_OF_WIDTH
from device.vision import reasons as R
from device.vision.roi import CROP_PX, NOMINAL_ZOOM, Hand
from device.vision.scales import Scales

#: palm inscribed radius as a fraction of the frame width: nearer than this is too close. Farther
#: than RADIUS_MIN (about 160 mm for a mid-sized palm), the ring's sectors light it from nearly
#: the same direction and photometric stereo loses the palm's relief: live palms were refused
#: there, so the shopper is guided nearer instead. These are for the nominal lens
#: (flatfield.NOMINAL_FOCAL_OF_WIDTH): another lens shows the same palm at the same distance
#: larger or smaller, and its view_scale undoes that.
RADIUS_MIN, RADIUS_MAX = 0.13, 0.33
#: palm centre offset as a fraction of the frame size
OFF_CENTRE_MAX = 0.28
#: grey levels of the palm in the flood frame
DARK_P50, BRIGHT_P50, CLIP_LEVEL, CLIP_FRACTION = 35.0, 235.0, 250, 0.03
#: relative band-pass contrast on the normalised crop: below these, blurred or vein-less. FOCUS_MIN
#: lies between the sharpest Gaussian-blurred (sigma 3 px) copy of the 120 real 940 nm captures
#: (0.0025) and the least sharp capture itself (0.0032); simulated palms start at 0.0037
FOCUS_MIN = 0.0028
VEINS_MIN = 0.006
#: burst motion, in frame pixels between the flood frame and the sector frames (about 70 ms):
#: photometric stereo compares frames pixel by pixel, and motion makes relief of its own. At
#: 1.5 px, a tenth of hovering palms were turned away; at 3 px the error rates hold
#: (palm eval counts attacks whatever their quality). For the nominal lens, like the sizes: a
#: longer lens shows the same sway as more pixels of a larger palm, and the relief cue works on
#: the palm's crop, so motion is judged in the nominal lens's pixels
MOTION_MAX_PX = 3.0


@dataclass(frozen=True)
class Quality:
    ok: bool
    score: float
    reasons: list[str]
    measures: dict[str, float] = field(default_factory=dict)


def _scales(crop: np.ndarray | Scales) -> Scales:
    return crop if isinstance(crop, Scales) else Scales(crop)


def focus(crop: np.ndarray | Scales, zoom: float = NOMINAL_ZOOM) -> float:
    """Fine detail relative to brightness on the normalised crop (creases and skin texture), as a
    robust spread: the palm's outline in a corner of the crop is an edge that blurring leaves
    strong in this band, and a blurred palm at the frame's edge passed on its outline alone.

    The band is 1 to 3 crop pixels at the nominal zoom (roi.NOMINAL_ZOOM); a palm enlarged more in
    its crop (``zoom``: a wide lens, a far palm) holds no detail finer than its frame pixels, so
    the band widens with the zoom: else a sharp but small palm read as out of focus (a 280 px lens
    with palms at 130 to 200 mm: a third of them, issue #14)."""
    s = _scales(crop)
    k = max(1.0, zoom / NOMINAL_ZOOM)
    return s.band_spread(1.0 * k, 3.0 * k, 8) / s.mean


def veins(crop: np.ndarray | Scales) -> float:
    """Contrast at the scale of palm veins (2 to 4 mm wide) relative to brightness."""
    s = _scales(crop)
    return s.band_std(4.0, 12.0, 24) / s.mean


def _percentiles(hist: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Percentiles of integer grey levels from their histogram, interpolated as numpy's default."""
    cum = np.cumsum(hist)
    n = int(cum[-1])
    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        lo = math.floor(pos)
        v_lo = int(np.searchsorted(cum, lo, side="right"))  # the grey level of the lo-th sorted value
        v_hi = int(np.searchsorted(cum, min(lo + 1, n - 1), side="right"))
        out.append(v_lo + (pos - lo) * (v_hi - v_lo))
    return out


def exposure(frame: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Grey levels of the palm in the raw 8-bit frame: median, clipping, dynamic range."""
    hist = cv2.calcHist([frame], [0], mask.astype(np.uint8, copy=False), [256], [0, 256]).ravel()
    n = float(hist.sum())
    if n == 0:
        return {"p50": 0.0, "clipped": 0.0, "range": 0.0}
    p1, p50, p99 = _percentiles(hist, (1, 50, 99))
    return {"p50": float(p50), "clipped": float(hist[CLIP_LEVEL:].sum() / n), "range": float(p99 - p1)}


def motion_px(a: np.ndarray, b: np.ndarray | list[np.ndarray]) -> float:
    """Shift between two frames of a burst (phase correlation on a quarter-size image); ``b`` may
    be several frames that together light the scene like ``a`` (the sector frames): their sum."""
    size = (a.shape[1] // 4, a.shape[0] // 4)

    def quarter(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img.astype(np.float32, copy=False), size, interpolation=cv2.INTER_AREA)

    sa = quarter(a)
    sb = sum((quarter(x) for x in b), np.zeros_like(sa)) if isinstance(b, list) else quarter(b)
    win = cv2.createHanningWindow(size, cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(sa, sb, win)
    return 4.0 * math.hypot(dx, dy)


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good`` (either order), linear between."""
    if good == bad:
        return 1.0
    return float(min(1.0, max(0.0, (value - bad) / (good - bad))))


def view_scale(focal_px: float | None, width: int) -> float:
    """How much larger than the nominal lens this one shows things (1 when its focal length is unknown)."""
    return 1.0 if focal_px is None else focal_px / width / NOMINAL_FOCAL_OF_WIDTH


def assess(
    *,
    frame: np.ndarray,
    crop: np.ndarray | Scales,
    hand: Hand | None,
    moved_px: float = 0.0,
    focal_px: float | None = None,
) -> Quality:
    """Judge one capture: ``frame`` is the raw flood frame, ``crop`` the normalised palm crop of
    the lit image (flood minus ambient), ``moved_px`` the shift across the burst, ``focal_px``
    the lens's focal length from the calibration (sizes are judged as the nominal lens sees them)."""
    if hand is None:
        return Quality(False, 0.0, [R.NO_HAND], {})
    h, w = frame.shape
    m: dict[str, float] = {}
    why: set[str] = set()
    view = view_scale(focal_px, w)
    radius = hand.radius / w / view
    m["radius"] = radius
    dx = (hand.centre[0] - w / 2) / w
    dy = (hand.centre[1] - h / 2) / h
    m["offset"] = math.hypot(dx, dy)
    m["fingers"] = float(hand.fingers)
    # Every other pixel in each direction, with the segmentation's own half-resolution mask.
    sub = frame[: hand.small_mask.shape[0] * 2 : 2, : hand.small_mask.shape[1] * 2 : 2]
    ex = exposure(np.ascontiguousarray(sub), hand.small_mask)
    m.update({f"exposure_{k}": v for k, v in ex.items()})
    scales = _scales(crop)
    m["focus"] = focus(scales, hand.zoom)
    m["veins"] = veins(scales)
    m["motion_px"] = moved_px
    moved = moved_px / view  # as the nominal lens would see it
    if hand.blobs > 1:
        why.add(R.TWO_HANDS)
    if hand.touches_border:
        why.add(R.PARTIAL_HAND)
    if radius < RADIUS_MIN:
        why.add(R.TOO_FAR)
    if radius > RADIUS_MAX:
        why.add(R.TOO_CLOSE)
    if max(abs(dx), abs(dy)) > OFF_CENTRE_MAX:
        why.add(R.OFF_CENTRE)
    # Fingers can only be judged when they are in view (the whole outline but the arm, and the
    # frame reaching as far toward them as they are counted); a fist shows no notch between
    # fingers at all. An open hand whose fingers leave the frame is too close or partly out of it.
    if hand.outline_in_view and hand.fingers == 0:
        if hand.fingers_in_view(w, h):
            why.add(R.OPEN_HAND)
        elif R.TOO_CLOSE not in why:
            why.add(R.PARTIAL_HAND)
    if ex["p50"] < DARK_P50:
        why.add(R.TOO_DARK)
    if ex["p50"] > BRIGHT_P50 or ex["clipped"] > CLIP_FRACTION:
        why.add(R.TOO_BRIGHT)
    if moved > MOTION_MAX_PX:
        why.add(R.HOLD_STILL)
    if m["focus"] < FOCUS_MIN:
        why.add(R.OUT_OF_FOCUS)
    if m["veins"] < VEINS_MIN and R.OUT_OF_FOCUS not in why:
        why.add(R.NO_VEINS)
    parts = [
        _ramp(radius, RADIUS_MIN * 0.8, RADIUS_MIN * 1.3)
        * _ramp(radius, RADIUS_MAX * 1.2, RADIUS_MAX * 0.85),
        _ramp(max(abs(dx), abs(dy)), OFF_CENTRE_MAX * 1.3, OFF_CENTRE_MAX * 0.6),
        _ramp(ex["p50"], DARK_P50 * 0.7, DARK_P50 * 1.8) * _ramp(ex["clipped"], CLIP_FRACTION * 2, 0.0),
        _ramp(moved, MOTION_MAX_PX * 1.5, MOTION_MAX_PX * 0.4),
        _ramp(m["focus"], FOCUS_MIN * 0.7, FOCUS_MIN * 1.8),
        _ramp(m["veins"], VEINS_MIN * 0.7, VEINS_MIN * 2.0),
        0.0 if why else 1.0,
    ]
    score = (
        float(np.prod(parts[:-1]) ** (1 / 6)) if not why else min(float(np.prod(parts[:-1]) ** (1 / 6)), 0.49)
    )
    return Quality(ok=not why, score=round(score, 4), reasons=R.ordered(why), measures=m)


def crop(image: np.ndarray, hand: Hand, size: int = CROP_PX) -> np.ndarray:
    """The normalised palm crop of an image (float32 kept for lit images).

    A palm larger in the frame than its crop (a long lens, a near palm: crop pixels per frame pixel
    under 1) is smoothed first to the crop's own resolution: sampled as it is, each crop pixel would
    keep one frame pixel's grain and fine detail, folded into the bands the checks measure (on a
    560 px lens at 80 mm that read as texture on a fake hand, issue #14)."""
    m = hand.crop_matrix(size)
    scale = float(np.hypot(m[0, 0], m[0, 1]))  # crop pixels per frame pixel
    if scale < 1.0:
        sigma = 0.5 * math.sqrt(1.0 / (scale * scale) - 1.0)
        image = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
