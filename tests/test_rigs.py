"""Other rigs (issue #7): the ring's spread and the lens's scale come from the calibration frames,
so quality and liveness judge a palm the same way whatever the ring or lens, and `palm eval`
says when a ring is too near the lens for liveness."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from device import cli
from device.calibration.session import flat_from_given, sim_calibration_frames
from device.config import Config, defaults_for_simulation
from device.evaluation import WEAK_RING_SPREAD, present_kind, rig_notes, sim_flat_field, with_rig
from device.vision import quality as Q
from device.vision import reasons as R
from device.vision.roi import Hand


def rig(
    *, ring_mm: float = 30.0, focal_px: float = 380.0, sectors: int = 4, card_mm: float = 125.0
) -> Config:
    return with_rig(
        defaults_for_simulation(), ring_mm=ring_mm, focal_px=focal_px, card_mm=card_mm, sectors=sectors
    )


def spread(config: Config) -> float:
    flat = flat_from_given(sim_calibration_frames(config), "test", config)
    assert flat.ring_spread is not None
    return flat.ring_spread


def test_the_ring_spread_follows_the_ring_not_the_lens_the_card_or_the_sector_count() -> None:
    base = spread(rig())
    assert base == pytest.approx(0.86, abs=0.03)
    # in proportion to the ring's radius (within 7 %: the fall-off is not quite linear)
    assert spread(rig(ring_mm=15)) / base == pytest.approx(0.5, rel=0.07)
    assert spread(rig(ring_mm=45)) / base == pytest.approx(1.5, rel=0.07)
    # the same ring measured through another lens, at another card distance, with more or
    # fewer sectors: the same spread for a palm
    for other in (rig(focal_px=266), rig(focal_px=494), rig(card_mm=100), rig(card_mm=150), rig(sectors=3)):
        assert spread(other) == pytest.approx(base, rel=0.06)


def _hand(radius_px: float, w: int = 640, h: int = 480) -> Hand:
    mask = np.zeros((h // 2, w // 2), np.uint8)
    mask[60:180, 100:220] = 1
    return Hand(
        small_mask=mask,
        centre=(w / 2, h / 2),
        radius=radius_px,
        angle_deg=0.0,
        fingers=4,
        blobs=1,
        touches_border=False,
        area_fraction=0.2,
    )


def test_one_palms_cues_do_not_follow_the_lens_or_the_card_distance() -> None:
    """The same palms held over rigs that differ only in lens or grey-card distance: the albedo
    (the card's light brought to the palm's distance) and the print-dot cue (read up to what
    the sensor resolves) stay put. Before, a card at 100 mm read every palm 0.39 lower in log
    albedo, and a lens 30 % wider raised the print-dot cue by 0.6."""
    seeds = range(5000, 5006)

    def cues(config: Config) -> list[dict[str, float]]:
        flat = sim_flat_field(config)
        found = [present_kind(config, "genuine", s, flat, None).cues for s in seeds]
        assert all(c is not None for c in found)
        return [c for c in found if c is not None]

    nominal = cues(rig())

    def shift(other: list[dict[str, float]], cue: str, log: bool) -> float:
        f = math.log if log else float
        return float(np.median([f(o[cue]) - f(n[cue]) for o, n in zip(other, nominal, strict=True)]))

    for card in (100.0, 150.0):
        assert abs(shift(cues(rig(card_mm=card)), "albedo", log=True)) < 0.1
    for focal in (266.0, 494.0):
        assert abs(shift(cues(rig(focal_px=focal)), "halftone", log=False)) < 0.25


@pytest.mark.parametrize("focal", [266.0, 380.0, 494.0])
def test_quality_judges_distance_whatever_the_lens(focal: float) -> None:
    """A 40 mm palm radius at 150 mm is near enough, at 200 mm too far, at 60 mm too close,
    through any lens whose focal length the calibration gives."""
    frame = np.full((480, 640), 120, np.uint8)
    crop = np.full((320, 320), 120.0, np.float32)

    def reasons(distance_mm: float) -> list[str]:
        radius_px = focal * 40 / distance_mm
        return Q.assess(frame=frame, crop=crop, hand=_hand(radius_px), focal_px=focal).reasons

    assert R.TOO_FAR not in reasons(150) and R.TOO_CLOSE not in reasons(150)
    assert R.TOO_FAR in reasons(200)
    assert R.TOO_CLOSE in reasons(60)


def test_without_the_lens_known_sizes_are_judged_for_the_nominal_lens() -> None:
    frame = np.full((480, 640), 120, np.uint8)
    crop = np.full((320, 320), 120.0, np.float32)
    far_for_nominal = _hand(266 * 40 / 150)  # a wide lens's palm at 150 mm: small in the frame
    assert R.TOO_FAR in Q.assess(frame=frame, crop=crop, hand=far_for_nominal).reasons
    assert R.TOO_FAR not in Q.assess(frame=frame, crop=crop, hand=far_for_nominal, focal_px=266).reasons


def test_motion_is_judged_in_the_nominal_lens_pixels() -> None:
    """The same 5 mm sway of a palm at 150 mm is 12.7 px through the nominal lens (380 px),
    16.5 px through a long one (494 px): both are told to hold still, and both pass at 1 mm."""
    frame = np.full((480, 640), 120, np.uint8)
    crop = np.full((320, 320), 120.0, np.float32)
    for focal in (380.0, 494.0):
        hand = _hand(focal * 40 / 150)

        def reasons(sway_mm: float, focal: float = focal, hand: Hand = hand) -> list[str]:
            moved = focal * sway_mm / 150
            return Q.assess(frame=frame, crop=crop, hand=hand, moved_px=moved, focal_px=focal).reasons

        assert R.HOLD_STILL in reasons(5.0)
        assert R.HOLD_STILL not in reasons(1.0)
    # 3.6 px: over the limit for the nominal lens, 2.8 nominal pixels through the long one
    long_hand = _hand(494 * 40 / 150)
    assert R.HOLD_STILL in Q.assess(frame=frame, crop=crop, hand=_hand(380 * 40 / 150), moved_px=3.6).reasons
    assert (
        R.HOLD_STILL
        not in Q.assess(frame=frame, crop=crop, hand=long_hand, moved_px=3.6, focal_px=494).reasons
    )


def test_a_ring_near_the_lens_is_called_weak_and_a_sound_one_is_not() -> None:
    near = flat_from_given(sim_calibration_frames(rig(ring_mm=15)), "test", rig(ring_mm=15))
    notes = rig_notes(near, [])
    assert near.ring_spread is not None and near.ring_spread < WEAK_RING_SPREAD
    assert any("too near the lens" in w for w in notes.warnings)
    assert any("like a 15 mm ring" in line or "like a 16 mm ring" in line for line in notes.lines())
    sound = flat_from_given(sim_calibration_frames(rig()), "test", rig())
    assert rig_notes(sound, []).warnings == ()


def test_eval_judges_with_only_the_calibration_frames_and_warns_of_a_weak_ring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import EXAMPLE_CONFIG

    text = EXAMPLE_CONFIG.read_text().replace("ring_radius_mm = 30.0", "ring_radius_mm = 15.0")
    assert "ring_radius_mm = 15.0" in text
    (tmp_path / "rig.toml").write_text(text)
    args = ["--config", str(tmp_path / "rig.toml")]
    assert (
        cli.main(
            [
                "calibrate",
                "flat",
                "--simulate",
                "--yes",
                *args,
                "--save-frames",
                str(tmp_path / "f"),
                "--file",
                str(tmp_path / "cal.toml"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    code = cli.main(
        [
            "eval",
            *args,
            "--calibration",
            str(tmp_path / "f"),
            "--samples",
            "2",
            "--seed",
            "123",
            "--jobs",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "rig: 4 sectors, focal 380 px" in out
    ring = float(out.split("ring spread ")[1].split(":")[0])
    assert ring == pytest.approx(0.45, abs=0.03)
    assert "WARNING: the ring is too near the lens for liveness" in out
    # the frames, not the config, tell the checks: the same rig's frames without --calibration
    # (the simulated scanner's own) give the same spread
    assert math.isclose(spread(rig(ring_mm=15)), ring, abs_tol=0.002)
