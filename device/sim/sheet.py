"""Pictures of the simulated scanner for a person to look at: one frame, or every scene under every pattern.

The simulator's output is synthetic, not biometric; these pictures are the only
images the package renders for a person, and only when asked.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.clock import FakeClock
from device.config import Config
from device.hardware import patterns
from device.hardware.camera import Frame, capture_burst
from device.sim.scanner import SimulatedScanner
from device.sim.scene import Scene, fixed


def render_burst(
    config: Config, scene: Scene, pattern_names: tuple[str, ...], *, exposure_us: int, gain: float
) -> list[Frame]:
    """Frames of ``scene`` under each pattern, through the real ring driver and burst call."""
    clock = FakeClock()
    with SimulatedScanner(config=config, scenes=fixed(scene, clock.monotonic_ns()), clock=clock) as scanner:
        frames = capture_burst(
            camera=scanner.camera,
            ring=scanner.ring,
            patterns=pattern_names,
            exposure_us=exposure_us,
            gain=gain,
        )
        scanner.ring.off()
    return frames


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)


def contact_sheet(
    config: Config, scenes: list[Scene], *, exposure_us: int, gain: float, thumb_width: int = 200
) -> np.ndarray:
    """A grid: one row per scene, one column per LED pattern, same exposure throughout."""
    names = patterns.all_patterns(len(config.leds.sector_pins))
    w, h = config.camera.main_size
    tw, th = thumb_width, round(thumb_width * h / w)
    rows = []
    for scene in scenes:
        frames = render_burst(config, scene, names, exposure_us=exposure_us, gain=gain)
        cells = []
        for f in frames:
            cell = cv2.resize(f.pixels, (tw, th), interpolation=cv2.INTER_AREA)
            _label(cell, f"{scene.kind} / {f.leds}")
            cells.append(cell)
        rows.append(np.hstack(cells))
    sheet = np.vstack(rows)
    sheet[::th, :] = 128  # thin grid lines between rows
    sheet[:, ::tw] = 128
    return sheet
