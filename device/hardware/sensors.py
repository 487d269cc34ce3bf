"""What the Raspberry Pi camera stack does with the NoIR modules, as facts the adapter, the
simulated camera and the tests' picamera2 stand-in share. Each fact names where it is read.

- Sensor modes (size, frame rate, field of view): the kernel drivers' mode tables
  (``drivers/media/i2c/imx219.c``, ``imx708.c``) as picamera2's ``sensor_modes`` reports them
  (``fps`` is ``1e6 / FrameDurationLimits[0]``, ``crop_limits`` the ``ScalerCrop`` maximum).
  A 640x480 main stream alone makes picamera2 pick IMX219's cropped 640x480 mode (its
  ``score_mode`` in ``picamera2.py`` favours the nearest size): a narrow field. Full-field modes
  run at 41.85 fps (IMX219 1640x1232) and 56.03 fps (IMX708 2304x1296), never 60.
- Control delays: libcamera's ``src/libcamera/sensor/camera_sensor_properties.cpp`` (frames
  from writing a control to the sensor until a frame shows it).
- Controls set with ``set_controls`` ride on the next request re-queued by ``release()``
  (picamera2 ``request.py``): up to ``buffer_count`` requests already queued go first.
- Tuning files: ``src/ipa/rpi/{vc4,pisp}/data/`` in Raspberry Pi's libcamera. There is no
  ``imx296_noir.json``.
- Denoise: on the Pi 5 (PiSP) every ``NoiseReductionMode`` but Off runs temporal denoise, which
  blends each frame with the previous ones (``src/ipa/rpi/pisp/pisp.cpp``, ``controller/rpi/
  denoise.cpp``); the Pi 4 (VC4) has no temporal denoise (``src/ipa/rpi/vc4/vc4.cpp``).
  picamera2's video configuration asks for Fast (``picamera2.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: libcamera's draft NoiseReductionModeEnum values (control_ids_draft.yaml)
NR_OFF, NR_FAST, NR_HIGH_QUALITY, NR_MINIMAL, NR_ZSL = 0, 1, 2, 3, 4
#: the first picamera2 with ``captured_request(flush=...)`` (CHANGELOG 0.3.20)
PICAMERA2_MIN = (0, 3, 20)
#: a burst's frames are compared pixel by pixel: below this rate a burst takes too long
MIN_FRAME_RATE = 30.0


@dataclass(frozen=True)
class Mode:
    size: tuple[int, int]
    fps: float
    crop: tuple[int, int, int, int]  # the part of the pixel array this mode reads (x, y, w, h)
    bit_depth: int = 10

    def full_field(self, array: tuple[int, int]) -> bool:
        """Whether this mode sees the whole field of the lens (not a crop of its middle)."""
        return self.crop[2] >= 0.95 * array[0] and self.crop[3] >= 0.95 * array[1]


def capture_mode(modes: Sequence[Mode], active: tuple[int, int]) -> Mode | None:
    """The mode the scanner runs in: of those that see the whole field (``active``: the active
    area, which ``crop`` is measured on), the deepest bits (each size is listed once per raw
    format), then the fastest, then the smallest. None if no mode sees the whole field."""
    wide = [m for m in modes if m.full_field(active)]
    return max(wide, key=lambda m: (m.bit_depth, m.fps, -m.size[0])) if wide else None


@dataclass(frozen=True)
class Sensor:
    model: str
    array: tuple[int, int]  # PixelArraySize
    modes: tuple[Mode, ...]
    exposure_delay: int
    gain_delay: int
    tuning_files: tuple[str, ...]
    has_lens_control: bool = False  # a focus motor (Camera Module 3)

    def full_field_mode(self) -> Mode:
        """The mode the adapter picks on this sensor (:func:`capture_mode`)."""
        mode = capture_mode(self.modes, self.array)
        assert mode is not None, f"{self.model}'s table has a full-field mode"
        return mode


SENSORS = {
    "imx219": Sensor(
        model="imx219",
        array=(3280, 2464),
        modes=(
            Mode((640, 480), 103.33, (1000, 752, 1280, 960)),
            Mode((1640, 1232), 41.85, (0, 0, 3280, 2464)),
            Mode((1920, 1080), 47.57, (680, 692, 1920, 1080)),
            Mode((3280, 2464), 21.19, (0, 0, 3280, 2464)),
        ),
        exposure_delay=2,
        gain_delay=1,
        tuning_files=("imx219.json", "imx219_noir.json"),
    ),
    "imx708": Sensor(
        model="imx708",
        array=(4608, 2592),
        modes=(
            Mode((1536, 864), 120.13, (768, 432, 3072, 1728)),
            Mode((2304, 1296), 56.03, (0, 0, 4608, 2592)),
            Mode((4608, 2592), 14.35, (0, 0, 4608, 2592)),
        ),
        exposure_delay=2,
        gain_delay=2,
        tuning_files=("imx708.json", "imx708_noir.json", "imx708_wide.json", "imx708_wide_noir.json"),
        has_lens_control=True,
    ),
    "imx296": Sensor(
        model="imx296",
        array=(1456, 1088),
        modes=(Mode((1456, 1088), 60.38, (0, 0, 1456, 1088)),),
        exposure_delay=2,
        gain_delay=2,
        tuning_files=("imx296.json", "imx296_mono.json"),
    ),
}


def control_latency_frames(sensor: Sensor, buffer_count: int) -> int:
    """Frames from ``set_controls`` until a frame shows both the exposure and the gain: the
    requests already queued, then the sensor's own delay."""
    return buffer_count + max(sensor.exposure_delay, sensor.gain_delay)


def sensor_of_tuning(tuning_file: str) -> str | None:
    """The sensor a tuning file is for, from its name (``imx708_wide_noir.json`` -> imx708)."""
    name = tuning_file.rsplit("/", 1)[-1]
    for model in SENSORS:
        if name.startswith(model):
            return model
    return None


def lens_dioptres(distance_mm: float) -> float:
    """The LensPosition (dioptres, libcamera's unit) that focuses at ``distance_mm``."""
    return 1000.0 / distance_mm


def version_tuple(text: str) -> tuple[int, ...]:
    """(0, 3, 20) from "0.3.20" or "0.3.20-1" (a Debian revision)."""
    parts = []
    for p in text.split("-", maxsplit=1)[0].split("."):
        digits = "".join(c for c in p if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def sensor_for(tuning_file: str) -> Sensor:
    """The sensor a config's tuning file names (Camera Module 2's IMX219 when it names none)."""
    return SENSORS[sensor_of_tuning(tuning_file) or "imx219"]


def frame_rate(asked: float, tuning_file: str) -> float:
    """The rate the camera runs at: the one asked for, within its full-field mode's limit
    (libcamera clamps the frame duration to the mode)."""
    return min(asked, sensor_for(tuning_file).full_field_mode().fps)
