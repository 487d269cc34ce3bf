"""Geometry of the simulated scanner: pinhole camera, LED ring, sensor constants.

Camera frame: x right, y down, z toward the scene, millimetres, lens centre at
the origin. LED sector k sits on a ring of ``ring_radius_mm`` around the lens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from device.config import CameraConfig, LedsConfig, SimConfig
from device.hardware import sensors

#: radiant intensity of one sector on its axis (arbitrary radiometric units)
LED_INTENSITY = 10_000.0
#: radiance -> digital number per (microsecond x gain); fixed so that skin (albedo
#: 0.5) at the nominal 125 mm under the full ring reads about 120 DN at 3 ms and gain 2
DN_PER_RADIANCE_US_GAIN = 0.058
#: sensor: electrons at full scale (255 DN) for gain 1, read noise, residual black level.
#: Per output pixel: the ISP bins and scales about six 1.12 um sensor pixels (a few
#: thousand electrons each) into every pixel of a 640 x 480 stream.
FULL_WELL_E = 20000.0
READ_NOISE_E = 2.5
BLACK_LEVEL_DN = 2.0
#: photo-response non-uniformity (per-pixel gain spread) and hot-pixel share
PRNU = 0.008
#: The ISP's softening (config [sim] isp_soften_px, 0.7 px by default) is demosaicing and the
#: downscale from the full-field mode (1640x1232 on the IMX219) to the 640x480 stream: it softens
#: the image, not the noise, since each output pixel averages sensor pixels of their own. No
#: denoise of its own: the adapter sets NoiseReductionMode Off (device.hardware.picamera), which on
#: the Pi 4 and the Pi 5 turns off spatial and temporal denoise alike (raspberrypi/libcamera
#: src/ipa/rpi/controller/rpi/denoise.cpp: DenoiseMode::Off sets no "sdn" or "tdn" status); a rig
#: where it stays on, as the tuning files' "sdn" and "tdn" blocks have it, is [sim]
#: isp_denoise_px and temporal_denoise.
HOT_PIXEL_FRACTION = 2e-5
#: the grain's correlation between neighbouring output pixels, a Gaussian sigma in pixels: the
#: demosaic interpolates each pixel from its neighbours, and the downscale's filter spans a little
#: more than one output pixel
NOISE_CORRELATION_PX = 0.7


@dataclass(frozen=True)
class Optics:
    width: int
    height: int
    focal_px: float
    ring_radius_mm: float
    ring_offset_deg: float
    n_sectors: int
    focus_distance_mm: float
    aperture_mm: float
    line_time_ns: int  # 0 for a global shutter
    frame_period_ns: int
    beam_exponent: float = 1.0  # LED intensity falls as cos(angle)^m (1: a Lambertian emitter)
    led_power: float = 1.0  # relative to LED_INTENSITY
    isp_soften_px: float = 0.7  # the image's softening by demosaic and downscale, sigma px
    isp_denoise_px: float = 0.0  # spatial denoise after the noise, sigma px (0: off)
    temporal_keep: float = 0.0  # temporal denoise: share of the previous frame kept (0: off)
    noise_scale: float = 1.0  # sensor noise relative to the nominal sensor's

    @classmethod
    def from_config(cls, camera: CameraConfig, sim: SimConfig, leds: LedsConfig) -> Optics:
        w, h = camera.main_size
        # The camera's full-field mode sets the pace, as on the Pi (device.hardware.sensors).
        period = round(1e9 / sensors.frame_rate(camera.frame_rate, camera.tuning_file))
        # A rolling shutter reads the rows out over most of the frame period.
        line = int(period * 0.8 / h) if sim.rolling_shutter else 0
        return cls(
            width=w,
            height=h,
            focal_px=sim.focal_px,
            ring_radius_mm=sim.ring_radius_mm,
            ring_offset_deg=leds.first_sector_deg,
            n_sectors=len(leds.sector_pins),
            focus_distance_mm=sim.focus_distance_mm,
            aperture_mm=sim.aperture_mm,
            line_time_ns=line,
            frame_period_ns=period,
            beam_exponent=sim.led_beam_exponent,
            led_power=sim.led_power,
            isp_soften_px=sim.isp_soften_px,
            isp_denoise_px=sim.isp_denoise_px,
            temporal_keep=sim.temporal_denoise,
            noise_scale=sim.noise_scale,
        )

    def scaled(self, width: int, height: int) -> Optics:
        """The same lens seen by a smaller stream (the lores presence stream)."""
        s = width / self.width
        return replace(
            self,
            width=width,
            height=height,
            focal_px=self.focal_px * s,
            line_time_ns=int(self.line_time_ns * self.height / height),
        )

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2.0

    def led_positions(self) -> np.ndarray:
        """(n_sectors, 3) positions of the sector centres, mm."""
        ang = np.deg2rad(self.ring_offset_deg) + 2 * np.pi * np.arange(self.n_sectors) / self.n_sectors
        r = self.ring_radius_mm
        # y is down in the image, so a counter-clockwise ring (seen from the scene) runs -y.
        return np.stack([r * np.cos(ang), -r * np.sin(ang), np.zeros_like(ang)], axis=1)

    @cached_property
    def rays(self) -> np.ndarray:
        """(H, W, 3) float32 ray directions with z = 1."""
        xs = (np.arange(self.width, dtype=np.float32) - self.cx) / self.focal_px
        ys = (np.arange(self.height, dtype=np.float32) - self.cy) / self.focal_px
        rx, ry = np.meshgrid(xs, ys)
        return np.stack([rx, ry, np.ones_like(rx)], axis=-1).astype(np.float32)

    @cached_property
    def vignetting(self) -> np.ndarray:
        """Relative illumination: natural cos^4 fall-off, half corrected by the ISP."""
        r2 = self.rays[..., 0] ** 2 + self.rays[..., 1] ** 2
        cos2 = 1.0 / (1.0 + r2)
        return np.asarray(cos2, dtype=np.float32)  # (cos^4)^0.5

    def mm_per_px(self, distance_mm: float) -> float:
        return distance_mm / self.focal_px

    def blur_sigma_px(self, distance_mm: float) -> float:
        """Defocus: circle of confusion of a thin lens, as a Gaussian sigma in pixels."""
        zf = self.focus_distance_mm
        coc = self.aperture_mm * self.focal_px * abs(distance_mm - zf) / (distance_mm * zf)
        return float(math.hypot(coc / 2.4, 0.7))  # the lens and the ISP's scaling are never perfect
