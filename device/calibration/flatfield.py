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

import numpy as np


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
