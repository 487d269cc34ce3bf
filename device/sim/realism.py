"""How close the simulator's palms are to real NIR captures, in numbers.

The same four measures are taken on a real capture and a simulated flood frame,
on the palm only and at one scale (the palm square resampled to 256 px), so that
framing and resolution do not decide the comparison:

- ``mean``: mean grey of the palm square (8-bit);
- ``std``: its standard deviation;
- ``vein_contrast``: standard deviation of a band-pass (difference of Gaussians,
  2 and 10 px at 256 px across) relative to the mean: the veins and creases;
- ``sharpness``: variance of the Laplacian of the palm square relative to the
  mean squared, in units of 1e-4;
- ``fine_texture``: variance of the 4-neighbour Laplacian of the palm square at the image's own
  resolution (not resampled), in grey levels squared: the grain and the finest detail a pixel
  holds, as SOURCES.md measures the real captures (there on the whole image). A simulated flood
  frame once read 3 here, where the real 940 nm captures read 10 and more: too soft.

This is a development measurement; it reads only images it is handed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SQUARE_PX = 256


@dataclass(frozen=True)
class PalmMeasures:
    mean: float
    std: float
    vein_contrast: float
    sharpness: float
    fine_texture: float


def palm_square(img: np.ndarray, *, native: bool = False) -> np.ndarray | None:
    """The largest square inside the palm: centred where the hand is widest, resampled to
    SQUARE_PX (``native``: at the image's own resolution)."""
    blur = cv2.GaussianBlur(img, (0, 0), 3)
    _, mask = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    hand = (labels == biggest).astype(np.uint8)
    dist = cv2.distanceTransform(hand, cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    half = int(dist[y, x] * 0.7)  # a square well inside the inscribed circle
    if half < 16:
        return None
    crop = img[y - half : y + half, x - half : x + half]
    if native:
        return crop
    return cv2.resize(crop, (SQUARE_PX, SQUARE_PX), interpolation=cv2.INTER_AREA)


def measure(img: np.ndarray) -> PalmMeasures | None:
    sq = palm_square(img)
    native = palm_square(img, native=True)
    if sq is None or native is None:
        return None
    fine = cv2.Laplacian(native.astype(np.float32), cv2.CV_32F)[2:-2, 2:-2]
    f = sq.astype(np.float32)
    mean = float(f.mean())
    band = cv2.GaussianBlur(f, (0, 0), 2) - cv2.GaussianBlur(f, (0, 0), 10)
    lap = cv2.Laplacian(f, cv2.CV_32F)
    return PalmMeasures(
        mean=mean,
        std=float(f.std()),
        vein_contrast=float(band[16:-16, 16:-16].std() / mean),
        sharpness=float(lap[4:-4, 4:-4].var() / mean**2 * 1e4),
        fine_texture=float(fine.var()),
    )


#: the palm brightness the comparison meters for: the real captures' median palm square
METER_TARGET = 100.0


def simulated_palms(config: object, seeds: range) -> list[PalmMeasures]:
    """Measures of genuine flood frames, each exposed so its palm square reads METER_TARGET."""
    from device.config import Config
    from device.sim.scene import make_scene
    from device.sim.sheet import render_burst

    assert isinstance(config, Config)
    out = []
    for seed in seeds:
        scene = make_scene("genuine", seed)
        exposure = 3000
        for _ in range(2):  # meter, then expose
            (frame,) = render_burst(config, scene, ("flood",), exposure_us=exposure, gain=2.0)
            m = measure(frame.pixels)
            if m is None:
                break
            exposure = int(np.clip(exposure * METER_TARGET / m.mean, 100, 8000))
        if m is not None:
            out.append(m)
    return out
