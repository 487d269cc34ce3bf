"""Noticing a hand on the presence stream, and guiding it, for a fraction of a millisecond a frame.

With the ring dim, a hand 10 to 20 cm away is lit far more than anything beyond
it (inverse square), so it stands out from a slowly updated picture of the empty
scene. The frame is reduced to 160 pixels across first: presence needs no detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from device.vision import reasons as R

WORK_W = 160
#: grey levels above the empty scene that count as "something there"
DIFF_LEVEL = 12
#: share of the frame a hand covers at the nearest and farthest useful distance
AREA_MIN, AREA_MAX = 0.05, 0.75
#: guidance: blob centre offset (fraction of the frame) and movement (fraction per frame)
OFF_CENTRE = 0.2
MOVING = 0.02


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


def detect(frame: np.ndarray, background: Background, previous: Presence | None = None) -> Presence:
    """Is a hand over the scanner, and what should it do? Learns the background while empty."""
    small = reduce(frame)
    if background.image is None or not background.warm:
        background.update(small)
        return Presence(False, 0.0, (0.5, 0.5), [R.NO_HAND])
    assert background.image is not None
    diff = cv2.absdiff(small.astype(np.float32), background.image)
    mask = (diff > DIFF_LEVEL).astype(np.uint8)
    m = cv2.moments(mask, binaryImage=True)
    area = m["m00"] / mask.size
    if area < 0.025:
        if area < 0.005:  # learn only from a clearly empty scene, never from a hand half gone
            background.update(small)
        return Presence(False, area, (0.5, 0.5), [R.NO_HAND])
    h, w = mask.shape
    cx, cy = m["m10"] / m["m00"] / w, m["m01"] / m["m00"] / h
    why = set()
    if area < AREA_MIN:
        why.add(R.TOO_FAR)
    if area > AREA_MAX:
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
