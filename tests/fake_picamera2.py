"""A stand-in for the parts of picamera2 that device.hardware.picamera uses, following the real
library (raspberrypi/picamera2 0.3.x) and Raspberry Pi's libcamera where the scanner depends on
them. Each behaviour names the source it follows; device.hardware.sensors holds the sensor facts.

- ``global_camera_info`` and ``IndexError`` for a missing camera: ``picamera2.py`` ``__init__``
  indexes ``global_camera_info()[camera_num]`` outside its try block.
- A tuning dict goes to a temporary file in ``$TMPDIR`` (``picamera2.py`` ``__init__``:
  ``tempfile.NamedTemporaryFile``); ``load_tuning_file`` finds only files that exist
  (``src/ipa/rpi/{vc4,pisp}/data``) and raises ``RuntimeError("Tuning file not found")``.
- ``create_video_configuration`` asks for ``NoiseReductionMode`` Fast and 30 fps unless told
  otherwise (``controls = {...} | controls``); with no ``sensor=``, the mode nearest the main
  size (``_make_libcamera_config`` ``score_mode``): IMX219's cropped 640x480 mode for 640x480.
- ``FrameDurationLimits`` outside the mode's limits are clamped without a word
  (``src/ipa/rpi/common/ipa_base.cpp``); ``FrameDuration`` in the metadata says what was given.
- ``set_controls`` only records: the controls ride on the next request that ``release()``
  re-queues (``request.py``), behind the ``buffer_count`` requests already queued, then take the
  sensor's delays (``camera_sensor_properties.cpp``).
- ``queue=False``: a capture waits for a frame that completes after it is asked for
  (``_max_queue_len = 0``); ``flush`` drops frames exposed before it, by exposure start
  (``wait_for_timestamp_``: ``SensorTimestamp - 1000 * ExposureTime``).
- A ``wait=`` timeout raises ``TimeoutError`` and leaves the job queued (``dispatch_functions``
  and ``Job``): it later takes a frame that nobody releases, and ``stop()`` waits behind it (here
  it raises instead of hanging); ``cancel_all_and_flush()`` cancels it.
- On a Pi 5 (PiSP) any ``NoiseReductionMode`` but Off blends each frame with the one before
  (temporal denoise, ``src/ipa/rpi/pisp/pisp.cpp``); a Pi 4 (VC4) has none.
Time is a FakeClock, so waiting for a frame moves time instead of sleeping.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from device.clock import FakeClock
from device.hardware import sensors as S

#: the share of the previous output temporal denoise keeps (a recursive filter)
TDN_KEEP = 0.5


class FakeRequest:
    def __init__(self, cam: FakePicamera2, k: int) -> None:
        self.cam, self.k = cam, k
        self.exposure, self.gain = cam.settings_of(k)
        self.released = False

    def get_metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {
            "SensorTimestamp": self.cam.readout_ns(self.k),
            "ExposureTime": self.exposure,
            "AnalogueGain": self.gain,
            "FrameDuration": self.cam.period_us,
        }
        if self.cam.sensor.has_lens_control:
            md["LensPosition"] = float(self.cam.state.get("LensPosition", 1.0))
        return md

    def make_array(self, name: str) -> np.ndarray:
        assert not self.released, "make_array on a released request"
        stream = self.cam.config[name]
        assert stream["format"] == "YUV420"
        w, h = stream["size"]
        stride = (w + 63) // 64 * 64
        arr = np.full((h * 3 // 2, stride), 128, np.uint8)
        arr[:h, :] = 0xEE  # padding past the width
        arr[:h, :w] = self.cam.luma(self.k, w, h)
        return arr

    def release(self) -> None:
        assert not self.released, "request released twice"
        self.released = True
        self.cam.held -= 1
        self.cam.requeue()


class FakePicamera2:
    cameras = 1  # set to 0 to behave like a Pi with no camera attached
    model = "imx219"  # the sensor's name as libcamera reports it (Model)
    platform = "pisp"  # "pisp": a Pi 5; "vc4": a Pi 4
    version = "0.3.33"  # what importlib.metadata would say of the installed picamera2
    mono = False  # a mono sensor (imx296_mono) offers no colour controls
    #: a line's time at the full-field mode: the IPA sets exposure in whole lines and reports what
    #: the sensor used (src/ipa/rpi/cam_helper/cam_helper.cpp exposureLines / exposure)
    line_us = 18.9
    clock_for_next: FakeClock = FakeClock()

    @classmethod
    def global_camera_info(cls) -> list[dict[str, Any]]:
        return [
            {
                "Model": cls.model,
                "Location": 2,
                "Rotation": 0,
                "Id": f"/base/soc/i2c0mux/{cls.model}@10",
                "Num": 0,
            }
            for _ in range(cls.cameras)
        ]

    def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
        type(self).global_camera_info()[camera_num]  # IndexError without a camera, as the real one
        self.sensor = S.SENSORS[self.model.split("_")[0]]
        self.tuning = tuning
        # A dict is written to a temporary file that libcamera reads; a str is used as a path.
        self.tuning_written_to = tempfile.gettempdir() if isinstance(tuning, dict) else None
        self.clock: FakeClock = type(self).clock_for_next
        self.config: dict[str, Any] = {}
        self.state: dict[str, Any] = {}  # the controls in force on the sensor
        self.pending: dict[str, Any] = {}  # set_controls waiting for the next re-queued request
        self.changes: list[tuple[int, str, Any]] = []  # (first frame, control, value)
        self.started = False
        self.closed = False
        self.held = 0
        self.handed_out = -1
        self.origin = 0
        self.period_us = 33333
        self.stall = False  # no frames arrive: a capture times out
        self.stale_jobs = 0  # timed-out captures still queued
        self.leaked = 0  # frames stale jobs took and nobody released
        #: the scene's brightness in frame k (a test lights it as its LEDs would)
        self.scene: Callable[[int], float] = lambda k: float(20 + k % 200)
        self._out: dict[int, float] = {}

    @property
    def camera_properties(self) -> dict[str, Any]:
        # The whole array is larger than the active area that crop_limits are measured on
        # (src/libcamera/sensor/camera_sensor_legacy.cpp: PixelArraySize, PixelArrayActiveAreas).
        w, h = self.sensor.array
        return {
            "Model": self.model,
            "PixelArraySize": (w + 16, h + 16),
            "PixelArrayActiveAreas": [(8, 8, w, h)],
        }

    def _check_controls(self, controls: dict[str, Any]) -> None:
        # picamera2 controls.py __setattr__: "Control X is not advertised by libcamera".
        for name in controls:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        controls: dict[str, tuple[Any, Any, Any]] = {
            "ExposureTime": (1, 66666, 20000),
            "AnalogueGain": (1.0, 16.0, 1.0),
            "NoiseReductionMode": (0, 4, 0),
            "FrameDurationLimits": (8000, 10_000_000, 33333),
            "AeEnable": (False, True, True),
        }
        if not self.mono:  # colour controls only for a colour sensor (ipa_base.cpp ipaColourControls)
            controls["AwbEnable"] = (False, True, True)
        if self.sensor.has_lens_control:
            controls.update({"LensPosition": (0.0, 15.0, 1.0), "AfMode": (0, 2, 0)})
        return controls

    @property
    def sensor_modes(self) -> list[dict[str, Any]]:
        assert not self.started, "sensor_modes configures the camera for each mode: stop it first"
        return [
            {
                "format": f"SRGGB{m.bit_depth}_CSI2P",
                "unpacked": f"SRGGB{m.bit_depth}",
                "bit_depth": m.bit_depth,
                "size": m.size,
                "fps": m.fps,
                "crop_limits": m.crop,
                "exposure_limits": (13, 66666, None),
            }
            for m in self.sensor.modes
        ]

    @staticmethod
    def load_tuning_file(tuning_file: str, dir: str | None = None) -> dict[str, Any]:
        names = {name for s in S.SENSORS.values() for name in s.tuning_files}
        if tuning_file not in names:
            raise RuntimeError("Tuning file not found")
        return {"version": 2.0, "target": "pisp", "file": tuning_file}

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
            "sensor": dict(sensor or {}),
            "controls": {"NoiseReductionMode": S.NR_FAST, "FrameDurationLimits": (33333, 33333)}
            | dict(controls or {}),
        }

    def _mode_for(self, config: dict[str, Any]) -> S.Mode:
        size = tuple(config["sensor"].get("output_size") or config["main"]["size"])
        for m in self.sensor.modes:
            if m.size == size:
                return m

        def score(m: S.Mode) -> float:  # picamera2's score_mode, sizes only
            dx, dy = m.size[0] - size[0], m.size[1] - size[1]
            return (abs(dx) * (2 if dx < 0 else 0.25)) + (abs(dy) * (2 if dy < 0 else 0.25))

        return min(self.sensor.modes, key=score)

    def configure(self, config: dict[str, Any]) -> None:
        assert not self.started
        self._check_controls(config["controls"])
        self.config = config
        self.mode = self._mode_for(config)
        lo = round(1e6 / self.mode.fps)
        fdl = config["controls"]["FrameDurationLimits"]
        self.period_us = min(max(fdl[0], lo), 10_000_000)  # clamped to the mode, silently
        self.state = dict(config["controls"])

    def start(self) -> None:
        assert self.config, "start before configure"
        self.started = True
        self.origin = self.clock.monotonic_ns()

    def stop(self) -> None:
        if self.stale_jobs:
            raise RuntimeError("stop() would wait forever behind a capture job nobody collects")
        self.started = False

    def close(self) -> None:
        assert self.held == 0, "closed while holding requests"
        self.closed = True

    def cancel_all_and_flush(self) -> None:
        self.stale_jobs = 0

    def set_controls(self, controls: dict[str, Any]) -> None:
        self._check_controls(controls)
        self.pending.update(controls)

    # -- the frame stream -------------------------------------------------------------------

    def readout_ns(self, k: int) -> int:
        return self.origin + (k + 1) * self.period_us * 1000

    def _latest_done(self) -> int:
        return (self.clock.monotonic_ns() - self.origin) // (self.period_us * 1000) - 1

    def requeue(self) -> None:
        """A released request goes back to the camera carrying the pending controls: it is the
        frame after the ``buffer_count`` already queued, and the sensor's delays follow."""
        if not self.pending:
            return
        k0 = self._latest_done() + self.config["buffer_count"]
        for name, value in self.pending.items():
            delay = {"ExposureTime": self.sensor.exposure_delay, "AnalogueGain": self.sensor.gain_delay}
            self.changes.append((k0 + delay.get(name, 0), name, value))
        self.pending = {}

    def settings_of(self, k: int) -> tuple[int, float]:
        state = dict(self.config["controls"])
        for first, name, value in sorted(self.changes, key=lambda c: c[0]):
            if first <= k:
                state[name] = value
        self.state = state
        # The sensor exposes whole lines, and libcamera reports what it used.
        lines = max(1, int(int(state["ExposureTime"]) / self.line_us))
        return round(lines * self.line_us), float(state["AnalogueGain"])

    def luma(self, k: int, w: int, h: int) -> np.ndarray:
        return np.full((h, w), round(self.output(k)), np.uint8)

    def output(self, k: int) -> float:
        """The frame's brightness after the ISP: temporal denoise on a Pi 5 unless Off."""
        if k not in self._out:
            tdn = self.platform == "pisp" and self.config["controls"].get("NoiseReductionMode") != S.NR_OFF
            here = self.scene(k)
            self._out[k] = (
                here if not tdn or k == 0 else TDN_KEEP * self.output(k - 1) + (1 - TDN_KEEP) * here
            )
        return self._out[k]

    def capture_request(
        self, wait: float | None = None, signal_function: Any = None, flush: Any = None
    ) -> FakeRequest:
        assert self.started, "capture before start"
        if self.stall:
            self.clock.advance(wait or 1.0)
            self.stale_jobs += 1  # the job stays in the list when its wait runs out
            raise TimeoutError("job timed out")
        if flush is True:
            flush = self.clock.monotonic_ns()
        # queue=False: nothing completed before this call is handed out.
        k = max(self._latest_done() + 1, self.handed_out + 1)
        if self.config["queue"]:
            k = max(self._latest_done(), self.handed_out + 1)
        while self.stale_jobs:  # an old job takes the next frame and never gives it back
            self.stale_jobs -= 1
            self.leaked += 1
            k += 1
        while flush:
            exposure, _ = self.settings_of(k)
            if self.readout_ns(k) - 1000 * exposure >= flush:
                break
            k += 1
        if self.readout_ns(k) > self.clock.monotonic_ns():
            self.clock.advance_to(self.readout_ns(k))
        self.handed_out = k
        self.held += 1
        return FakeRequest(self, k)

    @contextlib.contextmanager
    def captured_request(self, wait: float | None = None, flush: Any = None) -> Iterator[FakeRequest]:
        request = self.capture_request(wait=wait, flush=flush)
        try:
            yield request
        finally:
            request.release()
