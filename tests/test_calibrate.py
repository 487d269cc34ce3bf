"""``palm calibrate`` on the simulated scanner: every step passes on a sound scanner, each injected
fault is caught by the step meant to catch it, the file round-trips and bad files are named."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from device import cli
from device.calibration import calfile as cf
from device.calibration import steps as S
from device.config import defaults_for_simulation
from device.selftest import describe_calibration


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One sound calibration of the simulated scanner, with its report and what it printed."""
    import contextlib
    import io

    d = tmp_path_factory.mktemp("cal")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(
            ["calibrate", "all", "--simulate", "--file", str(d / "cal.toml"), "--report", str(d / "r.html")]
        )
    assert code == 0, out.getvalue()
    return d / "cal.toml", d / "r.html", out.getvalue()


def test_every_step_passes_on_a_sound_scanner_and_the_file_has_them_all(
    calibrated: tuple[Path, Path, str],
) -> None:
    path, _, printed = calibrated
    for step in cf.STEPS:
        assert f"{step}: passed" in printed
    cal = cf.load(path)
    assert cal.missing() == []
    assert re.fullmatch(r"cal-\d{8}-\d{6}-[0-9a-f]{4}", cal.id)
    assert cal.flat is not None and cal.focus is not None and cal.scale is not None
    # The simulated optics: focal 380 px at 125 mm is 3.04 px/mm; the sectors sit at 45 + 90k degrees.
    assert cal.scale.px_per_mm == pytest.approx(380 / 125, rel=0.03)
    for k, deg in enumerate(cal.flat.sector_deg):
        assert abs((deg - (45 + 90 * k) + 180) % 360 - 180) < 10
    assert cal.focus.edge_px < S.EDGE_PX_MAX
    assert cal.flat.window_glow < 0.005
    # The file holds no image: only figures and tables of CELL_PX-pixel cells.
    text = path.read_text()
    assert len(text) < 120_000
    rows, cols = cf.table_shape(640, 480)
    assert cal.flat.tables["flood"].shape == (rows, cols) == (30, 40)
    # It is what the selftest asks for.
    assert describe_calibration(cal, defaults_for_simulation()).startswith(f"{cal.id}, 0 days old")


def test_the_report_is_self_contained_with_maps_and_only_card_and_target_pictures(
    calibrated: tuple[Path, Path, str],
) -> None:
    _, report, _ = calibrated
    page = report.read_text()
    assert "<html" in page and "All steps passed." in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    alts = re.findall(r"<img alt='([^']+)' src='data:image/png;base64,", page)
    assert alts == [
        "full ring",
        "sector-0",
        "sector-1",
        "sector-2",
        "sector-3",
        "grey card under the full ring",
        "focus target",
    ]


@pytest.mark.parametrize(
    ("fault", "step", "words"),
    [
        ("dead-sector:2", "flat", "sector 2 (BCM 22) gives 0 % of the others' light: dead"),
        ("weak-sector:1", "flat", "sector 1 (BCM 27) is weak"),
        ("smudge", "flat", "the window is smudged"),
        ("swapped-pins", "flat", "sector 0's pin (BCM 17) lights the side of sector 1"),
        ("defocus", "focus", "out of focus"),
        ("light-leak", "dark", "light reaches the sensor with the ring off"),
    ],
)
def test_each_fault_is_caught_by_its_step(
    fault: str, step: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["calibrate", "all", "--simulate", "--fault", fault, "--file", str(tmp_path / "c.toml")])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{step}: FAILED" in out
    assert words in out
    # The steps before it passed and were kept; the failed one and later ones were not.
    cal = cf.load(tmp_path / "c.toml") if (tmp_path / "c.toml").exists() else None
    done = cf.STEPS[: cf.STEPS.index(step)]
    assert (cal.history if cal else ()) == done


def test_a_camera_that_is_gone_is_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["calibrate", "dark", "--simulate", "--fault", "camera-gone"])
    err = capsys.readouterr().err
    assert code != 0
    assert "camera stopped delivering frames" in err
    assert "Traceback" not in err


