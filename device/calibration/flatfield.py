"""Flat fields: a matte grey card shown to the ring sector by sector.

For each LED pattern, the card's response (pattern frame minus ambient frame) per
unit of exposure and gain: how the ring lights a flat, frontal surface of known
albedo at a known distance. Liveness divides a palm's sector frames by these, so
that what remains is the surface's own shape and reflectance, not the ring's
fall-off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from device.hardware import patterns


@dataclass(frozen=True, eq=False)
class FlatField:
    """Per-pattern response of a grey card, DN per (us x gain), smoothed."""

    response: Mapping[str, np.ndarray]  # role -> float32 (H, W)
    card_albedo: float
    card_distance_mm: float

    @property
    def roles(self) -> list[str]:
        return list(self.response)

    def lit_roles(self) -> list[str]:
        return [r for r in self.response if r.startswith("sector-")]


def measure(
    frames: Mapping[str, np.ndarray],
    *,
    exposure_us: int,
    gain: float,
    card_albedo: float,
    card_distance_mm: float,
) -> FlatField:
    """Flat fields from one burst of the grey card (roles as the LED patterns, with ambient)."""
    ambient = frames[patterns.AMBIENT].astype(np.float32)
    out = {}
    for role, frame in frames.items():
        if role == patterns.AMBIENT:
            continue
        lit = np.maximum(frame.astype(np.float32) - ambient, 0)
        # The card has no texture: smoothing removes sensor noise and dust, not information.
        out[role] = cv2.GaussianBlur(lit, (0, 0), 4) / float(exposure_us * gain)
    return FlatField(response=out, card_albedo=card_albedo, card_distance_mm=card_distance_mm)
