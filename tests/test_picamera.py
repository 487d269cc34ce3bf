"""The real camera adapter against a stand-in that behaves as picamera2 and libcamera do
(tests/fake_picamera2.py names the source file of each behaviour)."""

from __future__ import annotations

import dataclasses

import pytest

from device.clock import FakeClock
from device.config import CameraConfig, Config
from device.errors import CameraError
from device.hardware import sensors as S
from device.hardware.camera import capture_burst, settled
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


def camera(config: CameraConfig, backend: type[FakePicamera2]) -> PiCamera:
    return PiCamera(config=config, backend=backend, backend_version=lambda: backend.version)


def fake(backend: type[FakePicamera2]) -> FakePicamera2:
    return backend.instances[-1]  # type: ignore[attr-defined,no-any-return]


def test_configures_the_full_field_mode_manual_exposure_denoise_off_and_no_queue(
    config: Config, backend: type[FakePicamera2]
) -> None:
    with camera(config.camera, backend) as cam:
        f = fake(backend)
        assert f.tuning["file"] == "imx219_noir.json"
        c = f.config
        assert c["main"] == {"size": (640, 480), "format": "YUV420"}
        assert c["lores"] == {"size": (320, 240), "format": "YUV420"}
        assert c["queue"] is False and c["buffer_count"] == 4
        assert c["controls"]["AeEnable"] is False
        # picamera2 alone would pick the cropped 640x480 mode (a narrow field) for this stream.
        assert c["sensor"] == {"output_size": (1640, 1232), "bit_depth": 10}
        assert f.mode.full_field(f.sensor.array)
        assert c["controls"]["NoiseReductionMode"] == S.NR_OFF
        assert cam.main_size == (640, 480)
    assert f.closed and f.held == 0


def test_the_frame_rate_is_what_the_mode_gives_and_the_start_says_so(
    config: Config, backend: type[FakePicamera2]
) -> None:
    # 60 fps asked; IMX219's full-field mode gives 41.85 and libcamera clamps without a word.
    with camera(config.camera, backend) as cam:
        assert cam.report is not None
        assert cam.report.fps == pytest.approx(41.85, abs=0.01)
        line = cam.describe()
        assert "sensor imx219, mode 1640x1232 (full field), 41.85 fps (asked 60: the mode's limit)" in line
        assert "tuning imx219_noir.json, denoise off, picamera2 0.3.33" in line


def test_without_denoise_off_a_pi_5_blends_each_frame_with_the_one_before(
    config: Config, backend: type[FakePicamera2]
) -> None:
    # The fault the Off setting avoids: the stand-in's Pi 5 with picamera2's default (Fast).
    f = backend(0, None)
    f.configure(f.create_video_configuration(main={"size": (64, 48), "format": "YUV420"}, controls={}))
    f.start()
    f.scene = lambda k: 200.0 if k >= 3 else 0.0  # the ring comes on for frame 3
    assert [f.output(k) for k in range(2, 6)] == [0.0, 100.0, 150.0, 175.0]
    f.stop()
    f.close()


def test_a_burst_on_a_pi_5_carries_only_its_own_patterns_light(
    config: Config, backend: type[FakePicamera2], clock: FakeClock
) -> None:
    lit: list[tuple[int, float]] = []  # (from this time on, the scene's level)

    class Ring:
        def show(self, pattern: str) -> int:
            clock.advance(0.001)
            lit.append((clock.monotonic_ns(), {"ambient": 10.0, "flood": 200.0}.get(pattern, 60.0)))
            return clock.monotonic_ns()

    with camera(config.camera, backend) as cam:
        f = fake(backend)

        def scene(k: int) -> float:
            start = f.readout_ns(k) - 1000 * f.settings_of(k)[0]
            levels = [v for at, v in lit if at <= start]
            return levels[-1] if levels else 0.0

        f.scene = scene
        frames = capture_burst(
            camera=cam, ring=Ring(), patterns=["ambient", "flood", "sector-0"], exposure_us=3000, gain=2.0
        )
    assert [int(fr.pixels[0, 0]) for fr in frames] == [10, 200, 60]


def test_frames_are_the_y_plane_with_exposure_start_timestamps(
    config: Config, backend: type[FakePicamera2], clock: FakeClock
) -> None:
    with camera(config.camera, backend) as cam:
        f = fake(backend)
        frame = cam.capture()
        assert frame.pixels.shape == (480, 640)  # stride padding and chroma cut away
        assert (frame.pixels != 0xEE).all() and frame.stream == "main"
        assert frame.timestamp_ns == f.readout_ns(f.handed_out) - 1000 * frame.exposure_us
        lores = cam.preview()
        assert lores.pixels.shape == (240, 320) and lores.stream == "lores"
        assert f.held == 0  # every request released at once


