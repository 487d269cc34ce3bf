"""The real camera: picamera2 driving a NoIR camera module.

picamera2 probes devices and needs libcamera as soon as it is imported, so it
is imported only when a :class:`PiCamera` starts, never at module level; tests
pass a stand-in class as ``backend`` (tests/fake_picamera2.py, which names the
picamera2 and libcamera sources each of its behaviours follows).

What the real stack does that shapes this adapter (device.hardware.sensors has the sources):
- the sensor mode is chosen here, the fastest that sees the lens's whole field: left to
  itself picamera2 picks IMX219's cropped 640x480 mode for a 640x480 stream;
- libcamera clamps the frame rate to the mode without a word: the rate a frame reports is
  the one used, and one below MIN_FRAME_RATE is refused;
- ``NoiseReductionMode`` is Off: picamera2's video default (Fast) turns on the Pi 5's temporal
  denoise, which blends each frame with the one before, so a sector frame would carry the light
  of the pattern before it;
- a control reaches the sensor on a re-queued request, behind ``buffer_count`` queued ones,
  then takes the sensor's delay: :attr:`settle_frames`;
- a capture that times out leaves its job queued, to take a frame nobody releases and to hold
  up ``stop()``: every timeout cancels it (``cancel_all_and_flush``);
- the Camera Module 3 starts focused at about 1 m: its lens is set for the palm's distance;
- the tuning file must exist and be the sensor's; picamera2 must have ``captured_request(flush=)``.

Frames are copied out of the camera's buffers at once and the request released,
so a buffer is never held; nothing here writes a frame anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from device.config import CameraConfig
from device.errors import CameraError
from device.hardware import sensors as S
from device.hardware.camera import Frame

#: how long to wait for one frame before calling the camera stalled
FRAME_TIMEOUT_S = 1.0
#: libcamera's AfModeManual (control_ids_core.yaml)
AF_MODE_MANUAL = 0


@dataclass(frozen=True)
class CameraReport:
    """What the camera stack gave, said at start and by ``palm selftest``."""

    model: str
    mode: tuple[int, int]
    mode_fps: float
    fps: float
    asked_fps: float
    tuning_file: str
    picamera2: str
    lens_dioptres: float | None

    def describe(self) -> str:
        rate = f"{self.fps:.2f} fps"
        if abs(self.fps - self.asked_fps) > 0.05:
            rate += f" (asked {self.asked_fps:g}: the mode's limit)"
        lens = f", lens at {self.lens_dioptres:.1f} dioptres" if self.lens_dioptres is not None else ""
        return (
            f"sensor {self.model}, mode {self.mode[0]}x{self.mode[1]} (full field), {rate}, "
            f"tuning {self.tuning_file}, denoise off{lens}, picamera2 {self.picamera2}"
        )


def _installed_picamera2() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("picamera2")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class PiCamera:
    """Manual-exposure NoIR capture: a YUV420 main stream and a lores presence stream."""

    def __init__(
        self,
        *,
        config: CameraConfig,
        backend: Any = None,
        backend_version: Callable[[], str] | None = None,
    ) -> None:
        """``backend``: a Picamera2 class (the real one unless given); ``backend_version``: what
        the installed picamera2's metadata says."""
        self._config = config
        self._backend = backend
        self._backend_version = backend_version or _installed_picamera2
        self._cam: Any = None
        self._sensor: S.Sensor | None = None
        self.report: CameraReport | None = None

    @property
    def main_size(self) -> tuple[int, int]:
        return self._config.main_size

    @property
    def settle_frames(self) -> int:
        """Frames after :meth:`set_manual` until a frame can show the new exposure and gain."""
        sensor = self._sensor or S.SENSORS["imx219"]
        return S.control_latency_frames(sensor, self._config.buffer_count)

    def describe(self) -> str:
        return self.report.describe() if self.report else "the camera is not started"

    def start(self) -> None:
        if self._cam is not None:
            return
        cfg = self._config
        try:
            backend = self._backend
            if backend is None:
                from picamera2 import Picamera2

                backend = Picamera2
            version = self._backend_version()
            if version != "unknown" and S.version_tuple(version) < S.PICAMERA2_MIN:
                raise CameraError(
                    f"picamera2 {version} is too old: the scanner needs 0.3.20 or newer "
                    "(captured_request(flush=)); sudo apt install --only-upgrade python3-picamera2"
                )
            info = backend.global_camera_info()
            if not info:
                raise CameraError("no camera found: check the ribbon cable and `rpicam-hello --list-cameras`")
            model = str(info[0]["Model"])
            sensor = S.SENSORS.get(model.split("_", maxsplit=1)[0])
            if sensor is None:
                raise CameraError(
                    f"camera sensor {model!r} is not one the scanner knows ({', '.join(S.SENSORS)})"
                )
            tuned_for = S.sensor_of_tuning(cfg.tuning_file)
            if tuned_for != sensor.model:
                noir = [t for t in sensor.tuning_files if "noir" in t] or list(sensor.tuning_files)
                raise CameraError(
                    f"[camera] tuning_file = {cfg.tuning_file!r} is not for this camera's sensor "
                    f"{model}: use {noir[0]!r}"
                )
            tuning = backend.load_tuning_file(cfg.tuning_file)
            cam = backend(tuning=tuning)
        except CameraError:
            raise
        except Exception as exc:  # picamera2 raises bare RuntimeError/IndexError/OSError
            raise CameraError(f"cannot open the camera: {exc}") from exc
        self._cam, self._sensor = cam, sensor
        try:
            self.report = self._configure(cam, sensor, model, version)
        except Exception as exc:
            self.close()
            if isinstance(exc, CameraError):
                raise
            raise CameraError(f"cannot start the camera: {exc}") from exc

    def _configure(self, cam: Any, sensor: S.Sensor, model: str, version: str) -> CameraReport:
        cfg = self._config
        props = cam.camera_properties
        # crop_limits are measured on the active area, which is smaller than the whole array.
        active = props.get("PixelArrayActiveAreas") or [(0, 0, *props["PixelArraySize"])]
        array = tuple(active[0][2:4])
        # A sensor that is not raw is listed by its format alone (picamera2.py sensor_modes).
        reported = [
            S.Mode(tuple(m["size"]), float(m["fps"]), tuple(m["crop_limits"]), int(m.get("bit_depth", 0)))
            for m in cam.sensor_modes
            if "crop_limits" in m and "fps" in m
        ]
        mode = S.capture_mode(reported, (int(array[0]), int(array[1])))
        if mode is None:
            raise CameraError(f"camera {model} offers no mode that sees its whole field")
        fps = min(cfg.frame_rate, mode.fps)
        if fps < S.MIN_FRAME_RATE:
            raise CameraError(
                f"camera {model}'s full-field mode runs at {mode.fps:g} fps, under the "
                f"{S.MIN_FRAME_RATE:g} a burst needs"
            )
        period_us = round(1e6 / fps)
        controls: dict[str, Any] = {
            "FrameDurationLimits": (period_us, period_us),
            "AeEnable": False,
            "AwbEnable": False,
            "ExposureTime": cfg.exposure_min_us,
            "AnalogueGain": cfg.gain_min,
            "NoiseReductionMode": S.NR_OFF,
        }
        dioptres = None
        if "LensPosition" in cam.camera_controls:
            lo, hi, _ = cam.camera_controls["LensPosition"]
            dioptres = float(min(max(S.lens_dioptres(cfg.focus_distance_mm), lo), hi))
            controls |= {"AfMode": AF_MODE_MANUAL, "LensPosition": dioptres}
        # picamera2 refuses a control the camera does not advertise (a mono sensor has no AWB).
        offered = cam.camera_controls
        controls = {k: v for k, v in controls.items() if k in offered}
        video = cam.create_video_configuration(
            main={"size": cfg.main_size, "format": "YUV420"},
            lores={"size": cfg.lores_size, "format": "YUV420"},
            buffer_count=cfg.buffer_count,
            queue=False,  # never hand out a frame that waited in a queue
            sensor={"output_size": mode.size, "bit_depth": mode.bit_depth},
            controls=controls,
        )
        cam.configure(video)
        cam.start()
        # libcamera clamps the frame duration to the mode silently: the metadata says what it gave.
        with cam.captured_request(wait=FRAME_TIMEOUT_S * 5) as request:
            got_us = float(request.get_metadata().get("FrameDuration", period_us))
        return CameraReport(
            model=model,
            mode=mode.size,
            mode_fps=mode.fps,
            fps=1e6 / got_us,
            asked_fps=cfg.frame_rate,
            tuning_file=cfg.tuning_file,
            picamera2=version,
            lens_dioptres=dioptres,
        )

    def set_manual(self, *, exposure_us: int, gain: float) -> None:
        cfg = self._config
        exposure_us = int(min(max(exposure_us, cfg.exposure_min_us), cfg.exposure_max_us))
        gain = float(min(max(gain, cfg.gain_min), cfg.gain_max))
        try:
            self._started().set_controls(
                {"AeEnable": False, "ExposureTime": exposure_us, "AnalogueGain": gain}
            )
        except CameraError:
            raise
        except Exception as exc:
            raise CameraError(f"camera refused exposure {exposure_us} us, gain {gain}: {exc}") from exc

    def capture(self, *, not_before_ns: int | None = None) -> Frame:
        w, h = self._config.main_size
        return self._grab("main", w, h, flush=not_before_ns)

    def preview(self, *, not_before_ns: int | None = None) -> Frame:
        w, h = self._config.lores_size
        return self._grab("lores", w, h, flush=not_before_ns)

    def _grab(self, stream: str, w: int, h: int, *, flush: int | None) -> Frame:
        cam = self._started()
        try:
            with cam.captured_request(wait=FRAME_TIMEOUT_S, flush=flush) as request:
                md = request.get_metadata()
                # YUV420 arrives as (h * 3/2, stride): the first h rows are the Y plane.
                # make_array hands back a copy of the whole buffer: keep the Y plane, zero the rest.
                whole = request.make_array(stream)
                y = np.array(whole[:h, :w], dtype=np.uint8, copy=True)
                whole.fill(0)
        except TimeoutError as exc:
            self._cancel_jobs(cam)
            raise CameraError(f"no frame from the camera within {FRAME_TIMEOUT_S:g} s") from exc
        except Exception as exc:
            self._cancel_jobs(cam)
            raise CameraError(f"camera capture failed: {exc}") from exc
        try:
            exposure_us = int(md["ExposureTime"])
            # SensorTimestamp is the readout of the first row: exposure began earlier.
            start_ns = int(md["SensorTimestamp"]) - 1000 * exposure_us
            gain = float(md["AnalogueGain"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CameraError(f"camera frame metadata lacks {exc}") from exc
        if y.shape != (h, w):
            raise CameraError(f"camera {stream} stream gave {y.shape[1]}x{y.shape[0]}, not {w}x{h}")
        return Frame(pixels=y, timestamp_ns=start_ns, exposure_us=exposure_us, gain=gain, stream=stream)

    @staticmethod
    def _cancel_jobs(cam: Any) -> None:
        """A job whose wait ran out is still queued: cancel it before it takes a frame for nobody."""
        try:
            cam.cancel_all_and_flush()
        except Exception as exc:
            raise CameraError(f"camera jobs could not be cancelled: {exc}") from exc

    def _started(self) -> Any:
        if self._cam is None:
            raise CameraError("the camera is not started")
        return self._cam

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            try:
                cam.cancel_all_and_flush()
                cam.stop()
            finally:
                cam.close()
        except Exception as exc:  # picamera2's own errors are RuntimeErrors: say they are the camera's
            raise CameraError(f"the camera did not stop cleanly: {exc}") from exc

    def __enter__(self) -> PiCamera:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
