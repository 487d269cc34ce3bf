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

from device.vision import reasons as R
from device.vision.roi import CROP_PX, Hand

#: palm inscribed radius as a fraction of the frame width: nearer than this is too close
RADIUS_MIN, RADIUS_MAX = 0.10, 0.33
#: palm centre offset as a fraction of the frame size
OFF_CENTRE_MAX = 0.28
#: grey levels of the palm in the flood frame
DARK_P50, BRIGHT_P50, CLIP_LEVEL, CLIP_FRACTION = 35.0, 235.0, 250, 0.03
#: relative band-pass energy on the normalised crop: below these, blurred or vein-less
FOCUS_MIN = 0.0029
VEINS_MIN = 0.006
#: burst motion, in frame pixels between the first and last frame
MOTION_MAX_PX = 4.0


@dataclass(frozen=True)
class Quality:
    ok: bool
    score: float
    reasons: list[str]
    measures: dict[str, float] = field(default_factory=dict)


def focus(crop: np.ndarray) -> float:
    """Fine detail relative to brightness on the normalised crop (creases and skin texture)."""
    f = crop.astype(np.float32)
    band = cv2.GaussianBlur(f, (0, 0), 1.0) - cv2.GaussianBlur(f, (0, 0), 3.0)
    return float(band[8:-8, 8:-8].std() / max(float(f.mean()), 1.0))


def veins(crop: np.ndarray) -> float:
    """Contrast at the scale of palm veins (2 to 4 mm wide) relative to brightness."""
    f = crop.astype(np.float32)
    band = cv2.GaussianBlur(f, (0, 0), 4.0) - cv2.GaussianBlur(f, (0, 0), 12.0)
    return float(band[24:-24, 24:-24].std() / max(float(f.mean()), 1.0))


def exposure(frame: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Grey levels of the palm in the raw frame: median, clipping, dynamic range."""
    values = frame[mask > 0]
    if values.size == 0:
        return {"p50": 0.0, "clipped": 0.0, "range": 0.0}
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    return {"p50": float(p50), "clipped": float(np.mean(values >= CLIP_LEVEL)), "range": float(p99 - p1)}


def motion_px(a: np.ndarray, b: np.ndarray) -> float:
    """Shift between two frames of a burst (phase correlation on a quarter-size image)."""
    sa = cv2.resize(a.astype(np.float32), (a.shape[1] // 4, a.shape[0] // 4), interpolation=cv2.INTER_AREA)
    sb = cv2.resize(b.astype(np.float32), (b.shape[1] // 4, b.shape[0] // 4), interpolation=cv2.INTER_AREA)
    win = cv2.createHanningWindow((sa.shape[1], sa.shape[0]), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(sa, sb, win)
    return 4.0 * math.hypot(dx, dy)


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good`` (either order), linear between."""
    if good == bad:
        return 1.0
    return float(min(1.0, max(0.0, (value - bad) / (good - bad))))


def assess(*, frame: np.ndarray, crop: np.ndarray, hand: Hand | None, moved_px: float = 0.0) -> Quality:
    """Judge one capture: ``frame`` is the raw flood frame, ``crop`` the normalised palm crop of
    the lit image (flood minus ambient), ``moved_px`` the shift across the burst."""
    if hand is None:
        return Quality(False, 0.0, [R.NO_HAND], {})
    h, w = frame.shape
    m: dict[str, float] = {}
    why: set[str] = set()
    radius = hand.radius / w
    m["radius"] = radius
    dx = (hand.centre[0] - w / 2) / w
    dy = (hand.centre[1] - h / 2) / h
    m["offset"] = math.hypot(dx, dy)
    m["fingers"] = float(hand.fingers)
    ex = exposure(frame, hand.mask)
    m.update({f"exposure_{k}": v for k, v in ex.items()})
    m["focus"] = focus(crop)
    m["veins"] = veins(crop)
    m["motion_px"] = moved_px
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
    # Fingers can only be judged when they are in view (the whole outline but the arm); a fist
    # shows no notch between fingers at all.
    if hand.outline_in_view and hand.fingers == 0:
        why.add(R.OPEN_HAND)
    if ex["p50"] < DARK_P50:
        why.add(R.TOO_DARK)
    if ex["p50"] > BRIGHT_P50 or ex["clipped"] > CLIP_FRACTION:
        why.add(R.TOO_BRIGHT)
    if moved_px > MOTION_MAX_PX:
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
        _ramp(moved_px, MOTION_MAX_PX * 1.5, MOTION_MAX_PX * 0.4),
        _ramp(m["focus"], FOCUS_MIN * 0.7, FOCUS_MIN * 1.8),
        _ramp(m["veins"], VEINS_MIN * 0.7, VEINS_MIN * 2.0),
        0.0 if why else 1.0,
    ]
    score = (
        float(np.prod(parts[:-1]) ** (1 / 6)) if not why else min(float(np.prod(parts[:-1]) ** (1 / 6)), 0.49)
    )
    return Quality(ok=not why, score=round(score, 4), reasons=R.ordered(why), measures=m)


def crop(image: np.ndarray, hand: Hand, size: int = CROP_PX) -> np.ndarray:
    """The normalised palm crop of an image (float32 kept for lit images)."""
    return cv2.warpAffine(
        image, hand.crop_matrix(size), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
