"""palm check on real 940 nm captures: each good enough; degraded copies refused with the matching reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.vision.pipeline import analyse_frame
from tests.conftest import REAL_PALMS

CASIA = REAL_PALMS / "casia-ms-940nm"
pytestmark = pytest.mark.skipif(not CASIA.is_dir(), reason=f"real palm images not present at {CASIA}")


def real() -> list[Path]:
    return sorted(CASIA.glob("*.jpg"))


def degrade(img: np.ndarray, how: str) -> np.ndarray:
    if how == "blurred":
        return cv2.GaussianBlur(img, (0, 0), 3)
    if how == "darkened":
        return (img.astype(np.float32) * 0.25).astype(np.uint8)
    if how == "overexposed":
        return np.clip(img.astype(np.float32) * 2.6, 0, 255).astype(np.uint8)
    # moved half out of the frame: the palm's centre ends up at the edge
    h, w = img.shape
    cx = float(np.argmax(cv2.distanceTransform((img > 60).astype(np.uint8), cv2.DIST_L2, 5).max(axis=0)))
    m = np.float32([[1, 0, w - cx], [0, 1, 0]])
    return cv2.warpAffine(img, m, (w, h), borderValue=int(np.percentile(img, 5)))


EXPECTED = {
    "blurred": "out_of_focus",
    "darkened": "too_dark",
    "overexposed": "too_bright",
    "half out": "partial_hand",
}


def test_palm_check_judges_every_real_capture_good_enough(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "device", "check", *map(str, real())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == len(real()) >= 10
    for line in lines:
        assert line["quality"]["ok"] is True, line
        assert line["liveness"] is None and 0.5 < line["quality"]["score"] <= 1.0


@pytest.mark.parametrize("how", sorted(EXPECTED))
def test_degraded_copies_are_refused_with_the_matching_reason(how: str) -> None:
    for path in real():
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        assert analyse_frame(img).quality.ok
        verdict = analyse_frame(degrade(img, how))
        assert not verdict.quality.ok, path.name
        assert EXPECTED[how] in verdict.quality.reasons, (path.name, verdict.quality.reasons)
