"""The shortcuts that keep a burst's checks fast give the answers of the plain computations."""

from __future__ import annotations

import math

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from device.vision.quality import CLIP_LEVEL, exposure
from device.vision.roi import _percentile
from device.vision.scales import Scales


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    centre=st.integers(0, 255),
    spread=st.integers(0, 80),
    share=st.floats(0.001, 1.0),
)
def test_exposure_from_the_histogram_matches_numpy_percentiles(
    seed: int, centre: int, spread: int, share: float
) -> None:
    rng = np.random.default_rng(seed)
    frame = np.clip(rng.normal(centre, spread, (37, 53)), 0, 255).astype(np.uint8)
    mask = (rng.random((37, 53)) < share).astype(np.uint8)
    values = frame[mask > 0]
    got = exposure(frame, mask)
    if values.size == 0:
        assert got == {"p50": 0.0, "clipped": 0.0, "range": 0.0}
        return
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    assert got["p50"] == p50
    assert abs(got["range"] - (p99 - p1)) < 1e-9
    assert abs(got["clipped"] - float(np.mean(values >= CLIP_LEVEL))) < 1e-6


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    q=st.floats(0, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_segmentations_percentile_by_partial_sort_is_numpys(h: int, w: int, q: float, seed: int) -> None:
    img = (np.random.default_rng(seed).random((h, w)) * 255).astype(np.float32)
    assert np.isclose(_percentile(img, q), float(np.percentile(img, q)), rtol=1e-5, atol=1e-4)


def test_wide_blurs_through_the_pyramid_keep_the_vein_band() -> None:
    rng = np.random.default_rng(3)
    # A palm-like crop: smooth shading, vein-scale structure and sensor noise.
    img = cv2.GaussianBlur(rng.normal(100, 25, (320, 320)).astype(np.float32), (0, 0), 3)
    img += rng.normal(0, 2, img.shape).astype(np.float32)
    direct = (cv2.GaussianBlur(img, (0, 0), 4) - cv2.GaussianBlur(img, (0, 0), 12))[24:-24, 24:-24].std()
    fast = Scales(img).band(4.0, 12.0, 24).std()
    assert abs(fast / direct - 1) < 0.03
    s = Scales(img)
    assert s.blur(1.0) is s.blur(1.0) and s.blur(0) is s.image  # each blur computed once


def _surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """A skin-like surface: detail at every scale, weaker the finer (a 1/f spectrum)."""
    img = np.zeros((size, size), np.float32)
    for sigma in (1, 2, 4, 8, 16):
        img += sigma * cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), sigma)
    return 100 + 4 * img


def test_print_dots_stand_out_of_the_spectrum_and_enlargement_does_not_fake_them() -> None:
    """The halftone cue measures a peak against its own ring of the spectrum: a grating of
    dots stands out; a plain surface does not, whether the sensor saw it at the crop's
    resolution or enlarged 2.4 times (a wide lens, a far palm)."""
    from device.vision.liveness import _periodic

    rng = np.random.default_rng(5)
    plain = _surface(rng, 256)
    ys, xs = np.mgrid[0:256, 0:256]
    dots = plain + 6 * np.cos(2 * np.pi * (30 * xs + 16 * ys) / 256).astype(np.float32)
    sensor = _surface(rng, 107)  # 256 / 2.4 frame pixels
    enlarged = cv2.resize(sensor, (256, 256), interpolation=cv2.INTER_LINEAR)
    p_plain, p_dots = _periodic(plain, 1.0), _periodic(dots, 1.0)
    p_enlarged = _periodic(enlarged, 2.4)
    assert p_dots > p_plain + 1.0
    assert abs(p_enlarged - p_plain) < 0.3
    # read as if the crop held detail to its own Nyquist frequency, the enlargement's images of
    # the surface's coarse detail stand out like dots
    assert _periodic(enlarged, 1.0) > p_plain + 1.0


def test_a_surface_outside_every_palms_range_is_not_live_whatever_the_combiner_says() -> None:
    """The shipped model keeps the range of each cue over its bona fide training palms. A
    simulated palm's cues score live; the same cues with one pushed beyond that range (a
    screen's albedo, a dark frame's noise read as relief) do not, and the verdict names it."""
    from device.config import defaults_for_simulation
    from device.evaluation import present_kind, sim_flat_field
    from device.vision.liveness import Model, assess, default_model

    model = default_model()
    assert set(model.support) == set(model.mean)
    config = defaults_for_simulation()
    palm = present_kind(config, "genuine", 4321, sim_flat_field(config), None).cues
    assert palm is not None
    assert assess(palm, model).live
    screen_like = assess(dict(palm, albedo=0.03), model)
    assert screen_like.score == 0 and not screen_like.live and screen_like.reasons == ["albedo_not_skin"]
    hi = model.support["relief"][1]
    noisy = dict(palm, relief=math.exp(model.mean["relief"] + (hi + 0.2) * model.scale["relief"]))
    out = assess(noisy, model)
    assert out.score == 0 and out.reasons == ["relief_not_skin"]
    # the bare combiner, extrapolating its quadratic terms, would have called that live
    bare = Model(model.weights, model.bias, model.mean, model.scale, model.threshold)
    assert bare.score(noisy) >= model.threshold


def test_focus_is_not_fooled_by_the_outline_of_a_blurred_palm() -> None:
    # A palm's texture, blurred as a lens out of focus blurs it, with the palm's outline crossing a
    # corner of the crop (bright background beyond it): the edge alone must not read as focus.
    from device.vision.quality import FOCUS_MIN, focus

    rng = np.random.default_rng(3)
    texture = 80 + cv2.GaussianBlur(rng.normal(0, 6, (320, 320)).astype(np.float32), (0, 0), 1.2)
    assert focus(texture) > 1.5 * FOCUS_MIN
    yy, xx = np.mgrid[:320, :320]
    outlined = np.where(np.hypot(xx, yy - 320) < 70, 230.0, texture).astype(np.float32)
    assert focus(outlined) > 1.5 * FOCUS_MIN
    blurred = cv2.GaussianBlur(outlined, (0, 0), 5.0)
    assert focus(blurred) < FOCUS_MIN
    # The same picture's plain standard deviation in that band still reads the edge as detail.
    plain = Scales(blurred)
    assert plain.band_std(1.0, 3.0, 8) / plain.mean > FOCUS_MIN
