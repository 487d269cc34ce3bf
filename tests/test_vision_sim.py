"""The vision pipeline on the simulated scanner: presence, guidance, crop, quality reasons."""

from __future__ import annotations

import math

import numpy as np

from device.clock import FakeClock
from device.config import Config
from device.hardware import patterns
from device.sim.scanner import SimulatedScanner
from device.sim.scene import Scenario, fixed, make_scene, shoppers
from device.sim.sheet import render_burst
from device.vision import presence
from device.vision import reasons as R
from device.vision.liveness import lit_frames
from device.vision.pipeline import analyse_burst
from device.vision.roi import CROP_PX, segment

ALL = patterns.all_patterns(4)


def frames_of(config: Config, kind: str, seed: int, **kw: object) -> dict[str, np.ndarray]:
    return {
        f.leds or "": f.pixels
        for f in render_burst(
            config,
            make_scene(kind, seed, **kw),
            ALL,  # type: ignore[arg-type]
            exposure_us=2000,
            gain=2.0,
        )
    }


def test_presence_notices_a_hand_arriving_on_the_dim_ring(config: Config) -> None:
    events = shoppers(3, 1, kinds=("genuine",), condition="shop")
    clock = FakeClock()
    scenario = Scenario(events, start_ns=clock.monotonic_ns())
    seen = []
    with SimulatedScanner(config=config, scenes=scenario, clock=clock) as s:
        s.camera.set_manual(exposure_us=4000, gain=2.0)
        s.ring.dim(config.leds.idle_level)  # the idle glow stays on: it is below the eye-safety level
        bg = presence.Background()
        previous = None
        while clock.monotonic_ns() - scenario.start_ns < 4e9:
            frame = s.camera.preview()
            previous = presence.detect(frame.pixels, bg, previous)
            seen.append(((frame.timestamp_ns - scenario.start_ns) / 1e9, previous.present))
        assert s.ring.cutoffs == 0
    # Times are exposure starts: a frame begun a frame period before the hand arrives sees it
    # in its later rows (rolling shutter).
    period = 1 / config.camera.frame_rate
    first = next(t for t, present in seen if present)
    assert events[0].start_s - period <= first <= events[0].start_s + 0.5
    assert not any(present for t, present in seen if t < events[0].start_s - period)


def test_presence_guides_distance_and_centring() -> None:
    bg = presence.Background()
    empty = np.full((480, 640), 10, np.uint8)
    for _ in range(presence.Background.WARM_UP):
        assert presence.detect(empty, bg).reasons == [R.NO_HAND]
    assert presence.detect(empty, bg).reasons == [R.NO_HAND]
    far = empty.copy()
    far[185:295, 265:375] = 120
    assert R.TOO_FAR in presence.detect(far, bg).reasons
    near = empty.copy()
    near[20:470, 20:630] = 120
    assert R.TOO_CLOSE in presence.detect(near, bg).reasons
    aside = empty.copy()
    aside[100:380, 0:200] = 120
    p = presence.detect(aside, bg)
    assert p.present and R.OFF_CENTRE in p.reasons
    moved = empty.copy()
    moved[100:380, 60:260] = 120
    assert R.HOLD_STILL in presence.detect(moved, bg, p).reasons


def test_segmentation_finds_the_palm_and_the_crop_is_normalised(config: Config) -> None:
    for seed in range(5):
        scene = make_scene("genuine", 300 + seed, motion="still")
        f = frames_of(config, "genuine", 300 + seed, motion="still")
        hand = segment(lit_frames(f)[patterns.FLOOD])
        assert hand is not None and hand.blobs == 1
        pose = scene.objects[0].pose
        # The palm centre projects where the pose puts it (within a fifth of the palm radius).
        u = config.sim.focal_px * pose.x / pose.z + (640 - 1) / 2
        v = config.sim.focal_px * pose.y / pose.z + (480 - 1) / 2
        assert math.hypot(hand.centre[0] - u, hand.centre[1] - v) < 0.35 * hand.radius
        m = hand.crop_matrix()
        centre = m @ np.array([hand.centre[0], hand.centre[1], 1.0])
        assert np.allclose(centre, [CROP_PX / 2, CROP_PX / 2])


def test_quality_reasons_on_simulated_scenes(config: Config) -> None:
    def reasons(kind: str, seed: int, **kw: object) -> list[str]:
        f = frames_of(config, kind, seed, **kw)
        return analyse_burst(f, exposure_us=2000, gain=2.0, flat=None, model=None).quality.reasons

    assert reasons("genuine", 11, motion="still") == []
    assert R.NO_HAND in reasons("empty", 11)
    assert R.PARTIAL_HAND in reasons("partial_hand", 11)
    assert R.TWO_HANDS in reasons("two_hands", 11)
    assert R.HOLD_STILL in reasons("genuine", 11, motion="fast")
    assert R.TOO_FAR in reasons("genuine", 12, distance_mm=330.0, motion="still")


def test_burst_motion_is_measured(config: Config) -> None:
    still = frames_of(config, "genuine", 20, motion="still")
    fast = frames_of(config, "genuine", 20, motion="fast")
    a = analyse_burst(still, exposure_us=2000, gain=2.0, flat=None, model=None).quality.measures["motion_px"]
    b = analyse_burst(fast, exposure_us=2000, gain=2.0, flat=None, model=None).quality.measures["motion_px"]
    assert a < 1.0 and b > 4.0


def test_a_scene_fixed_in_time_keeps_its_hand(config: Config) -> None:
    clock = FakeClock()
    scene = make_scene("genuine", 5)
    with SimulatedScanner(config=config, scenes=fixed(scene, clock.monotonic_ns()), clock=clock) as s:
        s.camera.set_manual(exposure_us=2000, gain=2.0)
        assert s.camera.preview().pixels.shape == (240, 320)
