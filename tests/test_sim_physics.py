"""The simulator's physics, checked against what light and sensors do."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from device.clock import FakeClock
from device.config import Config
from device.errors import CameraError
from device.hardware import patterns
from device.hardware.camera import Frame, capture_burst
from device.sim import render
from device.sim.camera import SceneRenderer, SimFaults, Wiring
from device.sim.optics import LED_INTENSITY, Optics
from device.sim.pins import LedTimeline
from device.sim.scanner import SimulatedScanner
from device.sim.scene import Placed, Pose, Scene, fixed, make_scene
from device.sim.surfaces import grey_card

ALL = patterns.all_patterns(4)


def optics_of(config: Config) -> Optics:
    return Optics.from_config(config.camera, config.sim, config.leds)


def radiance(config: Config, scene: Scene, pattern: str) -> np.ndarray:
    """Noise-free radiance on the sensor under one pattern."""
    levels = np.array(patterns.levels(pattern, 4), np.float32)
    return SceneRenderer(optics_of(config)).radiance(scene, 0.0, levels, SimFaults(), 3000)


def card_like(scene: Scene, *, albedo: float = 0.5) -> Scene:
    """A grey card in exactly the pose of the scene's object, in the dark."""
    pose = scene.objects[0].pose
    return Scene(kind="card", seed=0, objects=(Placed(grey_card(albedo), pose),), ambient=0.0, background=0.0)


def dark(scene: Scene) -> Scene:
    return dataclasses.replace(scene, ambient=0.0, background=0.0)


def burst(
    config: Config,
    scene: Scene,
    *,
    exposure_us: int = 3000,
    gain: float = 2.0,
    wiring: Wiring | None = None,
    faults: SimFaults | None = None,
) -> dict[str, Frame]:
    clock = FakeClock()
    with SimulatedScanner(
        config=config, scenes=fixed(scene, clock.monotonic_ns()), clock=clock, wiring=wiring, faults=faults
    ) as s:
        frames = capture_burst(camera=s.camera, ring=s.ring, patterns=ALL, exposure_us=exposure_us, gain=gain)
    return {f.leds or "": f for f in frames}


def interior(scene: Scene, config: Config, erode_px: int = 25) -> np.ndarray:
    geom = render.geometry(scene, 0.0, optics_of(config))
    inside = (geom.cover > 0.99).astype(np.uint8)
    return cv2.erode(inside, np.ones((erode_px, erode_px), np.uint8)) > 0


def shading_spread(config: Config, scene: Scene) -> float:
    """How much the sector images of a scene differ beyond the ring's own fall-off (99th pct)."""
    card = card_like(scene)
    m = interior(scene, config)
    ratios = np.stack(
        [
            radiance(config, scene, f"sector-{k}")[m] / radiance(config, card, f"sector-{k}")[m]
            for k in range(4)
        ]
    )
    spread = np.abs(ratios / ratios.mean(axis=0) - 1)
    return float(np.percentile(spread, 99))


def test_flat_print_sector_images_differ_only_by_the_ring_fall_off(config: Config) -> None:
    for seed in (1, 2, 3):
        scene = dark(make_scene("print_flat", seed, motion="still"))
        assert shading_spread(config, scene) < 0.01


def test_a_palm_has_relief_that_sector_images_show(config: Config) -> None:
    for seed in (1, 2, 3):
        scene = dark(make_scene("genuine", seed, motion="still"))
        assert shading_spread(config, scene) > 0.1


def test_lambertian_shading_follows_the_normal(config: Config) -> None:
    """Against each sector's flat field, opposite sectors differ where the surface faces one."""
    optics = optics_of(config)
    leds = optics.led_positions()
    for seed in (4, 5):
        scene = dark(make_scene("genuine", seed, motion="still"))
        card = card_like(scene)
        m = interior(scene, config)
        a = radiance(config, scene, "sector-0")[m] / radiance(config, card, "sector-0")[m]
        b = radiance(config, scene, "sector-2")[m] / radiance(config, card, "sector-2")[m]
        nx, ny, _ = (n[m] for n in render.geometry(scene, 0.0, optics).normal)
        toward = nx * (leds[0, 0] - leds[2, 0]) + ny * (leds[0, 1] - leds[2, 1])
        assert np.corrcoef(np.log(a / b), toward)[0, 1] > 0.8


