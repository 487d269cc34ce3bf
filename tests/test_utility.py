"""The reference matcher, the crop aligned on the fingers' valleys, and the utility figures of
`palm eval --real` (on CASIA's 940 nm images where they are present)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from device import cli, utility
from device.config import Config
from device.ingest import matcher
from device.sim import surfaces
from device.vision import roi
from tests.conftest import REAL_PALMS

CASIA = REAL_PALMS / "casia-ms-940nm"
needs_casia = pytest.mark.skipif(not CASIA.is_dir(), reason=f"real palm images not present at {CASIA}")


def _lines_texture(seed: int, size: int = 320) -> np.ndarray:
    """A palm-like picture of its own: dark curved lines of several widths on a lit ground."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 150, np.uint8)
    for _ in range(25):
        pts = np.cumsum(rng.normal(0, 14, (8, 2)), axis=0) + rng.uniform(0, size, 2)
        cv2.polylines(img, [pts.astype(np.int32)], False, int(rng.uniform(60, 110)), int(rng.integers(2, 7)))
    return cv2.GaussianBlur(img, (0, 0), 1.5)


def _moved(img: np.ndarray, deg: float, shift_px: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), deg, 1.0)
    m[:, 2] += shift_px
    return cv2.warpAffine(img, m, img.shape[::-1], borderMode=cv2.BORDER_REFLECT)


def test_the_matcher_scores_one_pattern_moved_a_little_above_another_pattern() -> None:
    a, b = _lines_texture(1), _lines_texture(2)
    ta = matcher.template(a)
    assert matcher.score(ta, ta) == pytest.approx(1.0)
    same = matcher.score(matcher.template(_moved(a, 3.0, 4.0)), ta)
    other = matcher.score(matcher.template(b), ta)
    assert same > 0.7 and other < 0.62 and same - other > 0.15, (same, other)


def test_the_score_is_one_minus_the_mean_angular_distance_in_thirds() -> None:
    """An independent count: codes one orientation apart everywhere score 1 - 1/3, three apart 0."""
    code = np.random.default_rng(3).integers(0, 6, (32, 32)).astype(np.uint8)
    valid = np.ones_like(code, bool)

    def t(c: np.ndarray) -> matcher.Template:
        return matcher.Template(matcher.Code(c, valid), ())

    assert matcher.score(t(code), t((code + 1) % 6), max_shift=0) == pytest.approx(2 / 3)
    assert matcher.score(t(code), t((code + 3) % 6), max_shift=0) == pytest.approx(0.0)
    assert matcher.score(t(code), t((code + 5) % 6), max_shift=0) == pytest.approx(2 / 3)


def test_the_alignment_says_how_far_apart_two_crops_lay() -> None:
    """A random code moved by whole grid points: the best comparison is at that shift, and one at
    the largest shift searched is flagged, since the crops may lie further apart than looked for."""
    code = np.random.default_rng(4).integers(0, 6, (32, 32)).astype(np.uint8)
    valid = np.ones_like(code, bool)

    def t(c: np.ndarray) -> matcher.Template:
        return matcher.Template(matcher.Code(c, valid), ())

    grid = matcher.STEP / matcher.SIZE  # one grid point, in fractions of the crop's side
    near = matcher.align(t(np.roll(code, 2, axis=1)), t(code))
    assert near.score == pytest.approx(1.0) and near.turn == 0.0
    assert abs(near.shift[0]) == pytest.approx(2 * grid) and near.shift[1] == 0.0 and not near.at_limit
    far = matcher.align(t(np.roll(code, matcher.MAX_SHIFT, axis=0)), t(code))
    assert abs(far.shift[1]) == pytest.approx(matcher.MAX_SHIFT * grid) and far.at_limit


def test_eer_and_fnmr_at_fmr_on_counted_scores() -> None:
    non = [i / 1000 for i in range(1000)]  # 0.000 .. 0.999
    t = utility.threshold_at(non, 0.01)
    assert sum(s >= t for s in non) == 10 and sum(s >= t - 0.001 for s in non) == 11
    assert utility.fnmr([0.5, 0.995, 0.999], t) == pytest.approx(1 / 3)
    # separable: EER 0; one mated score among the non-mated: 1 of 4 mated, 1 of 4 non-mated
    assert utility.eer([0.8, 0.9], [0.1, 0.2]) == 0.0
    assert utility.eer([0.15, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.25)


def _hand_mask(angle_deg: float, size: int = 400) -> tuple[np.ndarray, tuple[float, float]]:
    """A hand's outline at half resolution: a palm, four spread fingers and a thumb, turned by
    ``angle_deg`` (0: fingers up), and where its two outer finger valleys are."""
    m = np.zeros((size, size), np.uint8)
    c = np.array([size / 2, size / 2 + 40])
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])

    def at(u: float, v: float) -> tuple[int, int]:
        x, y = c + rot @ np.array([u, v])
        return round(x), round(y)

    cv2.ellipse(m, at(0, 0), (55, 62), -angle_deg, 0, 360, 1, -1)
    for i, u in enumerate((-40.0, -14.0, 12.0, 38.0)):
        tip = (u + (i - 1.5) * 12, -150.0 + 15 * abs(i - 1.5))
        cv2.line(m, at(u, -40), at(*tip), 1, 22)
    cv2.line(m, at(50, 10), at(110, -50), 1, 26)  # the thumb
    return m, (27.0, -62.0)


