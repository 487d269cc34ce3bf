"""The vision pipeline on the simulated scanner: presence, guidance, crop, quality reasons."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


def _presence_pair(s: SimulatedScanner, level: float) -> tuple[np.ndarray, np.ndarray, int]:
    """What the scan loop watches: a frame with the ring dim, then one with it dark."""
    lit = s.camera.preview(not_before_ns=s.ring.dim(level))
    dark = s.camera.preview(not_before_ns=s.ring.dim(0.0))
    return lit.pixels, dark.pixels, lit.timestamp_ns


@pytest.mark.parametrize(("seed", "light"), [(3, "shop"), (6, "shop"), (11, "dark"), (12, "sunlit")])
def test_presence_notices_a_hand_arriving_and_keeps_seeing_it(config: Config, seed: int, light: str) -> None:
    # In a lit shop a hovering hand can be as bright as the ceiling behind it: seed 6's first
    # shopper was learned into the empty scene by the single-frame detector. In sunlight the
    # ring's dim glow is a small part of what the camera sees.
    events = shoppers(seed, 1, kinds=("genuine",), condition=light)
    event = events[0]
    clock = FakeClock()
    scenario = Scenario(events, start_ns=clock.monotonic_ns())
    seen = []
    with SimulatedScanner(config=config, scenes=scenario, clock=clock) as s:
        s.camera.set_manual(exposure_us=6000, gain=2.0)
        bg = presence.Background()
        previous = None
        while clock.monotonic_ns() - scenario.start_ns < (event.start_s + event.dwell_s) * 1e9:
            lit, dark, t_ns = _presence_pair(s, config.leds.idle_level)
            previous = presence.detect(lit, dark, bg, previous)
            seen.append(((t_ns - scenario.start_ns) / 1e9, previous.present))
        assert s.ring.cutoffs == 0
    # Times are the lit frame's exposure start: a pair begun a frame period or two before the
    # hand arrives sees it in its later rows (rolling shutter).
    period = 1 / config.camera.frame_rate
    first = next(t for t, present in seen if present)
    assert event.start_s - 2 * period <= first <= event.start_s + 0.5
    assert not any(present for t, present in seen if t < event.start_s - 2 * period)
    held = [present for t, present in seen if event.start_s + 0.5 <= t]
    assert len(held) > 10 and all(held)  # seen for as long as it is held out


def test_presence_guides_distance_and_centring() -> None:
    bg = presence.Background()
    dark = np.full((480, 640), 10, np.uint8)
    for _ in range(presence.Background.WARM_UP):
        assert presence.detect(dark, dark, bg).reasons == [R.NO_HAND]
    assert presence.detect(dark, dark, bg).reasons == [R.NO_HAND]

    def lit(rows: slice, cols: slice) -> np.ndarray:
        frame = dark.copy()
        frame[rows, cols] = 60
        return frame

    assert R.TOO_FAR in presence.detect(lit(slice(185, 295), slice(265, 375)), dark, bg).reasons
    assert R.TOO_CLOSE in presence.detect(lit(slice(20, 470), slice(20, 630)), dark, bg).reasons
    p = presence.detect(lit(slice(60, 420), slice(0, 240)), dark, bg)
    assert p.present and R.OFF_CENTRE in p.reasons
    assert R.HOLD_STILL in presence.detect(lit(slice(60, 420), slice(60, 300)), dark, bg, p).reasons
    centred = presence.detect(lit(slice(60, 420), slice(160, 480)), dark, bg)
    assert centred.present and centred.reasons == []


def test_presence_ignores_far_light_changes_and_notices_a_screen_hiding_the_shop() -> None:
    bg = presence.Background()
    dark = np.full((480, 640), 40, np.uint8)
    for _ in range(presence.Background.WARM_UP + 2):
        presence.detect(dark, dark, bg)
    # The whole scene a little brighter in both frames (a light switched on far away): the
    # ring's light returned is still nothing, and the change is under the empty-scene level.
    brighter = dark + np.uint8(8)
    assert not presence.detect(brighter, brighter, bg).present
    # A phone's screen returns no ring light, but in a lit shop its dark glass hides the
    # bright scene behind it: the dark frame changes.
    screen = dark.copy()
    screen[120:360, 200:440] = 12
    assert presence.detect(screen, screen, bg).present


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
