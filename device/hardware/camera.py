"""The camera role: frames with metadata, and the burst under LED patterns.

A frame is an 8-bit greyscale array that lives in memory only. Its metadata
says when it was exposed (monotonic ns, the clock libcamera stamps with), how
(exposure, analogue gain) and under which LED pattern the *whole* exposure ran.

Never write a frame anywhere: not to disk, a log line, or an exception message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from device.errors import CameraError


@dataclass(frozen=True, eq=False)
class Frame:
    """One greyscale frame and how it was taken.

    ``timestamp_ns`` is the start of exposure of the first row, on the
    monotonic clock. ``leds`` is the LED pattern in force during the whole
    exposure of every row, or None when that is not known.
    """

    pixels: np.ndarray
    timestamp_ns: int
    exposure_us: int
    gain: float
    leds: str | None = None
    stream: str = "main"

    def __post_init__(self) -> None:
        if self.pixels.dtype != np.uint8 or self.pixels.ndim != 2:
            raise CameraError(
                f"a frame must be 8-bit greyscale (2-D uint8), got {self.pixels.dtype} "
                f"with shape {self.pixels.shape}"
            )

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def wipe(self) -> None:
        """Overwrite the pixels with zeros (once sealed, nothing else survives)."""
        self.pixels.fill(0)

    def __repr__(self) -> str:  # never the pixels
        return (
            f"Frame({self.width}x{self.height} {self.stream}, t={self.timestamp_ns}, "
            f"exp={self.exposure_us}us, gain={self.gain:g}, leds={self.leds})"
        )


class Camera(Protocol):
    """A camera with manual exposure, a capture stream and a presence stream."""

    @property
    def main_size(self) -> tuple[int, int]: ...

    @property
    def settle_frames(self) -> int:
        """Frames after :meth:`set_manual` until one can show the new exposure and gain."""

    def describe(self) -> str:
        """What the camera is and how it runs (sensor, mode, frame rate, tuning), for people."""

    def start(self) -> None: ...

    def set_manual(self, *, exposure_us: int, gain: float) -> None:
        """Fix exposure and analogue gain; frames report what they really got."""

    def capture(self, *, not_before_ns: int | None = None) -> Frame:
        """The next main-stream frame whose exposure started at or after ``not_before_ns``."""

    def preview(self, *, not_before_ns: int | None = None) -> Frame:
        """The next presence-stream frame (its Y plane) exposed at or after ``not_before_ns``."""

    def close(self) -> None: ...


class LedSwitch(Protocol):
    """What a burst needs of the ring: set a pattern, learn when it took effect."""

    def show(self, pattern: str) -> int:
        """Switch to ``pattern``; return the monotonic ns at which it is in force."""


def capture_burst(
    *,
    camera: Camera,
    ring: LedSwitch,
    patterns: Sequence[str],
    exposure_us: int,
    gain: float,
    max_tries: int | None = None,
    stream: str = "main",
) -> list[Frame]:
    """For each pattern: switch it on, then take the first frame exposed entirely under it.

    A frame counts only if its exposure began after the switch (so no row saw
    the previous pattern) and it reports the requested exposure and gain (so a
    control change still in the sensor's pipeline is not mistaken for the new
    one). The ring stays on the pattern until its frame has arrived, so every
    row's exposure ends under it too. ``max_tries``: frames to wait for each, by default the
    camera's settle time and two more.
    """
    tries = camera.settle_frames + 2 if max_tries is None else max_tries
    camera.set_manual(exposure_us=exposure_us, gain=gain)
    frames: list[Frame] = []
    try:
        for pattern in patterns:
            frames.append(_frame_under(camera, ring, pattern, exposure_us, gain, tries, stream))
    except BaseException:
        for f in frames:
            f.wipe()
        raise
    return frames


def _frame_under(
    camera: Camera, ring: LedSwitch, pattern: str, exposure_us: int, gain: float, max_tries: int, stream: str
) -> Frame:
    switched_ns = ring.show(pattern)
    for _ in range(max_tries):
        frame = (
            camera.capture(not_before_ns=switched_ns)
            if stream == "main"
            else camera.preview(not_before_ns=switched_ns)
        )
        if frame.timestamp_ns < switched_ns:
            frame.wipe()
            raise CameraError(
                f"camera returned a frame exposed {switched_ns - frame.timestamp_ns} ns "
                f"before the LED switch to {pattern!r}"
            )
        if settled(frame, exposure_us, gain):
            return dataclasses.replace(frame, leds=pattern)
        frame.wipe()  # a frame passed over is zeroed like any other
    raise CameraError(
        f"no frame with exposure {exposure_us} us and gain {gain:g} arrived within "
        f"{max_tries} frames of switching to {pattern!r}"
    )


def settled(frame: Frame, exposure_us: int, gain: float) -> bool:
    """Whether a frame reports the asked exposure and gain, as far as the sensor can give them
    (sensors quantise exposure to whole lines and gain to register steps)."""
    return abs(frame.exposure_us - exposure_us) <= max(20, exposure_us * 0.02) and abs(
        frame.gain - gain
    ) <= max(0.05, gain * 0.03)
