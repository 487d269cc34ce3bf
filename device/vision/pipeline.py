"""One burst in, one verdict out: segmentation, the palm crop, quality and liveness.

Pure: frames (uint8 arrays by role) and the scanner's flat fields in; a frozen
verdict out. The daemon, ``palm check`` and ``palm eval`` all call this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from device.calibration.flatfield import FlatField
from device.hardware import patterns
from device.vision import liveness as L
from device.vision import quality as Q
from device.vision.roi import Hand, segment


@dataclass(frozen=True, eq=False)
class Verdict:
    hand: Hand | None
    quality: Q.Quality
    liveness: L.Liveness | None

    @property
    def accepted(self) -> bool:
        return self.quality.ok and self.liveness is not None and self.liveness.live


def lit_image(frames: Mapping[str, np.ndarray], role: str = patterns.FLOOD) -> np.ndarray:
    """A pattern's frame minus the ambient frame: only the ring's light (sunlight subtracted)."""
    img = frames[role].astype(np.float32)
    if patterns.AMBIENT in frames:
        img = np.maximum(img - frames[patterns.AMBIENT].astype(np.float32), 0)
    return img


def analyse_burst(
    frames: Mapping[str, np.ndarray],
    *,
    exposure_us: int,
    gain: float,
    flat: FlatField | None,
    model: L.Model | None,
) -> Verdict:
    flood = lit_image(frames)
    hand = segment(flood)
    if hand is None:
        return Verdict(None, Q.assess(frame=frames[patterns.FLOOD], crop=flood, hand=None), None)
    sectors = [r for r in frames if r.startswith("sector-")]
    moved = 0.0
    if sectors:
        # The sector frames together light the palm like the flood frame, a few frames later.
        later = sum((lit_image(frames, r) for r in sectors), np.zeros_like(flood))
        moved = Q.motion_px(flood, later)
    crop = Q.crop(flood, hand)
    quality = Q.assess(frame=frames[patterns.FLOOD], crop=crop, hand=hand, moved_px=moved)
    live = None
    if flat is not None and model is not None and sectors and patterns.AMBIENT in frames:
        cues = L.cues(frames, hand, flat, exposure_us=exposure_us, gain=gain)
        live = L.assess(cues, model)
    return Verdict(hand, quality, live)


def analyse_frame(frame: np.ndarray) -> Verdict:
    """A single frame (a capture from another scanner): quality only."""
    hand = segment(frame)
    img = frame.astype(np.float32)
    crop = Q.crop(img, hand) if hand is not None else img
    return Verdict(hand, Q.assess(frame=frame, crop=crop, hand=hand), None)
