"""A reference palm matcher for the development cloud: competitive code (Kong and Zhang, "Competitive
coding scheme for palmprint verification", ICPR 2004).

A measuring instrument and a demonstration, never on the scanner's path and not a production
matcher: it has no liveness of its own, no template protection, no tuning on a large population,
and it is not tolerant of rotations past a few degrees (the scanner's crop must be repeatable).

The template: the flood crop reduced to 128 x 128, each pixel's local contrast normalised, filtered
by six real Gabor filters at orientations j*pi/6 (the even, zero-mean part); a line (a vein, a
crease) is dark, so each point keeps the orientation whose response is lowest: a code 0..5, on a
32 x 32 grid, for the crop as it is and turned by each of ``ROTATIONS``. Two templates are
compared by the angular distance of their codes (0 to 3 steps of 30 degrees) averaged over the
points both hold, taking the best over shifts of up to ``MAX_SHIFT`` grid points each way and over
the second one's turns; the score is 1 minus that distance over 3: about 0.5 for unrelated palms
(random codes) and 1 for the same crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 128
STEP = 4  # template grid: one code per STEP pixels of the 128 x 128 crop
ORIENTATIONS = 6
#: grid points each way (24 px of 128: 19 % of the crop's side). The scanner's crops of one palm lie
#: up to about that far apart: on the simulator, where the palm's true place is known from its pose,
#: the crop's centre strays from the mean of one palm's crops by a median 5 % of the side (90th
#: percentile 11 %), most of it from the palm's tilt. At 3 points (9 %), 68 % of mated pairs were
#: best at the limit and the simulated EER was 15 % on 30 palms, at 6 it is half that.
MAX_SHIFT = 6
#: Gabor filter: wavelength and envelope in pixels of the 128 px crop (a vein a few pixels wide)
WAVELENGTH_PX = 12.0
SIGMA_PX = 4.0
#: the turns (degrees) a template also holds: the crop's rotation repeats to a few degrees
ROTATIONS = (-4.0, 4.0)


def _bank() -> list[np.ndarray]:
    k = int(2 * round(3 * SIGMA_PX) + 1)
    out = []
    for j in range(ORIENTATIONS):
        g = cv2.getGaborKernel((k, k), SIGMA_PX, j * math.pi / ORIENTATIONS, WAVELENGTH_PX, 1.0, 0.0)
        g = g.astype(np.float32)
        g -= g.mean()  # zero mean: flat skin gives nothing, brightness drops out
        out.append(g / np.abs(g).sum())
    return out


_BANK = _bank()


@dataclass(frozen=True)
class Code:
    code: np.ndarray  # uint8, (SIZE/STEP)^2, orientation index 0..5
    valid: np.ndarray  # bool, same shape: points with palm and contrast under them


@dataclass(frozen=True)
class Template:
    upright: Code  # the crop as it is
    turned: tuple[Code, ...]  # the crop turned by each of ROTATIONS


def _code(img: np.ndarray) -> Code:
    mean = cv2.GaussianBlur(img, (0, 0), 8)
    sd = np.sqrt(cv2.GaussianBlur((img - mean) ** 2, (0, 0), 8)) + 1e-3
    norm = (img - mean) / sd
    responses = np.stack([cv2.filter2D(norm, -1, g) for g in _BANK])
    grid = responses[:, STEP // 2 :: STEP, STEP // 2 :: STEP]
    code = np.argmin(grid, axis=0).astype(np.uint8)
    # Where every orientation answers alike there is no line: the code would be noise.
    spread = grid.max(axis=0) - grid.min(axis=0)
    lit = cv2.resize(img, code.shape[::-1], interpolation=cv2.INTER_AREA) > 0.2 * float(img.max() + 1e-6)
    return Code(code, lit & (spread > 0.1 * float(np.median(spread))))


def template(crop: np.ndarray) -> Template:
    """A template from a flood crop (8-bit or float greyscale, square, any size)."""
    img = cv2.resize(crop.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    turned = []
    for deg in ROTATIONS:
        m = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), deg, 1.0)
        turned.append(_code(cv2.warpAffine(img, m, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE)))
    return Template(_code(img), tuple(turned))


def _angular(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return np.minimum(d, ORIENTATIONS - d)


#: the score a match needs for a false-match rate: the higher of the thresholds measured on the
#: non-mated pairs of the 120 CASIA 940 nm images in ../shared/data/real-palms (6840 pairs: 0.575 at
#: 1 %, 0.586 at 0.1 %) and of 100 simulated identities presented 4 times (79200 pairs: 0.585 and
#: 0.598), so that neither exceeds the rate (with MAX_SHIFT 6). Measured on 20 and 100 palms: a
#: population of thousands would put them higher.
THRESHOLDS = {0.01: 0.585, 0.001: 0.598}
DEFAULT_FMR = 0.001

#: fewer points than this in common and two templates cannot be compared (score 0)
MIN_OVERLAP = 0.3


def _distance(a: Code, b: Code, max_shift: int) -> tuple[float, int, int]:
    """The smallest mean angular distance over shifts, and the shift (dx, dy, grid points) it is at."""
    n = a.code.shape[0]
    best = (1.0, 0, 0)
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            ya, yb = slice(max(dy, 0), n + min(dy, 0)), slice(max(-dy, 0), n + min(-dy, 0))
            xa, xb = slice(max(dx, 0), n + min(dx, 0)), slice(max(-dx, 0), n + min(-dx, 0))
            both = a.valid[ya, xa] & b.valid[yb, xb]
            k = int(both.sum())
            if k < MIN_OVERLAP * n * n:
                continue
            d = float(_angular(a.code[ya, xa], b.code[yb, xb])[both].sum()) / (3 * k)
            if d < best[0]:
                best = (d, dx, dy)
    return best


@dataclass(frozen=True)
class Alignment:
    """How a probe best lay on a reference: the score, the shift (fractions of the crop's side, x
    and y) and the turn (degrees) it was found at."""

    score: float
    shift: tuple[float, float]
    turn: float

    @property
    def at_limit(self) -> bool:
        """The best shift or turn is the largest searched: the crops may lie further apart."""
        limit = MAX_SHIFT * STEP / SIZE
        return max(abs(self.shift[0]), abs(self.shift[1])) >= limit - 1e-9 or abs(self.turn) >= max(
            abs(r) for r in ROTATIONS
        )


def align(probe: Template, reference: Template, max_shift: int = MAX_SHIFT) -> Alignment:
    """`score`, with the shift and turn the best comparison was at."""
    turns = (0.0, *ROTATIONS)
    found = [_distance(probe.upright, c, max_shift) for c in (reference.upright, *reference.turned)]
    k = min(range(len(found)), key=lambda i: found[i][0])
    d, dx, dy = found[k]
    return Alignment(1.0 - d, (dx * STEP / SIZE, dy * STEP / SIZE), turns[k])


def score(probe: Template, reference: Template, max_shift: int = MAX_SHIFT) -> float:
    """Similarity of a probe to a reference, 0..1: 1 minus the smallest mean angular distance of
    the probe's upright code to the reference's codes (upright and turned), over shifts, in units
    of the largest (3 steps)."""
    return align(probe, reference, max_shift).score
