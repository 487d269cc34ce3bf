"""Flat fields: a matte grey card shown to the ring sector by sector.

For each LED pattern, the card's response (pattern frame minus ambient frame) per
unit of exposure and gain: how the ring lights a flat, frontal surface of known
albedo at a known distance. Liveness divides a palm's sector frames by these, so
that what remains is the surface's own shape and reflectance, not the ring's
fall-off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: the lens the checks' size limits were set for: a focal length of 380 px on a 640 px wide
#: frame (the NoIR Camera Module 2's 3.04 mm lens)
NOMINAL_FOCAL_OF_WIDTH = 380 / 640
#: the distance a palm is judged at (the middle of the distances quality accepts), mm
PALM_DISTANCE_MM = 125.0
#: how far off the lens's axis the ring's spread is measured, radians: near the axis a sector's
#: share of the light changes in proportion to the angle, whatever the lens's field of view
SPREAD_FIELD_RAD = 0.3


@dataclass(frozen=True, eq=False)
class FlatField:
    """Per-pattern response of a grey card, DN per (us x gain), smoothed."""

    response: Mapping[str, np.ndarray]  # role -> float32 (H, W)
    card_albedo: float
    card_distance_mm: float
    #: the lens's focal length in frame pixels, from the calibration's scale (None: not measured)
    focal_px: float | None = None
    #: how differently the sectors light a surface as it tilts (see ring_spread); None: not known
    ring_spread: float | None = None

    @property
    def roles(self) -> list[str]:
        return list(self.response)

    def lit_roles(self) -> list[str]:
        return [r for r in self.response if r.startswith("sector-")]


def ring_spread(
    tables: Mapping[str, np.ndarray], width: int, height: int, focal_px: float, card_distance_mm: float
) -> float:
    """How far apart the ring's sectors light a palm, measured on the grey card.

    Photometric stereo sees a palm's relief by how differently the sectors light a surface
    as it tilts; that grows with the angle between their light directions, which is about
    the ring's radius over the palm's distance. On the card, the same angle makes each
    sector's share of the full ring's light change across the view: the slope of that share
    (relative to its mean, per radian off the lens's axis, within SPREAD_FIELD_RAD) is in
    proportion to ring radius over card distance. Scaled to a palm at PALM_DISTANCE_MM, it
    is what the relief cue is divided by. A 30 mm ring of 4 sectors: about 0.86; 15 mm: 0.45.
    ``tables``: the flood and sector responses on a grid of cells over the frame.
    """
    flood = np.asarray(tables["flood"], np.float64)
    rows, cols = flood.shape
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
    ax = ((xs + 0.5) * width / cols - width / 2) / focal_px  # radians off the axis (small angles)
    ay = ((ys + 0.5) * height / rows - height / 2) / focal_px
    near = np.hypot(ax, ay) <= SPREAD_FIELD_RAD
    if near.sum() < 6:  # a lens so narrow that the field holds hardly any cells: use them all
        near = np.ones_like(near)
    a = np.stack([np.ones(int(near.sum())), ax[near], ay[near]], axis=1)
    slopes = []
    for role, table in tables.items():
        if not role.startswith("sector-"):
            continue
        share = (np.asarray(table, np.float64) / np.maximum(flood, 1e-12))[near]
        share /= max(float(share.mean()), 1e-12)
        _, gx, gy = np.linalg.lstsq(a, share, rcond=None)[0]
        slopes.append(math.hypot(gx, gy))
    return float(np.mean(slopes)) * card_distance_mm / PALM_DISTANCE_MM
