"""Liveness on rigs it was not fitted on (issue #14): the ring's light measures the palm's distance,
an unfamiliar cue is "can't tell" rather than an attack, rates carry their exact intervals, and a
rig's own fit from labelled bursts, refused where the bursts cannot be separated."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from device import cli
from device.config import Config
from device.evaluation import Rig, present, sim_flat_field
from device.sim.scene import Reach, make_scene
from device.sim.sheet import render_burst
from device.stats import Rate, clopper_pearson
from device.vision import liveness as L
from device.vision import quality as Q
from device.vision import rigfit
from device.vision.roi import Hand


def _beta_cdf(x: float, a: float, b: float, n: int = 400_001) -> float:
    """The Beta(a, b) distribution function (a, b >= 1) by Simpson's rule on its density: an
    implementation that shares nothing with stats.clopper_pearson (which bisects the binomial's
    tails)."""
    t = np.linspace(0.0, x, n)
    log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    with np.errstate(divide="ignore"):
        log_t = np.log(t) * (a - 1) if a != 1 else np.zeros_like(t)
    pdf = np.exp(log_t + (b - 1) * np.log1p(-t) - log_norm)
    h = x / (n - 1)
    return float(h / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum()))


@pytest.mark.parametrize(("k", "n"), [(1, 20), (5, 20), (3, 60), (12, 40)])
def test_clopper_pearson_is_the_beta_quantile_pair(k: int, n: int) -> None:
    lo, hi = clopper_pearson(k, n)
    # the interval's ends are the alpha/2 and 1 - alpha/2 quantiles of Beta(k, n-k+1) and Beta(k+1, n-k)
    assert _beta_cdf(lo, k, n - k + 1) == pytest.approx(0.025, abs=2e-4)
    assert _beta_cdf(hi, k + 1, n - k) == pytest.approx(0.975, abs=2e-4)


def test_clopper_pearson_textbook_values_and_edges() -> None:
    assert clopper_pearson(5, 20) == pytest.approx((0.0866, 0.4910), abs=1e-4)
    lo, hi = clopper_pearson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 20))
    lo, hi = clopper_pearson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 20))
    assert Rate(0, 20).text() == "0.00 % (0/20; 95 % CI 0.00-16.84 %)"
    with pytest.raises(ValueError, match=r"0\.\.n"):
        clopper_pearson(21, 20)


#: a rig far from the nominal one: a 22 mm ring, a 560 px lens focused at 80 mm, its card at 80 mm
NEAR_RIG = Rig(ring_mm=22.0, focal_px=560.0, card_mm=80.0, focus_mm=80.0)


@pytest.mark.parametrize("rig", [Rig(), NEAR_RIG], ids=["nominal", "ring22-lens560"])
def test_the_rings_light_measures_the_distance_and_albedo_follows_it(config: Config, rig: Rig) -> None:
    """A print held at three distances: the ring's light gives each distance within a tenth, and its
    albedo stays the same (with the distance assumed, as before, it read 8 times brighter near)."""
    c = rig.apply(config)
    flat = sim_flat_field(c)
    found = {}
    for d in (0.75 * rig.focus_mm, rig.focus_mm, 1.5 * rig.focus_mm):
        p = present(c, make_scene("print_flat", 11, distance_mm=d, motion="still"), flat, None, max_bursts=1)
        assert p.cues is not None
        assert p.cues["distance_mm"] == pytest.approx(d, rel=0.12)
        found[d] = p.cues["albedo"]
    near, far = found[min(found)], found[max(found)]
    assert near / far == pytest.approx(1.0, abs=0.2)


def test_a_palms_distance_is_measured_within_a_quarter(config: Config) -> None:
    flat = sim_flat_field(config)
    for seed, d in ((21, 80.0), (22, 125.0), (23, 180.0)):
        p = present(
            config, make_scene("genuine", seed, distance_mm=d, motion="still"), flat, None, max_bursts=1
        )
        assert p.cues is not None
        assert p.cues["distance_mm"] == pytest.approx(d, rel=0.25), seed


def _toy_model() -> L.Model:
    """Every cue standardised as itself (mean 0, scale 1: a log cue is exp of its value), a combiner
    that calls everything inside the support live, attacks seen only below albedo's support."""
    return L.Model(
        weights={},
        bias=5.0,
        mean=dict.fromkeys(L.FEATURES, 0.0),
        scale=dict.fromkeys(L.FEATURES, 1.0),
        threshold=0.5,
        support=dict.fromkeys(L.FEATURES, (-1.0, 1.0)),
        attack_side={f: (f == "albedo", False) for f in L.FEATURES},
    )


