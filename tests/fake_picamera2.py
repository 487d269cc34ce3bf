"""A stand-in for the parts of picamera2 that device.hardware.picamera uses, faithful in
what matters to it: signatures, YUV420 buffers padded to a stride, SensorTimestamp as the
readout of the first row, controls that take effect frames later, ``flush`` by exposure
start, queue=False handing out only the newest frame, requests that must be released.
Time is a FakeClock, so waiting for a frame moves time instead of sleeping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from device.clock import FakeClock

TUNING_FILES = {"imx219_noir.json", "imx708_noir.json", "imx296_noir.json"}
CONTROL_LATENCY = 2


class FakeRequest:
    def __init__(self, cam: FakePicamera2, k: int, exposure: int, gain: float) -> None:
        self.cam, self.k, self.exposure, self.gain = cam, k, exposure, gain
        self.released = False

    def get_metadata(self) -> dict[str, Any]:
        return {
            "SensorTimestamp": self.cam.readout_ns(self.k),
            "ExposureTime": self.exposure,
            "AnalogueGain": self.gain,
            "FrameDuration": self.cam.period_us,
        }

    def make_array(self, name: str) -> np.ndarray:
        assert not self.released, "make_array on a released request"
        stream = self.cam.config[name]
        assert stream["format"] == "YUV420"
        w, h = stream["size"]
        stride = (w + 63) // 64 * 64
        arr = np.full((h * 3 // 2, stride), 128, np.uint8)
        arr[:h, :] = 0xEE  # padding past the width
        arr[:h, :w] = self.cam.luma(self.k, name, w, h)
        return arr

    def release(self) -> None:
        assert not self.released, "request released twice"
        self.released = True
        self.cam.held -= 1


class FakePicamera2:
    cameras = 1  # set to 0 to behave like a Pi with no camera attached

    def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
        if camera_num >= self.cameras:
            raise IndexError("list index out of range")
        self.tuning = tuning
        self.clock: FakeClock = type(self).clock_for_next
        self.config: dict[str, Any] = {}
        self.controls: list[tuple[int, dict[str, Any]]] = []
        self.started = False
        self.closed = False
        self.held = 0
        self.handed_out = -1
        self.origin = 0
        self.period_us = 16667
        self.stall = False  # no frames arrive: a capture times out

    clock_for_next: FakeClock = FakeClock()

    @staticmethod
    def load_tuning_file(tuning_file: str, dir: str | None = None) -> dict[str, Any]:
        if tuning_file not in TUNING_FILES:
            raise RuntimeError(f"Tuning file {tuning_file} not found")
        return {"version": 2.0, "target": "bcm2835", "file": tuning_file}

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: Any = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str = "main",
        encode: str = "main",
        queue: bool = True,
        sensor: Any = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        return {
            "main": dict(main or {}),
            "lores": dict(lores) if lores else None,
            "buffer_count": buffer_count,
            "queue": queue,
            "controls": dict(controls or {}),
        }

    def configure(self, config: dict[str, Any]) -> None:
        assert not self.started
        self.config = config
        fdl = config["controls"].get("FrameDurationLimits")
        if fdl:
            self.period_us = fdl[0]
        self.controls = [(0, dict(config["controls"]))]

    def start(self) -> None:
        assert self.config, "start before configure"
        self.started = True
        self.origin = self.clock.monotonic_ns()

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        assert self.held == 0, "closed while holding requests"
        self.closed = True

    def set_controls(self, controls: dict[str, Any]) -> None:
        k = self._latest_done() + 1 + CONTROL_LATENCY
        self.controls.append((k, dict(controls)))

    # -- the frame stream -------------------------------------------------------------------

    def readout_ns(self, k: int) -> int:
        return self.origin + (k + 1) * self.period_us * 1000

    def _latest_done(self) -> int:
        return (self.clock.monotonic_ns() - self.origin) // (self.period_us * 1000) - 1

    def _controls(self, k: int) -> tuple[int, float]:
        state: dict[str, Any] = {}
        for first, c in self.controls:
            if first <= k:
                state.update(c)
        return int(state["ExposureTime"]), float(state["AnalogueGain"])

    def luma(self, k: int, name: str, w: int, h: int) -> np.ndarray:
        return np.full((h, w), 20 + k % 200, np.uint8)

    def capture_request(
        self, wait: float | None = None, signal_function: Any = None, flush: Any = None
    ) -> FakeRequest:
        assert self.started, "capture before start"
        if self.stall:
            self.clock.advance(wait or 1.0)
            raise TimeoutError("job timed out")
        if flush is True:
            flush = self.clock.monotonic_ns()
        k = max(self._latest_done(), self.handed_out + 1)
        if not self.config["queue"]:
            k = max(k, self._latest_done())
        while True:
            exposure, gain = self._controls(k)
            if not flush or self.readout_ns(k) - 1000 * exposure >= flush:
                break
            k += 1
        if self.readout_ns(k) > self.clock.monotonic_ns():
            self.clock.advance_to(self.readout_ns(k))
        self.handed_out = k
        self.held += 1
        return FakeRequest(self, k, exposure, gain)

    @contextlib.contextmanager
    def captured_request(self, wait: float | None = None, flush: Any = None) -> Iterator[FakeRequest]:
        request = self.capture_request(wait=wait, flush=flush)
        try:
            yield request
        finally:
            request.release()
