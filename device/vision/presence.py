"""Noticing a hand on the presence stream, and guiding it, for a fraction of a millisecond a frame.

The presence stream alternates two frames: the ring glowing dim, and the ring dark.
Their difference is the ring's own light coming back, and by the inverse square law
only something near the scanner returns any: a hand 6 to 25 cm away stands out
whatever the shop's light does, and the ceiling, the shopper's face or a window
behind do not (a hand lit by the shop as brightly as the ceiling behind it would be
invisible to a single frame). The dark frame is also compared with a slowly learned
picture of the empty scene, for what returns no ring light but changes the view (a
phone's screen: dark at 850 nm, it hides the lit shop behind it). The frames are
reduced to 160 pixels across first: presence needs no detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from device.vision import reasons as R

WORK_W = 160
#: grey levels of ring light returned (lit minus dark frame) that count as "something near"
ACTIVE_LEVEL = 5
#: grey levels the dark frame differs from the empty scene to count as "something changed"
DIFF_LEVEL = 12
#: share of the frame that must be near or changed to count as a hand; below EMPTY_AREA the
#: scene is empty and is learned
PRESENT_AREA, EMPTY_AREA = 0.025, 0.005
#: share of the frame a hand returns ring light from at the farthest and nearest useful
#: distance (about 200 mm and 70 mm for a mid-sized hand, measured on the simulator)
AREA_MIN, AREA_MAX = 0.2, 0.8
#: guidance: blob centre offset (fraction of the frame) and movement (fraction per frame pair)
OFF_CENTRE = 0.2
MOVING = 0.05
_OPEN = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))


@dataclass(frozen=True)
class Presence:
    present: bool
    area: float  # share of the frame that differs from the empty scene
    centre: tuple[float, float]  # fractions of width and height
    reasons: list[str]  # guidance while present


class Background:
    """The empty scene, learned while nothing is there (exponential average)."""

    WARM_UP = 8  # frames learned quickly after a start or a change of the idle light

    def __init__(self, rate: float = 0.05) -> None:
        self.rate = rate
        self.image: np.ndarray | None = None
        self.learned = 0

    def reset(self) -> None:
        """Forget the empty scene (after the idle light changed)."""
        self.image = None
        self.learned = 0

    @property
    def warm(self) -> bool:
        return self.learned >= self.WARM_UP

    def update(self, small: np.ndarray) -> None:
        if self.image is None or self.image.shape != small.shape:
            self.image = small.astype(np.float32)
            self.learned = 1
            return
        cv2.accumulateWeighted(small, self.image, self.rate if self.warm else 0.5)
        self.learned += 1


def reduce(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape
    return cv2.resize(frame, (WORK_W, max(1, h * WORK_W // w)), interpolation=cv2.INTER_AREA)


def detect(
    lit: np.ndarray,
    dark: np.ndarray,
    background: Background,
    previous: Presence | None = None,
    *,
    view_scale: float = 1.0,
) -> Presence:
    """Is a hand over the scanner, and what should it do? ``lit``: a frame with the ring dim,
    ``dark``: the next with the ring off. Learns the empty scene (from dark frames) while empty.
    ``view_scale``: how much larger than the nominal lens this one shows things (quality.view_scale)."""
    dark_small = reduce(dark)
    near = (cv2.subtract(reduce(lit), dark_small) > ACTIVE_LEVEL).view(np.uint8)
    if background.image is not None and background.warm:
        diff = cv2.absdiff(dark_small.astype(np.float32), background.image)
        near |= (diff > DIFF_LEVEL).view(np.uint8)
    mask = cv2.morphologyEx(near, cv2.MORPH_OPEN, _OPEN)  # single noisy pixels are nobody
    m = cv2.moments(mask, binaryImage=True)
    area = m["m00"] / mask.size
    if area < EMPTY_AREA:  # learn only from a clearly empty scene, never from a hand half gone
        background.update(dark_small)
    if area < PRESENT_AREA:
        return Presence(False, area, (0.5, 0.5), [R.NO_HAND])
    h, w = mask.shape
    cx, cy = m["m10"] / m["m00"] / w, m["m01"] / m["m00"] / h
    why = set()
    if area < AREA_MIN * view_scale**2:
        why.add(R.TOO_FAR)
    if area > AREA_MAX * view_scale**2:
        why.add(R.TOO_CLOSE)
    if max(abs(cx - 0.5), abs(cy - 0.5)) > OFF_CENTRE:
        why.add(R.OFF_CENTRE)
    if (
        previous is not None
        and previous.present
        and math.hypot(cx - previous.centre[0], cy - previous.centre[1]) > MOVING
    ):
        why.add(R.HOLD_STILL)
    return Presence(True, area, (cx, cy), R.ordered(why))