def test_queue_false_never_hands_out_a_frame_completed_before_the_request(
    config: Config, backend: type[FakePicamera2], clock: FakeClock
) -> None:
    with camera(config.camera, backend) as cam:
        f = fake(backend)
        clock.advance(0.5)
        asked = clock.monotonic_ns()
        frame = cam.capture()
        assert f.readout_ns(f.handed_out) > asked
        assert frame.timestamp_ns + 1000 * frame.exposure_us > asked


def test_not_before_skips_frames_exposed_earlier(
    config: Config, backend: type[FakePicamera2], clock: FakeClock
) -> None:
    with camera(config.camera, backend) as cam:
        cam.capture()
        clock.advance(0.005)
        switched = clock.monotonic_ns()
        frame = cam.capture(not_before_ns=switched)
        assert frame.timestamp_ns >= switched
        assert frame.timestamp_ns - switched < 2 * 23_895_000


@pytest.mark.parametrize("buffers", [2, 4, 8])
def test_a_new_exposure_shows_behind_the_queued_requests_and_the_sensor_delay(
    config: Config, backend: type[FakePicamera2], clock: FakeClock, buffers: int
) -> None:
    cfg = dataclasses.replace(config.camera, buffer_count=buffers)
    with camera(cfg, backend) as cam:
        assert cam.settle_frames == buffers + 2  # IMX219: exposure 2 frames, gain 1
        cam.capture()
        cam.set_manual(exposure_us=3000, gain=2.0)
        seen = [settled(fr, 3000, 2.0) for fr in (cam.capture() for _ in range(cam.settle_frames + 1))]
        assert seen[-1]
        assert seen.index(True) >= buffers  # never within the frames already queued
        # A burst waits long enough at any buffer count (8 buffers: 10 frames, over the old 8 tries).
        frames = capture_burst(
            camera=cam, ring=_instant(clock), patterns=["flood"], exposure_us=5000, gain=3.0
        )
        assert settled(frames[0], 5000, 3.0) and frames[0].exposure_us != 5000  # whole lines


def _instant(clock: FakeClock) -> object:
    class Ring:
        def show(self, pattern: str) -> int:
            return clock.monotonic_ns()

    return Ring()


def test_burst_waits_for_controls_to_settle_and_for_each_switch(
    config: Config, backend: type[FakePicamera2], clock: FakeClock
) -> None:
    switches: list[tuple[str, int]] = []

    class Ring:
        def show(self, pattern: str) -> int:
            clock.advance(0.001)
            switches.append((pattern, clock.monotonic_ns()))
            return clock.monotonic_ns()

    with camera(config.camera, backend) as cam:
        cam.capture()
        frames = capture_burst(
            camera=cam, ring=Ring(), patterns=["ambient", "flood", "sector-0"], exposure_us=3000, gain=2.0
        )
    assert [f.leds for f in frames] == ["ambient", "flood", "sector-0"]
    for frame, (_, at) in zip(frames, switches, strict=True):
        assert frame.timestamp_ns >= at
        assert settled(frame, 3000, 2.0)


def test_exposure_and_gain_are_clamped_to_the_config(config: Config, backend: type[FakePicamera2]) -> None:
    with camera(config.camera, backend) as cam:
        cam.set_manual(exposure_us=50_000, gain=40.0)
        assert fake(backend).pending == {"AeEnable": False, "ExposureTime": 8000, "AnalogueGain": 8.0}


def test_a_timeout_cancels_its_job_so_no_frame_is_leaked_and_stop_returns(
    config: Config, backend: type[FakePicamera2]
) -> None:
    cam = camera(config.camera, backend)
    cam.start()
    f = fake(backend)
    f.stall = True
    with pytest.raises(CameraError, match="no frame from the camera within 1 s"):
        cam.capture()
    f.stall = False
    cam.capture()  # the camera is back: this frame is ours, none went to the timed-out job
    assert f.leaked == 0
    cam.close()  # picamera2's stop() would wait behind a job still queued
    assert f.closed


def test_picamera2_errors_on_stop_are_camera_errors(config: Config, backend: type[FakePicamera2]) -> None:
    cam = camera(config.camera, backend)
    cam.start()

    def broken() -> None:
        raise RuntimeError("Failed to stop camera")

    fake(backend).stop = broken  # type: ignore[method-assign]
    with pytest.raises(CameraError, match="did not stop cleanly: Failed to stop camera"):
        cam.close()
    cam.close()  # safe twice