@pytest.mark.parametrize("angle", [0.0, 17.0, -35.0, 90.0])
def test_the_crop_is_turned_by_the_line_through_the_finger_valleys(angle: float) -> None:
    mask, _ = _hand_mask(angle)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    found = roi.finger_valleys(mask, (float(cx), float(cy)), float(dist[cy, cx]))
    assert found is not None
    turn, _centre, side = roi._aligned(found, (float(cx), float(cy)))
    # the crop turns the frame by `turn` to put the fingers up: the hand was turned by -angle
    assert (turn + angle + 180) % 360 - 180 == pytest.approx(0.0, abs=4.0)
    (ax, ay), (bx, by) = found
    assert 20 < math.hypot(bx - ax, by - ay) < 80 and side > 0


def test_no_valleys_on_a_fist_keeps_the_palm_circles_crop() -> None:
    m = np.zeros((400, 400), np.uint8)
    cv2.ellipse(m, (200, 220), (60, 70), 0, 0, 360, 1, -1)
    assert roi.finger_valleys(m, (200.0, 220.0), 60.0) is None


def _fingers_off_the_top(*, sleeve: bool = False, thumb: bool = True) -> np.ndarray:
    """A lit frame: a palm, four fingers held together running off the frame's top, the forearm
    running off its bottom (or ended by a dark sleeve in view), and the thumb in view."""
    m = np.zeros((480, 640), np.uint8)
    cv2.ellipse(m, (320, 250), (110, 125), 0, 0, 360, 200, -1)
    cv2.rectangle(m, (225, 0), (415, 170), 200, -1)
    cv2.rectangle(m, (250, 300), (390, 420 if sleeve else 479), 200, -1)
    if thumb:
        cv2.line(m, (410, 300), (520, 190), 200, 50)
    return m


@pytest.mark.parametrize("sleeve", [False, True])
@pytest.mark.parametrize("turns", [0, 2])
def test_the_thumb_tells_the_fingers_from_the_arm_when_both_leave_the_frame(sleeve: bool, turns: int) -> None:
    """Both run off the frame, the fingers' block as wide as the arm or wider: the widest arc alone
    took the fingers for the arm (a quarter of simulated presentations were cropped upside down).
    The thumb ends in view and points away from the wrist; a sleeve's end is too wide to be a digit."""
    frame = np.rot90(_fingers_off_the_top(sleeve=sleeve), turns).copy()
    hand = roi.segment(frame)
    assert hand is not None
    want = 0.0 if turns == 0 else 180.0
    assert (hand.angle_deg - want + 180) % 360 - 180 == pytest.approx(0.0, abs=5.0)


def test_no_digit_in_view_gives_no_vote() -> None:
    m = _fingers_off_the_top(thumb=False) // 200
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    assert roi.digits_point(m, (float(cx), float(cy)), float(dist[cy, cx]), 0.0) == 0.0
    with_thumb = _fingers_off_the_top() // 200
    assert roi.digits_point(with_thumb, (float(cx), float(cy)), float(dist[cy, cx]), 0.0) > 0
    assert roi.digits_point(with_thumb, (float(cx), float(cy)), float(dist[cy, cx]), 180.0) < 0


@needs_casia
def test_casias_palms_are_identified_from_the_scanners_crops(tmp_path: Path) -> None:
    """The done-when's real figure: EER at most 8 % on the 120 CASIA 940 nm images, within a
    session and across the two sessions a month apart (shots 1-3 and 4-6)."""
    u = utility.measure_folder(CASIA, session=3)
    assert len(u.samples) == 120 and not u.unusable
    assert u.as_json()["eer"] <= 0.08
    assert utility.eer(u.mated_scores(True), u.non_mated) <= 0.08
    assert utility.eer(u.mated_scores(False), u.non_mated) <= 0.08


