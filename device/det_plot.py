"""DET curves (ISO/IEC 30107-3): BPCER against APCER per attack type, on normal-deviate axes.

Drawn with OpenCV so that the package needs no plotting library. A picture of
error rates: no image of a hand is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import NormalDist

import cv2
import numpy as np

TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
LO, HI = 0.0005, 0.5
COLOURS = [(200, 80, 40), (40, 140, 40), (40, 40, 200), (160, 40, 160), (0, 140, 200), (90, 90, 90)]


def _dev(p: float) -> float:
    return NormalDist().inv_cdf(min(max(p, LO), HI))


def det_image(
    bona_fide: Sequence[float],
    attacks: Mapping[str, Sequence[float]],
    threshold: float,
    title: str,
    size: int = 640,
    axes: tuple[str, str] = ("APCER", "BPCER"),
) -> np.ndarray:
    """The DET curves of ``bona_fide`` scores against each kind of ``attacks`` (or, with ``axes``
    ("FMR", "FNMR"), of mated scores against non-mated ones)."""
    img = np.full((size, size, 3), 255, np.uint8)
    left, top, right, bottom = 80, 50, size - 20, size - 70
    lo, hi = _dev(LO), _dev(HI)

    def px(apcer: float, bpcer: float) -> tuple[int, int]:
        x = left + (_dev(apcer) - lo) / (hi - lo) * (right - left)
        y = bottom - (_dev(bpcer) - lo) / (hi - lo) * (bottom - top)
        return round(x), round(y)

    font = cv2.FONT_HERSHEY_SIMPLEX
    for t in TICKS:
        x, _ = px(t, LO)
        _, y = px(LO, t)
        cv2.line(img, (x, top), (x, bottom), (225, 225, 225), 1)
        cv2.line(img, (left, y), (right, y), (225, 225, 225), 1)
        label = f"{t * 100:g}%"
        cv2.putText(img, label, (x - 14, bottom + 18), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
        cv2.putText(img, label, (left - 50, y + 4), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), (0, 0, 0), 1)
    cv2.putText(img, axes[0], ((left + right) // 2 - 25, size - 25), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, axes[1], (8, top - 12), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 30), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    bona = np.sort(np.asarray(bona_fide, float))
    for i, (kind, scores) in enumerate(sorted(attacks.items())):
        colour = COLOURS[i % len(COLOURS)]
        att = np.asarray(scores, float)
        ts = np.unique(np.concatenate([bona, att, [0.0, 1.0 + 1e-9]]))
        pts = []
        for t in ts:
            bpcer = float(np.mean(bona < t)) if bona.size else 0.0
            apcer = float(np.mean(att >= t)) if att.size else 0.0
            pts.append(px(apcer, bpcer))
        cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        op = px(float(np.mean(att >= threshold)), float(np.mean(bona < threshold)) if bona.size else 0.0)
        cv2.circle(img, op, 5, colour, -1, cv2.LINE_AA)
        cv2.putText(img, kind, (right - 150, top + 20 + 18 * i), font, 0.45, colour, 1, cv2.LINE_AA)
    cv2.putText(
        img,
        "dots: the operating threshold; rates below 0.05% drawn at the edge",
        (left, size - 8),
        font,
        0.38,
        (90, 90, 90),
        1,
        cv2.LINE_AA,
    )
    return img
