"""The shortcuts that keep a burst's checks fast give the answers of the plain computations."""

from __future__ import annotations

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