def test_inverse_square_fall_off(config: Config) -> None:
    optics = optics_of(config)
    near = Scene("card", 0, (Placed(grey_card(), Pose(z=100.0, roll=0.0)),), 0.0, 0.0)
    far = Scene("card", 0, (Placed(grey_card(), Pose(z=150.0, roll=0.0)),), 0.0, 0.0)
    cy, cx = optics.height // 2, optics.width // 2

    def expected(z: float) -> float:  # the flood on an on-axis point of a card facing the lens
        total = 0.0
        for lx, ly, _ in optics.led_positions():
            r2 = lx * lx + ly * ly + z * z
            cos = z / math.sqrt(r2)
            total += LED_INTENSITY * cos * cos / r2
        return total * 0.5 / math.pi

    for scene, z in ((near, 100.0), (far, 150.0)):
        got = float(radiance(config, scene, "flood")[cy - 2 : cy + 3, cx - 2 : cx + 3].mean())
        assert got == pytest.approx(expected(z), rel=0.01)


def test_each_sector_lights_its_own_side_and_a_miswired_ring_swaps_them(config: Config) -> None:
    card = make_scene("card", 1)
    leds = optics_of(config).led_positions()

    def side(frames: dict[str, Frame], k: int) -> np.ndarray:
        img = frames[f"sector-{k}"].pixels.astype(np.float64) - frames["ambient"].pixels
        ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
        return np.array(
            [
                (img * xs).sum() / img.sum() - (img.shape[1] - 1) / 2,
                (img * ys).sum() / img.sum() - (img.shape[0] - 1) / 2,
            ]
        )

    frames = burst(config, card)
    for k in range(4):
        assert side(frames, k) @ leds[k, :2] > 0
    pins = config.leds.sector_pins
    swapped = Wiring((pins[2], pins[1], pins[0], pins[3]))  # sectors 0 and 2 on each other's pins
    frames = burst(config, card, wiring=swapped)
    assert side(frames, 0) @ leds[2, :2] > 0
    assert side(frames, 2) @ leds[0, :2] > 0


def test_a_screen_does_not_answer_the_ring(config: Config) -> None:
    def response(kind: str, seed: int) -> float:
        scene = make_scene(kind, seed, distance_mm=125)
        f = burst(config, scene)
        m = interior(scene, config)
        return float((f["flood"].pixels.astype(float) - f["ambient"].pixels)[m].mean())

    skin = min(response("genuine", seed) for seed in (1, 2))
    assert skin > 60
    for seed in (1, 2, 3):
        assert abs(response("screen", seed)) < 0.05 * skin


def test_ambient_subtraction_makes_a_sunlit_shop_like_a_dark_one(config: Config) -> None:
    fd = burst(config, make_scene("genuine", 5, condition="dark"), exposure_us=2000)
    fs = burst(config, make_scene("genuine", 5, condition="bright"), exposure_us=2000)
    m = interior(make_scene("genuine", 5), config)
    lit_d = fd["flood"].pixels.astype(float) - fd["ambient"].pixels
    lit_s = fs["flood"].pixels.astype(float) - fs["ambient"].pixels
    assert fs["ambient"].pixels[m].mean() > 3 * fd["ambient"].pixels[m].mean() + 5
    assert abs(lit_d[m].mean() - lit_s[m].mean()) < 0.03 * lit_d[m].mean()


def test_a_frame_exposed_across_a_switch_is_a_row_by_row_blend(config: Config) -> None:
    card = make_scene("card", 1)
    clock = FakeClock()
    with SimulatedScanner(config=config, scenes=fixed(card, clock.monotonic_ns()), clock=clock) as s:
        s.camera.set_manual(exposure_us=8000, gain=2.0)
        for _ in range(s.camera.settle_frames + 1):  # behind the queued requests and the sensor delay
            s.camera.capture()
        s.ring.show("ambient")
        s.camera.capture()
        s.ring.show("flood")
        blended = s.camera.capture()  # whatever comes next: exposure began before the switch
        (clean,) = capture_burst(camera=s.camera, ring=s.ring, patterns=["flood"], exposure_us=8000, gain=2.0)
    rows_blend = blended.pixels.mean(axis=1)
    rows_clean = clean.pixels.mean(axis=1)
    assert blended.timestamp_ns < clean.timestamp_ns
    assert rows_blend[:40].mean() < 0.8 * rows_clean[:40].mean()  # the first rows began in the dark
    assert rows_blend[-40:].mean() == pytest.approx(rows_clean[-40:].mean(), rel=0.05)
    assert np.all(np.diff(rows_blend[:200] / rows_clean[:200]) > -0.05)  # brighter row by row