def test_verify_passes_then_catches_drift(
    calibrated: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = calibrated
    assert cli.main(["calibrate", "verify", "--simulate", "--file", str(path)]) == 0
    assert "within tolerances of" in capsys.readouterr().out
    assert (
        cli.main(["calibrate", "verify", "--simulate", "--file", str(path), "--fault", "weak-sector:3"]) == 1
    )
    out = capsys.readouterr().out
    assert "sector-3:" in out and "of its calibrated light" in out
    assert cli.main(["calibrate", "verify", "--simulate", "--file", str(path), "--fault", "defocus"]) == 1
    assert "less sharp than at calibration" in capsys.readouterr().out


def test_focus_says_which_way_the_lens_turned(
    calibrated: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(calibrated[0].read_text())
    assert cli.main(["calibrate", "focus", "--simulate", "--file", str(path), "--fault", "defocus"]) == 1
    assert "less sharp than the last measurement" in capsys.readouterr().out
    assert cf.load(path).focus == cf.load(calibrated[0]).focus  # a failed focus does not replace a good one


def test_the_file_round_trips(calibrated: tuple[Path, Path, str]) -> None:
    cal = cf.load(calibrated[0])
    again = cf.parse(__import__("tomllib").loads(cf.to_toml(cal)))
    assert again.id == cal.id and again.exposure == cal.exposure and again.focus == cal.focus
    assert cal.flat is not None and again.flat is not None
    for role, t in cal.flat.tables.items():
        np.testing.assert_allclose(again.flat.tables[role], t, rtol=1e-4)
    field = again.flat_field()
    assert field.response["flood"].shape == (480, 640)
    assert field.lit_roles() == ["sector-0", "sector-1", "sector-2", "sector-3"]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda t: t.replace("format = 1", "format = 9"), "format = 9 is not one this software reads"),
        (lambda t: re.sub(r"\nwidth = 640\n", "\n", t), "width is missing"),
        (
            lambda t: t.replace("[scale]\npx_per_mm = ", "[scale]\npx_per_mm = 'x'\nold = "),
            "scale.px_per_mm = 'x' is not a number",
        ),
        (
            lambda t: re.sub(
                r'\[flat.tables."sector-3"\]\nrows = \[\n  \[[^\]]*\],',
                '[flat.tables."sector-3"]\nrows = [',
                t,
            ),
            'flat.tables."sector-3".rows must be 30 rows of 40',
        ),
        (
            lambda t: t.replace('[flat.tables."sector-3"]', '[flat.tables."sector-9"]'),
            "sectors need flood, sector-0",
        ),
        (lambda t: t[: len(t) // 2], "is not valid TOML"),
    ],
)
def test_a_bad_file_is_named_and_verify_refuses_it(
    calibrated: tuple[Path, Path, str],
    edit: object,
    words: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(edit(calibrated[0].read_text()))  # type: ignore[operator]
    with pytest.raises(cf.CalibrationError, match=re.escape(words)):
        cf.load(path)
    assert cli.main(["calibrate", "verify", "--simulate", "--file", str(path)]) == 78
    err = capsys.readouterr().err
    assert words in err and str(path) in err and "Traceback" not in err


def test_a_calibration_for_another_scanner_is_refused_by_the_selftest(
    calibrated: tuple[Path, Path, str],
) -> None:
    cal = cf.load(calibrated[0])
    config = defaults_for_simulation()
    other = type(config)(**{**config.__dict__, "leds": type(config.leds)(sector_pins=(17, 27, 22))})
    with pytest.raises(LookupError, match=r"sectors on BCM \[17, 27, 22, 23\].*run `palm calibrate all`"):
        describe_calibration(cal, other)


def test_the_scale_tells_how_far_a_palm_is(calibrated: tuple[Path, Path, str]) -> None:
    """The daemon's "too far"/"too close" says how far, from the calibration's scale and an adult
    palm's size: on simulated hands of 72-94 mm at 80 to 200 mm, within 17 % (the palms' own
    spread of sizes is 13 % either side of the adult palm; the daemon prefers the distance the
    ring's light measures, when the burst gave one: test_liveness_world)."""
    from device.daemon.loop import palm_distance_mm
    from device.hardware import patterns
    from device.sim.scene import make_scene
    from device.sim.sheet import render_burst
    from device.vision.liveness import lit_frames
    from device.vision.roi import segment

    cal = cf.load(calibrated[0])
    assert cal.scale is not None
    config = defaults_for_simulation()
    errors = []
    for i, z in enumerate((80.0, 100.0, 125.0, 160.0, 200.0) * 2):
        scene = make_scene("genuine", 4000 + i, condition="dark", distance_mm=z, motion="still")
        frames = render_burst(config, scene, patterns.all_patterns(4), exposure_us=2500, gain=2.0)
        hand = segment(lit_frames({f.leds or "": f.pixels for f in frames})["flood"])
        assert hand is not None
        errors.append(palm_distance_mm(hand.radius, (cal.scale.px_per_mm, cal.scale.distance_mm)) / z - 1)
    assert max(abs(e) for e in errors) < 0.17, errors


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--report", "r.txt"], "give a name ending in .html, not 'r.txt'"),
        (["--fault", "dead-sector:9"], "K a sector from 0 to 3"),
        (["--fault", "weak-sector"], "K a sector from 0 to 3"),
        (["--fault", "gremlins"], "valid are dead-sector, weak-sector, smudge"),
    ],
)
def test_bad_arguments_are_one_line(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["calibrate", "all", "--simulate", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


# -- a calibration given as frames (issue #7) ----------------------------------------------------


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The simulated scanner's flat step, saved as a calibration folder, and its own file."""
    import contextlib
    import io

    d = tmp_path_factory.mktemp("frames")
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(
            [
                "calibrate",
                "flat",
                "--simulate",
                "--save-frames",
                str(d / "rig"),
                "--file",
                str(d / "own.toml"),
            ]
        )
    assert code == 0
    return d / "rig", d / "own.toml"


def test_frames_round_trip_to_the_same_flat_fields_and_verdicts(
    frames_folder: tuple[Path, Path], tmp_path: Path
) -> None:
    from device.calibration.frames import read
    from device.hardware import patterns
    from device.sim.scene import make_scene
    from device.sim.sheet import render_burst
    from device.vision.liveness import default_model
    from device.vision.pipeline import analyse_burst

    folder, own = frames_folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "card-ambient.png", "card-flood.png", "card-sector-0.png", "card-sector-1.png",
        "card-sector-2.png", "card-sector-3.png", "dark.png", "manifest.json",
    ]  # fmt: skip
    assert read(folder).optics.sector_deg() == pytest.approx([45, 135, 225, 315])
    assert cli.main(["calibrate", "from-frames", str(folder), "--out", str(tmp_path / "c.toml")]) == 0
    mine, theirs = cf.load(own), cf.load(tmp_path / "c.toml")
    assert mine.flat is not None and theirs.flat is not None and theirs.scale is not None
    for role, table in mine.flat.tables.items():
        rel = theirs.flat.tables[role] / table - 1
        assert float(np.sqrt(np.mean(rel**2))) < (0.005 if role == "flood" else 0.03), role
    assert theirs.scale.px_per_mm == pytest.approx(380 / 125, rel=1e-3)
    # The same bursts get the same verdicts with either calibration.
    config, model = defaults_for_simulation(), default_model()
    a, b = mine.flat_field(), theirs.flat_field()
    compared = 0
    for i, kind in enumerate(["genuine", "print_flat", "print_curved", "screen", "fake_hand", "genuine"] * 2):
        burst = render_burst(
            config, make_scene(kind, 7100 + i), patterns.all_patterns(4), exposure_us=2500, gain=2.0
        )
        frames = {f.leds or "": f.pixels for f in burst}
        va = analyse_burst(frames, exposure_us=2500, gain=2.0, flat=a, model=model)
        vb = analyse_burst(frames, exposure_us=2500, gain=2.0, flat=b, model=model)
        if va.liveness is not None and vb.liveness is not None:
            assert va.liveness.live == vb.liveness.live, (kind, va.liveness.score, vb.liveness.score)
            assert abs(va.liveness.score - vb.liveness.score) < 0.05
            compared += 1
    assert compared >= 10


def _break(folder: Path, how: str) -> None:
    import json

    import cv2

    m = json.loads((folder / "manifest.json").read_text())
    if how == "missing":
        (folder / "card-sector-2.png").unlink()
        m["frames"] = [f for f in m["frames"] if f["role"] != "card-sector-2"]
    elif how == "size":
        img = cv2.imread(str(folder / "card-flood.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(folder / "card-flood.png"), img[:400])
    elif how == "unreadable":
        (folder / "dark.png").write_bytes(b"not a png")
    elif how == "sectors":
        m["optics"]["leds"] = m["optics"]["leds"][:3]
    elif how == "colour":
        img = cv2.imread(str(folder / "card-flood.png"))
        cv2.imwrite(str(folder / "card-flood.png"), img)
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("missing", "no card-sector-2.png in the manifest: a rig of 4 sectors needs"),
        ("size", "card-flood.png is 640x400: the manifest says 640x480"),
        ("unreadable", "dark.png' is not a PNG image"),
        ("sectors", "frames card-sector-3 do not belong to a rig of 3 sectors"),
        ("colour", "card-flood.png is not 8-bit greyscale"),
    ],
)
def test_a_malformed_folder_is_named(
    frames_folder: tuple[Path, Path], how: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    folder = tmp_path / "rig"
    shutil.copytree(frames_folder[0], folder)
    _break(folder, how)
    assert cli.main(["calibrate", "from-frames", str(folder), "--out", str(tmp_path / "c.toml")]) == 65
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "c.toml").exists()


def test_check_judges_bursts_against_a_calibration_folder(
    frames_folder: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from tests.test_vision_tools import burst_folder

    config = defaults_for_simulation()
    bursts = [
        burst_folder(config, kind, 7300 + i, tmp_path / f"b{i}")
        for i, kind in enumerate(["genuine", "print_flat"])
    ]
    assert cli.main(["check", *map(str, bursts)]) == 0
    own = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert cli.main(["check", "--calibration", str(frames_folder[0]), *map(str, bursts)]) == 0
    given = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["liveness"]["live"] for o in own] == [g["liveness"]["live"] for g in given] == [True, False]
    for o, g in zip(own, given, strict=True):
        assert abs(o["liveness"]["score"] - g["liveness"]["score"]) < 0.05