def test_a_mono_sensor_is_not_asked_for_colour_controls(config: Config, backend: type[FakePicamera2]) -> None:
    # picamera2 refuses a control libcamera does not advertise; a mono IMX296 has no AWB.
    backend.model, backend.mono = "imx296", True
    cfg = dataclasses.replace(config.camera, tuning_file="imx296_mono.json")
    with camera(cfg, backend) as cam:
        assert "AwbEnable" not in fake(backend).config["controls"]
        assert cam.capture().pixels.shape == (480, 640)


def test_of_a_size_in_two_formats_the_deeper_is_taken(config: Config, backend: type[FakePicamera2]) -> None:
    class Both(backend):  # type: ignore[valid-type,misc]
        @property
        def sensor_modes(self) -> list[dict[str, object]]:
            modes = super().sensor_modes
            eight = [dict(m, bit_depth=8, format="SRGGB8", fps=m["fps"] * 2) for m in modes]
            return eight + modes  # listed first and faster, as an 8-bit format may be

    with camera(config.camera, Both) as cam:
        assert fake(backend).config["sensor"] == {"output_size": (1640, 1232), "bit_depth": 10}
        assert cam.report is not None and cam.report.fps == pytest.approx(41.85, abs=0.01)


def test_camera_module_3_is_focused_for_the_palm(config: Config, backend: type[FakePicamera2]) -> None:
    backend.model = "imx708_noir"
    cfg = dataclasses.replace(config.camera, tuning_file="imx708_noir.json")
    with camera(cfg, backend) as cam:
        c = fake(backend).config
        assert c["sensor"] == {"output_size": (2304, 1296), "bit_depth": 10}
        assert c["controls"]["AfMode"] == 0 and c["controls"]["LensPosition"] == pytest.approx(8.0)
        assert cam.report is not None and cam.report.fps == pytest.approx(56.03, abs=0.01)
        assert cam.settle_frames == 4 + 2  # IMX708: exposure and gain 2 frames each
        assert "lens at 8.0 dioptres" in cam.describe()
        assert cam.capture().pixels.shape == (480, 640)


@pytest.mark.parametrize(
    ("model", "tuning", "message"),
    [
        (
            "imx708_noir",
            "imx219_noir.json",
            r"'imx219_noir.json' is not for .* imx708_noir: use 'imx708_noir.json'",
        ),
        (
            "imx219",
            "imx708_wide_noir.json",
            r"is not for this camera's sensor imx219: use 'imx219_noir.json'",
        ),
        ("imx477", "imx477_noir.json", r"sensor 'imx477' is not one the scanner knows"),
    ],
)
def test_a_tuning_file_not_matched_to_the_sensor_is_refused(
    config: Config, backend: type[FakePicamera2], model: str, tuning: str, message: str
) -> None:
    backend.model = model
    cfg = dataclasses.replace(config.camera, tuning_file=tuning)
    with pytest.raises(CameraError, match=message):
        camera(cfg, backend).start()


def test_a_missing_tuning_file_is_refused(config: Config, backend: type[FakePicamera2]) -> None:
    backend.model = "imx296"
    cfg = dataclasses.replace(config.camera, tuning_file="imx296_noir.json")
    with pytest.raises(CameraError, match="cannot open the camera: Tuning file not found"):
        camera(cfg, backend).start()


def test_a_picamera2_without_flush_is_refused(config: Config, backend: type[FakePicamera2]) -> None:
    cam = PiCamera(config=config.camera, backend=backend, backend_version=lambda: "0.3.19-1")
    with pytest.raises(CameraError, match=r"picamera2 0\.3\.19-1 is too old: .*0\.3\.20"):
        cam.start()
    assert not backend.instances  # type: ignore[attr-defined]


def test_errors_are_translated(config: Config, backend: type[FakePicamera2]) -> None:
    backend.cameras = 0
    with pytest.raises(CameraError, match="no camera found"):
        camera(config.camera, backend).start()
    backend.cameras = 1
    cam = camera(config.camera, backend)
    with pytest.raises(CameraError, match="not started"):
        cam.capture()
    cam.start()
    fake(backend).stall = True
    with pytest.raises(CameraError, match="no frame from the camera within 1 s"):
        cam.capture()
    cam.close()
    cam.close()


def test_real_adapter_imports_nothing_until_started(config: Config) -> None:
    import sys

    PiCamera(config=CameraConfig())
    assert "picamera2" not in sys.modules and "libcamera" not in sys.modules


@pytest.mark.hardware
def test_real_camera_delivers_frames(config: Config) -> None:
    with PiCamera(config=config.camera) as cam:
        frame = cam.capture()
        assert frame.pixels.shape == (config.camera.main_size[1], config.camera.main_size[0])
        print(cam.describe())