def _cues(**xs: float) -> dict[str, float]:
    values = dict.fromkeys(L.FEATURES, 0.0) | xs
    return {f: math.exp(v) if f in L.LOG_FEATURES else v for f, v in values.items()}


def test_an_unfamiliar_cue_in_no_attacks_direction_is_try_again_and_toward_one_is_refused() -> None:
    model = _toy_model()
    assert L.assess(_cues(), model).verdict == L.LIVE
    dark = L.assess(_cues(albedo=-3.0), model)  # where attacks were seen
    assert (dark.verdict, dark.live, dark.score, dark.reasons) == (L.ATTACK, False, 0.0, ["albedo_not_skin"])
    bright = L.assess(_cues(albedo=3.0), model)  # beyond every palm, where no attack was
    assert (bright.verdict, bright.live, bright.reasons) == (L.TRY_AGAIN, False, ["albedo_unlike_any_palm"])
    both = L.assess(_cues(albedo=-3.0, veins=5.0), model)  # one attack direction is enough
    assert both.verdict == L.ATTACK


def test_the_shipped_model_keeps_attack_sides_and_a_side_without_attacks() -> None:
    model = L.default_model()
    assert set(model.attack_side) == set(L.FEATURES) and set(model.bona_fide_median) == set(L.FEATURES)
    sides = [s for pair in model.attack_side.values() for s in pair]
    assert any(sides) and not all(sides)


def test_a_model_file_that_is_not_one_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "model.json"
    bad.write_text('{"weights": {}}')
    with pytest.raises(L.ModelError, match="not a liveness model"):
        L.load_model(bad)
    with pytest.raises(L.ModelError, match="does not exist"):
        L.load_model(tmp_path / "absent.json")


def test_quality_calls_an_open_hand_whose_fingers_leave_the_frame_partial_not_open(config: Config) -> None:
    frame = np.full((480, 640), 120, np.uint8)
    crop = Q.crop(frame.astype(np.float32), _hand((320.0, 240.0), 70.0))

    def reasons(centre: tuple[float, float]) -> list[str]:
        return Q.assess(frame=frame, crop=crop, hand=_hand(centre, 70.0)).reasons

    assert "open_hand" in reasons((320.0, 300.0))  # the fingers' reach (2 radii up) is in the frame
    near_top = reasons((320.0, 100.0))  # the fingers run off the top of the frame
    assert "open_hand" not in near_top and "partial_hand" in near_top


def _hand(centre: tuple[float, float], radius: float) -> Hand:
    return Hand(
        small_mask=np.ones((240, 320), np.uint8),
        centre=centre,
        radius=radius,
        angle_deg=0.0,
        fingers=0,
        blobs=1,
        touches_border=False,
        area_fraction=0.3,
        outline_in_view=True,
    )


# -- a rig's own fit, end to end through the command line -----------------------------------------------

#: the rig whose bursts the fit is shown: a wide, narrow-beam ring on a longer lens
#: where the fit's bursts are held: near the rig's focus, on its axis
REACH = Reach((110.0, 140.0), 0.04)
FIT_RIG = Rig(ring_mm=42.0, focal_px=450.0, beam_m=3.0, focus_mm=125.0, card_mm=125.0)


