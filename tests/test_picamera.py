"""The real camera adapter against a faithful stand-in of the picamera2 calls it makes."""

from __future__ import annotations

import dataclasses

import pytest

from device.clock import FakeClock
from device.config import CameraConfig, Config
from device.errors import CameraError
from device.hardware.camera import capture_burst
from device.hardware.picamera import PiCamera
from tests.fake_picamera2 import FakePicamera2


@pytest.fixture
def backend(clock: FakeClock) -> type[FakePicamera2]:
    class Backend(FakePicamera2):
        clock_for_next = clock
        instances: list[FakePicamera2] = []  # noqa: RUF012

        def __init__(self, camera_num: int = 0, tuning: object = None) -> None:
            super().__init__(camera_num, tuning)
            Backend.instances.append(self)

    return Backend


def test_configures_noir_manual_exposure_and_no_queue(config: Config, backend: type[FakePicamera2]) -> None:
    with PiCamera(config=config.camera, backend=backend) as cam:
        fake = backend.instances[0]  # type: ignore[attr-defined]
        assert fake.tuning["file"] == "imx219_noir.json"
        c = fake.config
        assert c["main"] == {"size": (640, 480), "format": "YUV420"}
        assert c["lores"] == {"size": (320, 240), "format": "YUV420"}
        assert c["queue"] is False and c["buffer_count"] == 4
        assert c["controls"]["AeEnable"] is False
        assert c["controls"]["FrameDurationLimits"] == (16667, 16667)
        assert cam.main_size == (640, 480)
    assert fake.closed and fake.held == 0


def test_frames_are_the_y_plane_with_exposure_start_timestamps(
    config: Config, backend: type[FakePicamera2], clock: FakeClock
) -> None:
    with PiCamera(config=config.camera, backend=backend) as cam:
        fake = backend.instances[0]  # type: ignore[attr-defined]
        frame = cam.capture()
        assert frame.pixels.shape == (480, 640)  # stride padding and chroma cut away
        assert (frame.pixels != 0xEE).all() and frame.stream == "main"
        md_readout = fake.readout_ns(fake.handed_out)
        assert frame.timestamp_ns == md_readout - 1000 * frame.exposure_us
        lores = cam.preview()
        assert lores.pixels.shape == (240, 320) and lores.stream == "lores"
        assert fake.held == 0  # every request released at once


def test_not_before_skips_frames_exposed_earlier(
    config: Config, backend: type[FakePicamera2], clock: FakeClock
) -> None:
    with PiCamera(config=config.camera, backend=backend) as cam:
        cam.capture()
        clock.advance(0.005)
        switched = clock.monotonic_ns()
        frame = cam.capture(not_before_ns=switched)
        assert frame.timestamp_ns >= switched
        assert frame.timestamp_ns - switched < 2 * 16_667_000


def test_burst_waits_for_controls_to_settle_and_for_each_switch(
    config: Config, backend: type[FakePicamera2], clock: FakeClock
) -> None:
    switches: list[tuple[str, int]] = []

    class Ring:
        def show(self, pattern: str) -> int:
            clock.advance(0.001)
            switches.append((pattern, clock.monotonic_ns()))
            return clock.monotonic_ns()

    with PiCamera(config=config.camera, backend=backend) as cam:
        cam.capture()
        frames = capture_burst(
            camera=cam, ring=Ring(), patterns=["ambient", "flood", "sector-0"], exposure_us=3000, gain=2.0
        )
    assert [f.leds for f in frames] == ["ambient", "flood", "sector-0"]
    for frame, (_, at) in zip(frames, switches, strict=True):
        assert frame.timestamp_ns >= at
        assert (frame.exposure_us, frame.gain) == (3000, 2.0)


def test_exposure_and_gain_are_clamped_to_the_config(config: Config, backend: type[FakePicamera2]) -> None:
    with PiCamera(config=config.camera, backend=backend) as cam:
        cam.set_manual(exposure_us=50_000, gain=40.0)
        fake = backend.instances[0]  # type: ignore[attr-defined]
        assert fake.controls[-1][1] == {"AeEnable": False, "ExposureTime": 8000, "AnalogueGain": 8.0}


def test_errors_are_translated(config: Config, backend: type[FakePicamera2]) -> None:
    backend.cameras = 0
    with pytest.raises(CameraError, match="cannot open the camera: list index out of range"):
        PiCamera(config=config.camera, backend=backend).start()
    backend.cameras = 1
    bad = dataclasses.replace(config.camera, tuning_file="nope.json")
    with pytest.raises(CameraError, match=r"Tuning file nope\.json not found"):
        PiCamera(config=bad, backend=backend).start()
    cam = PiCamera(config=config.camera, backend=backend)
    with pytest.raises(CameraError, match="not started"):
        cam.capture()
    cam.start()
    backend.instances[-1].stall = True  # type: ignore[attr-defined]
    with pytest.raises(CameraError, match="no frame from the camera within 1 s"):
        cam.capture()
    cam.close()
    cam.close()


def test_real_adapter_imports_nothing_until_started(config: Config) -> None:
    import sys

    PiCamera(config=CameraConfig())
    assert "picamera2" not in sys.modules


@pytest.mark.hardware
def test_real_camera_delivers_frames(config: Config) -> None:
    with PiCamera(config=config.camera) as cam:
        frame = cam.capture()
        assert frame.pixels.shape == (config.camera.main_size[1], config.camera.main_size[0])
