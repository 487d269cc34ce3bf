"""The simulator's genuine palms measure like real 940 nm captures (skipped without them)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.config import Config
from device.sim.realism import measure, simulated_palms
from tests.conftest import REAL_PALMS

CASIA = REAL_PALMS / "casia-ms-940nm"


@pytest.mark.skipif(not CASIA.is_dir(), reason=f"real palm images not present at {CASIA}")
def test_simulated_palms_fall_within_the_range_of_real_captures(config: Config) -> None:
    real = [measure(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)) for f in sorted(CASIA.glob("*.jpg"))]
    assert all(m is not None for m in real) and len(real) >= 10
    sim = simulated_palms(config, range(2000, 2012))
    assert len(sim) == 12
    for name in ("mean", "std", "vein_contrast", "sharpness", "fine_texture"):
        r = [getattr(m, name) for m in real]
        s = [getattr(m, name) for m in sim]
        median = float(np.median(s))
        assert min(r) <= median <= max(r), (
            f"{name}: simulated median {median:.4f} outside real {min(r):.4f}..{max(r):.4f}"
        )
        # more than half of the simulated palms, not only their middle one, measure like real ones
        inside = sum(min(r) <= x <= max(r) for x in s)
        assert inside > 6, f"{name}: only {inside} of 12 simulated palms within the real range"
