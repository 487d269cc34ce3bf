"""Taking a capture: meter the palm on the presence stream, then the burst under every pattern.

Exposure and gain are chosen for the palm, not for the background: the flood and
ambient presence frames find the hand, and its grey level sets the exposure.
Short exposures first (a hovering hand moves), gain only beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device.config import CameraConfig
from device.hardware import patterns
from device.hardware.camera import Camera, Frame, LedSwitch, capture_burst
from device.vision.roi import segment

TARGET_P50 = 110.0  # palm median grey in the flood frame
MOTION_SAFE_US = 4000  # longer exposures smear a hovering hand


@dataclass(frozen=True)
class Settings:
    exposure_us: int
    gain: float


def choose(current: Settings, palm_p50: float, cfg: CameraConfig) -> Settings:
    """Exposure and gain that bring the palm to the target grey level."""
    want = current.exposure_us * current.gain * TARGET_P50 / max(palm_p50, 1.0)
    exposure = min(max(want / cfg.gain_min, cfg.exposure_min_us), MOTION_SAFE_US, cfg.exposure_max_us)
    gain = min(max(want / exposure, cfg.gain_min), cfg.gain_max)
    if exposure * gain < want * 0.98:  # still too dark: use the longest exposure the config allows
        exposure = min(want / gain, cfg.exposure_max_us)
    return Settings(int(exposure), round(float(gain), 3))


#: where metering starts when the last settings show no palm: the nominal palm at the nominal
#: distance, then a far or dark one
LADDER = (Settings(exposure_us=2000, gain=2.0), Settings(exposure_us=MOTION_SAFE_US, gain=6.0))


def meter(camera: Camera, ring: LedSwitch, start: Settings, cfg: CameraConfig) -> Settings:
    """Flood and ambient presence frames; the settings that bring the palm to the target.

    Starts from ``start`` (the last palm's settings: the next is usually alike); where those
    show no palm (a far hand after a near one was metered short), climbs :data:`LADDER`.
    """
    for settings in (start, *(s for s in LADDER if s != start)):
        p50 = _palm_level(camera, ring, settings)
        if p50 is not None:
            return choose(settings, p50, cfg)
    return start


def _palm_level(camera: Camera, ring: LedSwitch, settings: Settings) -> float | None:
    """The palm's median grey in a flood frame at ``settings``; None where no palm stands out."""
    ambient, flood = (
        f.pixels
        for f in capture_burst(
            camera=camera,
            ring=ring,
            patterns=[patterns.AMBIENT, patterns.FLOOD],
            exposure_us=settings.exposure_us,
            gain=settings.gain,
            stream="lores",
        )
    )
    lit = np.maximum(flood.astype(np.float32) - ambient, 0)
    try:
        hand = segment(lit)
        return None if hand is None else float(np.median(flood[hand.mask > 0]))
    finally:
        for buffer in (ambient, flood, lit):
            buffer.fill(0)


def take(camera: Camera, ring: LedSwitch, settings: Settings, n_sectors: int) -> list[Frame]:
    return capture_burst(
        camera=camera,
        ring=ring,
        patterns=patterns.all_patterns(n_sectors),
        exposure_us=settings.exposure_us,
        gain=settings.gain,
    )