def test_pwm_dimming_counts_as_its_duty_cycle(config: Config) -> None:
    card = make_scene("card", 1, condition="dark")
    clock = FakeClock()
    with SimulatedScanner(config=config, scenes=fixed(card, clock.monotonic_ns()), clock=clock) as s:
        s.camera.set_manual(exposure_us=4000, gain=2.0)
        full = capture_burst(
            camera=s.camera, ring=s.ring, patterns=["flood", "ambient"], exposure_us=4000, gain=2.0
        )
        at = s.ring.dim(0.4)
        half = s.camera.capture(not_before_ns=at)
    lit = full[0].pixels.astype(float).mean() - full[1].pixels.mean()
    assert half.pixels.astype(float).mean() - full[1].pixels.mean() == pytest.approx(0.4 * lit, rel=0.04)


def test_defocus_and_motion_blur_soften_the_image(config: Config) -> None:
    still = make_scene("genuine", 6, distance_mm=125, motion="still", condition="dark")
    m = interior(still, config)

    def sharpness(scene: Scene, faults: SimFaults) -> float:  # on noise-free radiance
        levels = np.ones(4, np.float32)
        img = SceneRenderer(optics_of(config)).radiance(scene, 0.0, levels, faults, 8000)
        return float(cv2.Laplacian(img, cv2.CV_32F)[m].var() / img[m].mean() ** 2)

    sharp = sharpness(still, SimFaults())
    # The fixed-focus NoIR module leaves the factory focused far away: 1 m here.
    assert sharpness(still, SimFaults(focus_shift_mm=875)) < 0.5 * sharp
    fast = make_scene("genuine", 6, distance_mm=125, motion="fast", condition="dark")
    # A smear along one direction leaves the other sharp: about half the energy goes.
    assert sharpness(fast, SimFaults()) < 0.75 * sharp


def test_shot_noise_grows_with_signal_and_the_sensor_clips(config: Config) -> None:
    card = make_scene("card", 1, condition="dark")

    def temporal_var(exposure_us: int) -> tuple[float, float]:
        clock = FakeClock()
        with SimulatedScanner(config=config, scenes=fixed(card, clock.monotonic_ns()), clock=clock) as s:
            a, b = capture_burst(
                camera=s.camera, ring=s.ring, patterns=["flood", "flood"], exposure_us=exposure_us, gain=1.0
            )
        centre = (slice(200, 280), slice(280, 360))
        d = a.pixels[centre].astype(float) - b.pixels[centre]
        return float(a.pixels[centre].mean()), float(d.var() / 2)

    m1, v1 = temporal_var(1000)
    m4, v4 = temporal_var(4000)
    assert 3.5 < m4 / m1 < 4.5
    assert 2.5 < v4 / v1 < 4.5  # shot noise: variance follows the signal
    f = burst(config, card, exposure_us=8000, gain=8.0)["flood"]
    assert f.pixels.max() == 255 and f.pixels.dtype == np.uint8


def test_scenes_are_reproducible_from_their_seed(config: Config) -> None:
    a = burst(config, make_scene("genuine", 11))["flood"].pixels
    b = burst(config, make_scene("genuine", 11))["flood"].pixels
    c = burst(config, make_scene("genuine", 12))["flood"].pixels
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 5


def test_injected_faults(config: Config) -> None:
    card = make_scene("card", 1, condition="dark")
    f = burst(config, card, faults=SimFaults(sector_gain={1: 0.0}))
    assert f["sector-1"].pixels.mean() < f["ambient"].pixels.mean() + 1
    assert f["sector-0"].pixels.mean() > f["ambient"].pixels.mean() + 10
    clock = FakeClock()
    faults = SimFaults()
    with SimulatedScanner(config=config, scenes=fixed(card), clock=clock, faults=faults) as s:
        s.camera.capture()
        faults.camera_gone = True
        with pytest.raises(CameraError, match="stopped delivering frames"):
            s.camera.capture()
        s.camera.close()
        with pytest.raises(CameraError, match="stopped delivering frames"):
            s.camera.start()
        faults.camera_gone = False  # it comes back
        s.camera.start()
        assert s.camera.capture().pixels.shape == (480, 640)


