"""The real camera: picamera2 driving a NoIR camera module.

picamera2 probes devices and needs libcamera as soon as it is imported, so it
is imported only when a :class:`PiCamera` starts, never at module level; tests
pass a stand-in class as ``backend``.

Frames are copied out of the camera's buffers at once and the request released,
so a buffer is never held; nothing here writes a frame anywhere.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import numpy as np

from device.config import CameraConfig
from device.errors import CameraError
from device.hardware.camera import Frame

#: how long to wait for one frame before calling the camera stalled
FRAME_TIMEOUT_S = 1.0


class PiCamera:
    """Manual-exposure NoIR capture: a YUV420 main stream and a lores presence stream."""

    def __init__(self, *, config: CameraConfig, backend: Any = None) -> None:
        self._config = config
        self._backend = backend
        self._cam: Any = None

    @property
    def main_size(self) -> tuple[int, int]:
        return self._config.main_size

    def start(self) -> None:
        if self._cam is not None:
            return
        cfg = self._config
        try:
            backend = self._backend
            if backend is None:
                from picamera2 import Picamera2

                backend = Picamera2
            tuning = backend.load_tuning_file(cfg.tuning_file)
            cam = backend(tuning=tuning)
        except CameraError:
            raise
        except Exception as exc:  # picamera2 raises bare RuntimeError/IndexError/OSError
            raise CameraError(f"cannot open the camera: {exc}") from exc
        self._cam = cam
        period_us = round(1e6 / cfg.frame_rate)
        try:
            video = cam.create_video_configuration(
                main={"size": cfg.main_size, "format": "YUV420"},
                lores={"size": cfg.lores_size, "format": "YUV420"},
                buffer_count=cfg.buffer_count,
                queue=False,  # never hand out a frame that waited in a queue
                controls={
                    "FrameDurationLimits": (period_us, period_us),
                    "AeEnable": False,
                    "AwbEnable": False,
                    "ExposureTime": cfg.exposure_min_us,
                    "AnalogueGain": cfg.gain_min,
                },
            )
            cam.configure(video)
            cam.start()
        except Exception as exc:
            self.close()
            raise CameraError(f"cannot start the camera: {exc}") from exc

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
                y = np.array(request.make_array(stream)[:h, :w], dtype=np.uint8, copy=True)
        except TimeoutError as exc:
            raise CameraError(f"no frame from the camera within {FRAME_TIMEOUT_S:g} s") from exc
        except Exception as exc:
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

    def _started(self) -> Any:
        if self._cam is None:
            raise CameraError("the camera is not started")
        return self._cam

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            cam.stop()
        finally:
            cam.close()

    def __enter__(self) -> PiCamera:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