@needs_casia
def test_palm_eval_real_prints_the_figures_and_names_a_bad_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    few = tmp_path / "few"
    few.mkdir()
    for src in sorted(CASIA.glob("00[12]_l_940_0[1-4].jpg")):
        shutil.copy(src, few / src.name)
    plot = tmp_path / "det.png"
    assert cli.main(["eval", "--real", str(few), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "8 crops of 2 palms" in out and "EER" in out and "FNMR at FMR 0.1 %" in out and "refuse" in out
    assert cv2.imread(str(plot)).shape == (640, 640, 3)
    (few / "holiday.jpg").write_bytes((few / "001_l_940_01.jpg").read_bytes())
    assert cli.main(["eval", "--real", str(few)]) == 2
    err = capsys.readouterr().err
    assert "not named SUBJECT_HAND_N" in err and "holiday.jpg" in err and "Traceback" not in err


# -- identities in the simulator -------------------------------------------------------------------


def _look(s: surfaces.Surface) -> tuple[str, list[float]]:
    """The height and the outline to the bit, and the albedo by quadrant means and spread: its
    last bits follow OpenCV's blur (4.6 and 5.1 differ), a change of palm moves these by far more
    than 1e-6."""
    a = s.albedo.astype(np.float64)
    h, w = a.shape
    quads = [a[: h // 2, : w // 2], a[: h // 2, w // 2 :], a[h // 2 :, : w // 2], a[h // 2 :, w // 2 :]]
    shape = hashlib.sha256(s.height.tobytes() + s.mask.tobytes()).hexdigest()[:16]
    return shape, [float(q.mean()) for q in quads] + [float(a.std())]


def test_a_seed_without_an_identity_keeps_the_palm_it_always_had() -> None:
    """Taken from the code before identities existed (commit 06951c4), the same under numpy 1.24
    with OpenCV 4.6 and numpy 2.4 with OpenCV 5.1: every old scene keeps its look for its old seed."""
    old = {
        (1, False): ("7f0e3bc4d85406c2", [0.490292, 0.490905, 0.491395, 0.491616, 0.02167]),
        (7, True): ("848ad5fbcad8ee98", [0.696362, 0.695057, 0.696437, 0.695403, 0.0103]),
        (12345, False): ("fe26a6d80f117142", [0.413796, 0.412186, 0.413436, 0.416744, 0.018716]),
    }
    for (seed, fake), (shape, albedo) in old.items():
        got_shape, got_albedo = _look(surfaces.hand(seed, fake=fake))
        assert got_shape == shape, seed
        assert got_albedo == pytest.approx(albedo, abs=1e-6), seed


def test_one_identity_is_one_palm_however_it_is_presented() -> None:
    a1, a2 = surfaces.hand(101, identity=5), surfaces.hand(202, identity=5)
    b = surfaces.hand(101, identity=6)
    assert a1.facts["palm_w"] == a2.facts["palm_w"] != b.facts["palm_w"]
    # the palm's middle (veins, creases, skin) is the same picture; another identity's is not
    h, w = a1.albedo.shape
    mid = (slice(h // 2 - 60, h // 2 + 20), slice(w // 2 - 50, w // 2 + 50))
    same = np.corrcoef(a1.albedo[mid].ravel(), a2.albedo[mid].ravel())[0, 1]
    other = np.corrcoef(a1.albedo[mid].ravel(), b.albedo[mid].ravel())[0, 1]
    assert same > 0.95 and other < 0.5, (same, other)
    # how it is held differs: the fingers' spread
    assert not np.array_equal(a1.mask, a2.mask)


def test_palm_sim_renders_an_identity_and_refuses_one_for_a_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.png"
    assert cli.main(["sim", "--scene", "genuine", "--identity", "3", "--seed", "9", "--out", str(out)]) == 0
    assert "identity 3" in capsys.readouterr().out and cv2.imread(str(out)) is not None
    assert cli.main(["sim", "--scene", "print_flat", "--identity", "3", "--out", str(out)]) == 2
    assert "needs --scene genuine" in capsys.readouterr().err


def test_palm_eval_identities_reports_mated_and_non_mated_scores(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "--identities", "3", "--presentations", "2", "--jobs", "1", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["identities"] == 3 and got["crops"] + len(got["unusable"]) == 6
    assert got["mated"] + got["non_mated"] == got["crops"] * (got["crops"] - 1) // 2
    rep = got["repeatability"]
    assert set(rep) == {"shift_median", "shift_p90", "turned", "at_limit"}
    assert 0 <= rep["shift_median"] <= rep["shift_p90"] <= 0.15 and 0 <= rep["at_limit"] <= 1


# -- crops for an outside matcher ------------------------------------------------------------------


def test_palm_check_writes_the_crop_it_would_seal(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_vision_tools import burst_folder

    burst = burst_folder(config, "genuine", 7, tmp_path / "in" / "palm7")
    frame = tmp_path / "in" / "frame.png"
    frame.write_bytes((burst / "flood.png").read_bytes())
    crops = tmp_path / "crops"
    assert cli.main(["check", "--crops-out", str(crops), str(burst), str(frame)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["crop"] for line in lines] == [str(crops / "palm7.png"), str(crops / "frame.png")]
    a, b = (cv2.imread(str(crops / n), cv2.IMREAD_UNCHANGED) for n in ("palm7.png", "frame.png"))
    assert a.shape == (roi.CROP_PX, roi.CROP_PX) and a.dtype == np.uint8 and np.array_equal(a, b)
    # two inputs of one name would overwrite each other's crop: refused before anything is judged
    (tmp_path / "other").mkdir()
    twin = tmp_path / "other" / "frame.png"
    twin.write_bytes(frame.read_bytes())
    assert cli.main(["check", "--crops-out", str(tmp_path / "c2"), str(frame), str(twin)]) == 2
    assert "would both be written" in capsys.readouterr().err