def test_timeline_integrates_levels_over_each_window() -> None:
    t = LedTimeline()
    t.record(17, 1000, 1.0)
    t.record(17, 3000, 0.5)
    t.record(17, 5000, 0.0)
    starts = np.array([0, 1000, 2000, 4000, 6000])
    ends = np.array([1000, 3000, 4000, 6000, 7000])
    assert t.mean_levels(17, starts, ends) == pytest.approx([0.0, 1.0, 0.75, 0.25, 0.0])
    assert t.mean_levels(99, starts, ends) == pytest.approx([0.0] * 5)


def test_a_scenario_is_a_timed_sequence_of_presentations(config: Config) -> None:
    from device.sim.scene import Scenario, shoppers

    events = shoppers(5, 3, kinds=("genuine", "screen", "genuine"))
    assert [e.scene.kind for e in events] == ["genuine", "screen", "genuine"]
    assert events[0].start_s == 1.0 and events[1].start_s > events[0].end_s
    clock = FakeClock()
    scenario = Scenario(events, start_ns=clock.monotonic_ns())
    assert scenario(clock.monotonic_ns())[0].kind == "empty"  # type: ignore[union-attr]
    with SimulatedScanner(config=config, scenes=scenario, clock=clock) as s:
        s.camera.set_manual(exposure_us=3000, gain=2.0)

        def flood_mean_at(t_s: float) -> float:
            clock.advance_to(scenario.start_ns + int(t_s * 1e9))
            frame = s.camera.capture(not_before_ns=s.ring.show("flood"))
            s.ring.off()
            return float(frame.pixels.mean())

        first = events[0]
        before = flood_mean_at(0.5)
        arriving = flood_mean_at(first.start_s + 0.05)
        hovering = flood_mean_at(first.start_s + 1.0)
        scene, t = scenario(scenario.start_ns + int((first.start_s + 1.0) * 1e9))
        assert scene is first.scene and t == pytest.approx(1.0)
        gone = flood_mean_at(first.end_s + 0.1)
    assert hovering > before + 20 and hovering > gone + 20
    assert arriving < hovering  # still far away, coming closer
    # Once over, a presentation keeps only its light: its surfaces are let go.
    assert scenario.events[0].scene.objects == () and scenario.events[0].scene.seed == first.scene.seed
    # A guided shopper is still one presentation; the second has arrived once seen.
    scenario.guided(scenario.start_ns + int((first.start_s + 1.1) * 1e9), ["too_far"])
    scenario(scenario.start_ns + int((first.start_s + 1.5) * 1e9))
    assert scenario.presented == {"genuine": 1}
    scenario(scenario.start_ns + int((events[1].start_s + 0.5) * 1e9))
    assert scenario.presented == {"genuine": 1, "screen": 1}
    # The same seed, the same shoppers.
    again = shoppers(5, 3, kinds=("genuine", "screen", "genuine"))
    assert [(e.start_s, e.dwell_s) for e in again] == [(e.start_s, e.dwell_s) for e in events]


def test_the_pi_5_s_temporal_denoise_would_carry_light_into_the_next_pattern(config: Config) -> None:
    # Why the adapter sets NoiseReductionMode Off: left on (picamera2's video default), the Pi 5
    # blends each frame with the one before, and the frame after a flood is never dark.
    card = make_scene("card", 1, condition="dark")

    def burst(faults: SimFaults) -> list[Frame]:
        clock = FakeClock()
        with SimulatedScanner(
            config=config, scenes=fixed(card, clock.monotonic_ns()), clock=clock, faults=faults
        ) as s:
            return capture_burst(
                camera=s.camera, ring=s.ring, patterns=["flood", "ambient"], exposure_us=4000, gain=2.0
            )

    clean = burst(SimFaults())
    blended = burst(SimFaults(temporal_denoise=True))
    lit = float(clean[0].pixels.mean()) - float(clean[1].pixels.mean())
    assert lit > 40  # the card under the flood, against the dark
    leak = float(blended[1].pixels.mean()) - float(clean[1].pixels.mean())
    # The ambient frame comes a few frames after the flood's; each keeps half of the one before.
    assert leak > 0.05 * lit  # the "dark" frame still holds a share of the flood
    assert abs(float(blended[0].pixels.mean()) - float(clean[0].pixels.mean())) < 0.6 * lit
