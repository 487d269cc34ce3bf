"""``palm bench``: how long each stage of the checks takes on this machine, on rendered frames.

Figures, never assertions: a benchmark prints, a person compares. The baseline in
the same run is the burst's own capture time at the configured frame rate.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from device.calibration.flatfield import FlatField
from device.config import Config
from device.evaluation import sim_flat_field
from device.hardware import patterns, sensors
from device.sim.scene import make_scene
from device.sim.sheet import render_burst
from device.vision import liveness as L
from device.vision import presence, quality
from device.vision.pipeline import analyse_burst
from device.vision.roi import Hand, segment


def _segment_and_crop(lit: np.ndarray) -> object:
    hand = segment(lit)
    return quality.crop(lit, hand) if hand is not None else None


def _liveness(frames: dict[str, np.ndarray], hand: Hand, flat: FlatField, model: L.Model) -> object:
    return L.assess(L.cues(frames, hand, flat, exposure_us=2500, gain=2.0), model)


def run_bench(config: Config, *, runs: int = 50) -> dict[str, Any]:
    flat = sim_flat_field(config)
    model = L.default_model()
    names = patterns.all_patterns(len(config.leds.sector_pins))
    stages: dict[str, list[float]] = {
        k: []
        for k in (
            "presence (lit+dark 640x480)",
            "segmentation and crop",
            "quality",
            "liveness",
            "whole burst",
        )
    }
    bg = presence.Background()

    def timed(name: str, fn: Callable[[], object]) -> None:
        t = time.perf_counter()
        fn()
        stages[name].append((time.perf_counter() - t) * 1000)

    for i in range(runs):
        rendered = render_burst(config, make_scene("genuine", 50_000 + i), names, exposure_us=2500, gain=2.0)
        frames = {f.leds or "": f.pixels for f in rendered}
        flood = frames[patterns.FLOOD]
        lit = L.lit_frames(frames)[patterns.FLOOD]
        hand = segment(lit)
        if hand is None:
            continue
        crop = quality.crop(lit, hand)
        timed("presence (lit+dark 640x480)", partial(presence.detect, flood, frames[patterns.AMBIENT], bg))
        timed("segmentation and crop", partial(_segment_and_crop, lit))
        timed("quality", partial(quality.assess, frame=flood, crop=crop, hand=hand))
        timed("liveness", partial(_liveness, frames, hand, flat, model))
        timed(
            "whole burst", partial(analyse_burst, frames, exposure_us=2500, gain=2.0, flat=flat, model=model)
        )
    out = {
        name: {
            "median_ms": round(statistics.median(v), 3),
            "p95_ms": round(statistics.quantiles(v, n=20)[-1] if len(v) > 1 else v[0], 3),
        }
        for name, v in stages.items()
        if v
    }
    rate = sensors.frame_rate(config.camera.frame_rate, config.camera.tuning_file)
    capture_ms = len(names) * 1000.0 / rate
    burst = out["whole burst"]["median_ms"]
    return {
        "stages": out,
        "burst_median_ms": burst,
        "capture_ms": capture_ms,
        "burst_fraction_of_capture": burst / capture_ms,
        "frame_rate": rate,
    }
