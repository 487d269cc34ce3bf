"""One burst in, one verdict out: segmentation, the palm crop, quality and liveness.

Pure: frames (uint8 arrays by role) and the scanner's flat fields in; a frozen
verdict out. The daemon, ``palm check`` and ``palm eval`` all call this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from device.calibration.flatfield import FlatField
from device.hardware import patterns
from device.vision import liveness as L
from device.vision import quality as Q
from device.vision.roi import Hand, segment
from device.vision.scales import Scales


#: one helper thread: a burst's checks use two cores (a Pi has four)
def _new_worker() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="checks")


def _after_fork() -> None:
    # A forked child (palm eval's workers) inherits the executor but not its thread.
    global _WORKER  # noqa: PLW0603 - one executor per process, replaced only after fork
    _WORKER = _new_worker()


_WORKER = _new_worker()
os.register_at_fork(after_in_child=_after_fork)


@dataclass(frozen=True, eq=False)
class Verdict:
    hand: Hand | None
    quality: Q.Quality
    liveness: L.Liveness | None

    @property
    def accepted(self) -> bool:
        return self.quality.ok and self.liveness is not None and self.liveness.live


def analyse_burst(
    frames: Mapping[str, np.ndarray],
    *,
    exposure_us: int,
    gain: float,
    flat: FlatField | None,
    model: L.Model | None,
) -> Verdict:
    sectors = [r for r in frames if r.startswith("sector-")]
    raw = frames[patterns.FLOOD]
    # Work on the ring's light runs beside the main line (OpenCV and numpy let go of the GIL):
    # subtracting the ambient frame and the motion across the burst while the hand is found,
    # then the shape cues while the palm's texture is measured. A burst's checks use two cores.
    lit_work = _WORKER.submit(_lit_and_motion, frames, sectors)
    if raw.dtype == np.uint8 and patterns.AMBIENT in frames:
        hand = segment(cv2.subtract(raw, frames[patterns.AMBIENT]))  # the lit flood, in 8 bits
        lit, moved = lit_work.result()
    else:
        lit, moved = lit_work.result()
        hand = segment(lit[patterns.FLOOD])
    flood = lit[patterns.FLOOD]
    if hand is None:
        return Verdict(None, Q.assess(frame=raw, crop=flood, hand=None), None)
    live_too = flat is not None and model is not None and bool(sectors) and patterns.AMBIENT in frames
    shape_work = (
        _WORKER.submit(L.shape_cues, frames, lit, hand, flat, exposure_us=exposure_us, gain=gain)
        if live_too and flat is not None
        else None
    )
    texture = Scales(Q.crop(flood, hand))
    # The print-dot spectrum queues behind the shape cues; the bands are shared with quality.
    halftone_work = _WORKER.submit(L.halftone, texture, hand.zoom) if shape_work is not None else None
    focal = flat.focal_px if flat is not None else None
    texture_cues = L.band_cues(texture, hand.zoom) if live_too else {}
    quality = Q.assess(frame=raw, crop=texture, hand=hand, moved_px=moved, focal_px=focal)
    live = None
    if shape_work is not None and halftone_work is not None:
        assert model is not None
        live = L.assess({**shape_work.result(), **texture_cues, "halftone": halftone_work.result()}, model)
    return Verdict(hand, quality, live)


def _lit_and_motion(
    frames: Mapping[str, np.ndarray], sectors: list[str]
) -> tuple[dict[str, np.ndarray], float]:
    """The ring's light alone in each frame (minus the ambient frame), and the motion across the burst."""
    if patterns.AMBIENT in frames:
        lit = L.lit_frames(frames)
    else:
        lit = {role: img.astype(np.float32) for role, img in frames.items()}
    # The sector frames together light the palm like the flood frame, a few frames later.
    moved = Q.motion_px(lit[patterns.FLOOD], [lit[r] for r in sectors]) if sectors else 0.0
    return lit, moved


def analyse_frame(frame: np.ndarray) -> Verdict:
    """A single frame (a capture from another scanner): quality only."""
    hand = segment(frame)
    img = frame.astype(np.float32)
    crop = Q.crop(img, hand) if hand is not None else img
    return Verdict(hand, Q.assess(frame=frame, crop=crop, hand=hand), None)
