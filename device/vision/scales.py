"""An image's Gaussian blurs, each computed once: quality and liveness read the same bands.

Focus (creases and skin texture), vein visibility and the liveness texture cues
are all differences of Gaussian blurs of the same palm crop; computing each blur
once is most of what keeps a burst's checks inside a frame time.
"""

from __future__ import annotations

import math
from functools import cached_property

import cv2
import numpy as np


class Scales:
    def __init__(self, image: np.ndarray) -> None:
        self.image = image.astype(np.float32, copy=False)
        self._blurred: dict[float, np.ndarray] = {}
        self._bands: dict[tuple[float, float], np.ndarray] = {}
        self._stds: dict[tuple[float, float, int], float] = {}

    @cached_property
    def mean(self) -> float:
        """The mean grey level, at least 1 (the divisor of relative contrasts)."""
        return max(float(self.image.mean()), 1.0)

    def blur(self, sigma: float) -> np.ndarray:
        """The image blurred with a Gaussian of ``sigma`` pixels (0: the image itself).

        Wide blurs are computed on a reduced image and brought back (a Gaussian pyramid's
        shortcut): a sigma-12 blur costs a fifth of the direct one, and differs from it by
        far less than the sensor's noise.
        """
        if sigma == 0:
            return self.image
        if sigma not in self._blurred:
            self._blurred[sigma] = (
                _wide_blur(self.image, sigma)
                if sigma >= PYRAMID_FROM
                else (cv2.GaussianBlur(self.image, (0, 0), sigma))
            )
        return self._blurred[sigma]

    def band(self, fine: float, coarse: float, margin: int) -> np.ndarray:
        """Detail between two scales (difference of Gaussians), ``margin`` pixels trimmed."""
        key = (fine, coarse)
        if key not in self._bands:
            self._bands[key] = self.blur(fine) - self.blur(coarse)
        return self._bands[key][margin:-margin, margin:-margin]

    def band_std(self, fine: float, coarse: float, margin: int) -> float:
        """The standard deviation of :meth:`band` (one pass, in double precision; computed once:
        quality and liveness both read the vein band's)."""
        key = (fine, coarse, margin)
        if key not in self._stds:
            self._stds[key] = float(cv2.meanStdDev(self.band(fine, coarse, margin))[1][0, 0])
        return self._stds[key]

    def band_spread(self, fine: float, coarse: float, margin: int) -> float:
        """A robust standard deviation of :meth:`band`: 1.4826 times the median absolute value, on
        every other pixel. Texture is spread over the whole palm; a few pixels of great contrast (the
        palm's outline crossing a corner of the crop) move it little, where they dominate a
        standard deviation even after blurring."""
        band = self.band(fine, coarse, margin)[::2, ::2]
        return 1.4826 * float(np.median(np.abs(band)))


#: blurs this wide (pixels) and wider go through a reduced image
PYRAMID_FROM = 4.0


def _wide_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    f = 4 if sigma >= 8 else 2
    h, w = image.shape
    small = cv2.resize(image, (w // f, h // f), interpolation=cv2.INTER_AREA)
    # Averaging f x f pixels already blurred by a box of variance (f^2 - 1) / 12.
    rest = math.sqrt(max(sigma**2 - (f * f - 1) / 12.0, 0.25)) / f
    small = cv2.GaussianBlur(small, (0, 0), rest, borderType=cv2.BORDER_REFLECT_101)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