@pytest.fixture(scope="module")
def rig_bursts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The rig's config, its grey-card frames (as `palm calibrate flat --simulate --save-frames`
    writes them) and a BDIR of 24 live and 25 attack bursts."""
    from device.config import load_config
    from tests.conftest import EXAMPLE_CONFIG
    from tests.test_vision_tools import burst_folder

    root = tmp_path_factory.mktemp("rig")
    text = EXAMPLE_CONFIG.read_text()
    for key, value in (
        ("ring_radius_mm", "42.0"),
        ("focal_px", "450.0"),
        ("led_beam_exponent", "3.0"),
    ):
        text = text.replace(f"\n{key} = ", f"\n{key} = {value}\n#{key} = ", 1)
    cfg_path = root / "rig.toml"
    cfg_path.write_text(text)
    config = load_config(cfg_path)
    assert config.sim == FIT_RIG.apply(config).sim
    frames = root / "frames"
    assert cli.main(["calibrate", "flat", "--simulate", "--yes", "--config", str(cfg_path),
                     "--save-frames", str(frames), "--file", str(root / "cal.toml")]) == 0  # fmt: skip
    bdir = root / "bursts"
    for seed in range(24):
        burst_folder(config, "genuine", 610_000 + seed, bdir / "live" / f"palm{seed:02d}", REACH)
    for i, kind in enumerate(("print_flat", "print_curved", "screen", "fake_hand", "print_flat_veins")):
        for seed in range(5):
            burst_folder(
                config, kind, 620_000 + 10 * i + seed, bdir / "attack" / kind / f"{kind}{seed}", REACH
            )
    return cfg_path, frames, bdir


def test_calibrate_liveness_fits_the_rig_and_check_uses_the_fit(
    rig_bursts: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, frames, bdir = rig_bursts
    out = tmp_path / "liveness.json"
    report = tmp_path / "report.html"
    code = cli.main(["calibrate", "liveness", "--config", str(cfg), "--calibration", str(frames),
                     "--bursts", str(bdir), "--out", str(out), "--report", str(report)])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0, text
    assert "cross-validated" in text and "95 % CI" in text and "APCER fake_hand" in text
    model = L.load_model(out)
    assert model.fitted_for["live"] == 24 and model.fitted_for["calibration"] == str(frames)
    cv = model.fitted_for["cross_validated"]
    assert isinstance(cv, dict) and cv["bpcer"]["n"] >= 20
    assert "Liveness fit" in report.read_text() and "cross-validated" in report.read_text()
    # palm check judges with the rig's model
    attacks = sorted(str(b) for kind in (bdir / "attack").iterdir() for b in kind.iterdir())
    judged = [str(bdir / "live" / "palm00"), *attacks]
    assert (
        cli.main(
            ["check", "--config", str(cfg), "--calibration", str(frames), "--liveness", str(out), *judged]
        )
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["liveness"]["verdict"] == "live"
    # an attack is refused by quality (no liveness verdict) or by liveness; never called live
    verdicts = [line["liveness"]["verdict"] for line in lines[1:] if line["liveness"] is not None]
    assert len(lines) == 1 + len(attacks) and "live" not in verdicts and "attack" in verdicts
    # the rig's whole labelled folder: a line per burst with its label, the ISO table on stderr
    assert (
        cli.main(
            ["check", "--config", str(cfg), "--calibration", str(frames), "--liveness", str(out), str(bdir)]
        )
        == 0
    )
    captured = capsys.readouterr()
    labels = [json.loads(line)["label"] for line in captured.out.splitlines()]
    assert labels.count("live") == 24 and labels.count("attack/screen") == 5
    assert "labelled bursts (ISO/IEC 30107-3)" in captured.err and "APCER print_curved" in captured.err
    assert re.search(r"BPCER +\d+(\.\d+)? % \(\d+/2\d; 95 % CI", captured.err), captured.err


def test_calibrate_liveness_refuses_too_few_or_inseparable_bursts(
    rig_bursts: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, frames, bdir = rig_bursts
    few = tmp_path / "few"
    (few / "live").mkdir(parents=True)
    (few / "attack").symlink_to(bdir / "attack")
    for name in ("palm00", "palm01"):
        (few / "live" / name).symlink_to(bdir / "live" / name)
    args = [
        "calibrate",
        "liveness",
        "--config",
        str(cfg),
        "--calibration",
        str(frames),
        "--out",
        str(tmp_path / "m.json"),
    ]
    assert cli.main([*args, "--bursts", str(few)]) == 2
    assert "at least 20 live bursts" in capsys.readouterr().err
    # labels that say nothing: every burst filed both as live and as an attack
    mixed = tmp_path / "mixed"
    everything = sorted((bdir / "live").iterdir()) + sorted(
        p for k in (bdir / "attack").iterdir() for p in k.iterdir()
    )
    for i, p in enumerate(everything):
        for label in ("live", "attack/print_flat"):
            dest = mixed / label / f"b{i:02d}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(p)
    assert cli.main([*args, "--bursts", str(mixed)]) == 2
    err = capsys.readouterr().err
    assert "cannot separate its live palms from its attacks" in err and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


def test_a_rigs_fit_moves_a_shifted_cue_back(config: Config) -> None:
    """Bursts whose albedo reads 60 % high (a card whose stated albedo is wrong): the shipped model
    refuses their palms; the fit moves the standardisation and takes them, still refusing attacks."""
    model = L.default_model()
    flat = sim_flat_field(config)
    rows = []
    for i, kind in enumerate(("genuine",) * 30 + ("print_flat", "screen", "fake_hand", "print_curved") * 6):
        p = present(config, make_scene(kind, 630_000 + i), flat, None, max_bursts=2)
        if p.cues is not None:
            cues = dict(p.cues, albedo=p.cues["albedo"] * 1.6)
            rows.append(rigfit.Labelled(kind, str(i), cues, p.verdict.quality.ok))
    before = rigfit.judge(model, rows)
    fitted, cv = rigfit.fit_rig(model, rows, fitted_for={"test": True})
    after = rigfit.judge(fitted, rows)
    assert after.bpcer.value + after.try_again.value < before.bpcer.value + before.try_again.value
    assert after.bpcer.value + after.try_again.value <= 0.1
    assert all(r.value == 0 for r in after.apcer.values())
    assert cv.bpcer.n >= 20
    moved = fitted.mean["albedo"] - model.mean["albedo"]
    assert moved == pytest.approx(math.log(1.6), abs=0.25)


def test_the_daemon_retakes_a_burst_liveness_cannot_tell_and_answers_try_again(tmp_path: Path) -> None:
    """A rig's model under which every palm lies beyond the palms it has seen, in no attack's
    direction: the daemon takes the burst again once, then answers "try again", apart from attacks."""
    import re
    import subprocess
    import sys

    from tests.conftest import EXAMPLE_CONFIG

    model = L.default_model()
    narrow = L.Model(
        **{
            **{f.name: getattr(model, f.name) for f in dataclasses.fields(model)},
            "support": dict.fromkeys(L.FEATURES, (50.0, 51.0)),
            "attack_side": dict.fromkeys(L.FEATURES, (False, False)),
        }
    )
    path = tmp_path / "liveness.json"
    path.write_text(json.dumps(narrow.as_json()))
    cfg = tmp_path / "palm.toml"
    text = EXAMPLE_CONFIG.read_text().replace('liveness_file = ""', f"liveness_file = '{path}'", 1)
    assert f"liveness_file = '{path}'" in text
    cfg.write_text(text)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "device",
            "run",
            "--simulate",
            "--config",
            str(cfg),
            "--scans",
            "2",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"liveness: {path}" in proc.stderr
    out = proc.stdout
    assert "liveness cannot tell" in out and "taking the burst again" in out
    assert re.search(r"result: try again", out)
    assert "not a live palm" not in out and "sealed and uploaded" not in out


def test_a_sharp_small_palm_is_in_focus_and_a_blurred_one_is_not(config: Config) -> None:
    """Through a 280 px lens at 160 mm a palm is small in the frame and enlarged in its crop: its
    focus band widens with the zoom, so the sharp palm passes and the same burst blurred by the lens
    (a Gaussian of 3.5 frame pixels, as the real captures' blurred copies) is out of focus."""
    from device.vision.pipeline import analyse_burst

    c = Rig(focal_px=280.0, focus_mm=160.0, card_mm=150.0).apply(config)
    flat = sim_flat_field(c)  # the lens's focal length: sizes judged for it
    scene = make_scene("genuine", 640_001, distance_mm=160.0, motion="still")
    frames = {
        f.leds or "": f.pixels
        for f in render_burst(c, scene, ("ambient", "flood"), exposure_us=2600, gain=2.0)
    }
    sharp = analyse_burst(frames, exposure_us=2600, gain=2.0, flat=flat, model=None)
    assert sharp.hand is not None and sharp.hand.zoom > 2.4
    assert sharp.quality.ok, sharp.quality.reasons
    blurred = {k: cv2.GaussianBlur(v, (0, 0), 3.5) for k, v in frames.items()}
    soft = analyse_burst(blurred, exposure_us=2600, gain=2.0, flat=flat, model=None)
    assert "out_of_focus" in soft.quality.reasons, soft.quality.measures


def test_the_unseen_rigs_lie_outside_the_training_world_and_calibrate() -> None:
    from device.sim.world import TRAIN, UNSEEN, draw_rigs, outside_train

    rigs = draw_rigs(12)
    assert all(not outside_train(r) for r in rigs)
    for name in TRAIN:  # the Latin hypercube reaches both ends of every range
        values = sorted(float(r.as_json()[name]) for r in rigs)  # type: ignore[arg-type]
        lo, hi = TRAIN[name]
        assert values[0] < lo + (hi - lo) / 6 and values[-1] > hi - (hi - lo) / 6 - (
            1 if name == "sectors" else 0
        )
    for name, rig in UNSEEN.items():
        assert len(outside_train(rig)) >= 3, name
