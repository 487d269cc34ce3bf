"""The simulated camera: renders each frame from the scene under the light the ring really gave.

Frames follow a fixed grid of readout times. Row r of frame k is exposed from
``readout_k + r * line - exposure`` to ``readout_k + r * line``; the light of
each sector during that window is read back from the mock pins' timeline, so a
frame exposed across an LED switch is a real blend, row by row.

The camera stack as a Pi runs it (device.hardware.sensors): the frame rate is the sensor's
full-field mode's when that is slower than asked; a new exposure and gain show in a frame only
behind the requests already queued and the sensor's delay (``settle_frames``); the ISP's
denoise is off, as the adapter sets it, unless a fault leaves the Pi 5's temporal denoise on.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from types import TracebackType

import cv2
import numpy as np

from device.clock import Clock
from device.config import CameraConfig
from device.errors import CameraError
from device.hardware import sensors
from device.hardware.camera import Frame
from device.sim import optics as op
from device.sim import render
from device.sim.optics import Optics
from device.sim.pins import LedTimeline
from device.sim.scene import Scene, SceneSource

#: the share of the previous output the Pi 5's temporal denoise keeps (tests/fake_picamera2.py)
TDN_KEEP = 0.5


@dataclass
class SimFaults:
    """Faults a test or a technician's drill can inject into the simulated scanner."""

    camera_gone: bool = False  # the camera stops delivering frames
    sector_gain: dict[int, float] = field(default_factory=dict)  # sector -> 0 (dead) .. 1
    focus_shift_mm: float = 0.0  # the lens turned off its focus
    smudge: float = 0.0  # 0 clean .. 1 a greasy window
    #: the Pi 5's temporal denoise left on (picamera2's video default, NoiseReductionMode Fast):
    #: each frame blended with the one before
    temporal_denoise: bool = False


@dataclass(frozen=True)
class Wiring:
    """Which BCM pin really feeds each sector (a miswired ring swaps them)."""

    sector_pins: tuple[int, ...]
    active_high: bool = True


class SimCamera:
    def __init__(
        self,
        *,
        config: CameraConfig,
        optics: Optics,
        scenes: SceneSource,
        timeline: LedTimeline,
        wiring: Wiring,
        clock: Clock,
        faults: SimFaults | None = None,
        serial: int = 0,
    ) -> None:
        self._config = config
        self._optics = optics
        self._lores = optics.scaled(*config.lores_size)
        self._scenes = scenes
        self._timeline = timeline
        self._wiring = wiring
        self._clock = clock
        self.faults = faults if faults is not None else SimFaults()
        self._serial = serial
        self._origin: int | None = None
        self._next_k = 0
        # (first frame index, exposure us, gain), newest last
        self._controls: list[tuple[int, int, float]] = [(0, config.exposure_min_us, config.gain_min)]
        self._sensor: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._renderers: dict[int, SceneRenderer] = {}
        self._sensor_model = sensors.sensor_for(config.tuning_file)
        self._previous: dict[str, tuple[int, np.ndarray]] = {}  # the temporal denoise's memory
        self.frames_rendered = 0

    @property
    def main_size(self) -> tuple[int, int]:
        return self._config.main_size

    @property
    def optics(self) -> Optics:
        return self._optics

    @property
    def settle_frames(self) -> int:
        return sensors.control_latency_frames(self._sensor_model, self._config.buffer_count)

    def describe(self) -> str:
        o = self._optics
        return (
            f"simulated {self._sensor_model.model}, {o.width}x{o.height} "
            f"at {1e9 / o.frame_period_ns:.2f} fps "
            f"(a new exposure shows {self.settle_frames} frames later), tuning {self._config.tuning_file}"
        )

    def start(self) -> None:
        self._check_alive()
        if self._origin is None:
            self._origin = self._clock.monotonic_ns()
            self._next_k = 0

    def set_manual(self, *, exposure_us: int, gain: float) -> None:
        cfg = self._config
        exposure_us = int(min(max(exposure_us, cfg.exposure_min_us), cfg.exposure_max_us))
        gain = float(min(max(gain, cfg.gain_min), cfg.gain_max))
        # Behind the requests already queued, then the sensor's delay (the larger of exposure's
        # and gain's: both change together here).
        k = self._frame_after(self._clock.monotonic_ns()) - 1 + self.settle_frames
        self._controls = [*[c for c in self._controls if c[0] < k][-4:], (k, exposure_us, gain)]

    def capture(self, *, not_before_ns: int | None = None) -> Frame:
        return self._take(self._optics, "main", not_before_ns)

    def preview(self, *, not_before_ns: int | None = None) -> Frame:
        return self._take(self._lores, "lores", not_before_ns)

    def close(self) -> None:
        self._origin = None
        self._previous.clear()

    def __enter__(self) -> SimCamera:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the frame grid ------------------------------------------------------------------------

    def _readout(self, k: int) -> int:
        assert self._origin is not None
        return self._origin + k * self._optics.frame_period_ns

    def _controls_for(self, k: int) -> tuple[int, float]:
        exp, gain = self._controls[0][1:]
        for first, e, g in self._controls:
            if first <= k:
                exp, gain = e, g
        return exp, gain

    def _frame_after(self, t_ns: int) -> int:
        """Index of the first frame whose readout of row 0 is at or after t_ns."""
        if self._origin is None:
            return 0
        return max(0, math.ceil((t_ns - self._origin) / self._optics.frame_period_ns))

    def _check_alive(self) -> None:
        if self.faults.camera_gone:
            raise CameraError("camera stopped delivering frames (simulated fault)")

    def _take(self, optics: Optics, stream: str, not_before_ns: int | None) -> Frame:
        self._check_alive()
        if self._origin is None:
            raise CameraError("the camera is not started")
        now = self._clock.monotonic_ns()
        last_row_ns = (optics.height - 1) * optics.line_time_ns
        # Frames already read out are gone (queue=False): the next one to finish after now.
        k = max(self._next_k, self._frame_after(now - last_row_ns))
        while True:
            exp_us, gain = self._controls_for(k)
            start = self._readout(k) - exp_us * 1000
            if not_before_ns is None or start >= not_before_ns:
                break
            k += 1
        done = self._readout(k) + last_row_ns
        if done > now:
            self._clock.sleep((done - now) / 1e9)
        self._next_k = k + 1
        pixels = self._render(optics, k, start, exp_us, gain)
        if self._temporal_keep():
            pixels = self._blend_with_previous(stream, k, pixels)
        return Frame(pixels=pixels, timestamp_ns=start, exposure_us=exp_us, gain=gain, stream=stream)

    def _temporal_keep(self) -> float:
        """The share of the previous frame the temporal denoise keeps: the rig's, or the fault's."""
        return max(self._optics.temporal_keep, TDN_KEEP if self.faults.temporal_denoise else 0.0)

    def _blend_with_previous(self, stream: str, k: int, pixels: np.ndarray) -> np.ndarray:
        """Temporal denoise: the ISP's output keeps TDN_KEEP of the frame before (each frame in
        the stream is processed, handed out or not: the frames between are rendered too)."""
        last = self._previous.get(stream)
        keep = self._temporal_keep()
        optics = self._optics if stream == "main" else self._lores
        if last is not None and last[0] < k:
            # Frames nobody asked for pass the ISP too; three back is as far as the blend remembers
            # (0.5 ** 4 of a frame is under one grey level).
            first = max(last[0] + 1, k - 3)
            out: np.ndarray | None = last[1] if first == last[0] + 1 else None
            for j in range(first, k):
                exp_us, gain = self._controls_for(j)
                between = self._render(optics, j, self._readout(j) - exp_us * 1000, exp_us, gain)
                out = between if out is None else cv2.addWeighted(out, keep, between, 1 - keep, 0)
            if out is not None:
                pixels = cv2.addWeighted(out, keep, pixels, 1 - keep, 0)
        self._previous[stream] = (k, pixels.copy())
        return pixels

    # -- physics -------------------------------------------------------------------------------

    def _row_levels(self, optics: Optics, start_ns: int, exposure_us: int) -> np.ndarray:
        """(H, n_sectors): each sector's mean level over each row's exposure."""
        rows = np.arange(optics.height, dtype=np.int64) * optics.line_time_ns
        starts = start_ns + rows
        ends = starts + exposure_us * 1000
        out = np.empty((optics.height, optics.n_sectors), np.float32)
        for s, pin in enumerate(self._wiring.sector_pins):
            lv = self._timeline.mean_levels(pin, starts, ends)
            out[:, s] = lv if self._wiring.active_high else 1 - lv
        return out

    def _render(self, optics: Optics, k: int, start_ns: int, exposure_us: int, gain: float) -> np.ndarray:
        mid_ns = start_ns + exposure_us * 500 + (optics.height // 2) * optics.line_time_ns
        scene, t = self._scenes(mid_ns)
        levels = self._row_levels(optics, start_ns, exposure_us)
        renderer = self._renderers.setdefault(optics.width, SceneRenderer(optics))
        # Rendering is the simulator's cost, not the scanner's: where the clock can, it stops.
        stopped = getattr(self._clock, "stopped", contextlib.nullcontext)
        with stopped():
            radiance = renderer.radiance(scene, t, levels, self.faults, exposure_us)
            rng = np.random.default_rng([self._serial, k, scene.seed if scene else 0])
            self.frames_rendered += 1
            return self._expose(optics, radiance, exposure_us, gain, rng)

    def _sensor_maps(self, optics: Optics) -> tuple[np.ndarray, np.ndarray]:
        """This sensor's fixed pattern: per-pixel gain (PRNU) and hot-pixel dark current."""
        key = (optics.width, optics.height)
        if key not in self._sensor:
            rng = np.random.default_rng([self._serial, optics.width])
            prnu = (1 + rng.normal(0, op.PRNU, (optics.height, optics.width))).astype(np.float32)
            hot = np.zeros((optics.height, optics.width), np.float32)
            n_hot = max(1, int(op.HOT_PIXEL_FRACTION * optics.width * optics.height))
            idx = rng.choice(optics.width * optics.height, n_hot, replace=False)
            hot.flat[idx] = rng.uniform(5e3, 4e4, n_hot)  # electrons per second
            self._sensor[key] = (prnu * optics.vignetting, hot)
        return self._sensor[key]

    def _expose(
        self, optics: Optics, radiance: np.ndarray, exposure_us: int, gain: float, rng: np.random.Generator
    ) -> np.ndarray:
        relative, hot = self._sensor_maps(optics)
        e_per_dn = op.FULL_WELL_E / 255.0
        electrons = radiance * relative * (exposure_us * op.DN_PER_RADIANCE_US_GAIN * e_per_dn)
        # Demosaic and the downscale soften the image; each output pixel still averages sensor
        # pixels of its own, so the grain that follows stays pixel by pixel.
        if optics.isp_soften_px > 0:
            electrons = cv2.GaussianBlur(
                electrons, (0, 0), optics.isp_soften_px, borderType=cv2.BORDER_REFLECT
            )
        electrons += hot * (exposure_us * 1e-6)
        noise = rng.standard_normal(electrons.shape, dtype=np.float32)
        if op.NOISE_CORRELATION_PX > 0:
            noise = cv2.GaussianBlur(noise, (0, 0), op.NOISE_CORRELATION_PX, borderType=cv2.BORDER_REFLECT)
        noise *= np.float32(optics.noise_scale)
        electrons += noise * np.sqrt(np.maximum(electrons, 0) + op.READ_NOISE_E**2)
        dn = electrons * (gain / e_per_dn) + op.BLACK_LEVEL_DN
        if optics.isp_denoise_px > 0:  # a spatial denoise left on smooths the grain too
            dn = cv2.GaussianBlur(dn, (0, 0), optics.isp_denoise_px, borderType=cv2.BORDER_REFLECT)
        return np.clip(np.rint(dn), 0, 255).astype(np.uint8)


class SceneRenderer:
    """Radiance of a scene under any LED levels, reusing the ray-casting while an object barely moves.

    Casting rays and shading every sector is the costly part. While the nearest
    object stays within REUSE_MM of where it was cast, its image is warped (shift
    and scale about the principal point, inverse-square brightness) instead of
    cast again: the light directions change by well under a degree.
    """

    REUSE_MM = 3.0

    def __init__(self, optics: Optics) -> None:
        self.optics = optics
        self._key: tuple[Scene, tuple[float, ...]] | None = None
        self._cached: tuple[render.Geometry, np.ndarray, np.ndarray] | None = None
        self.casts = 0

    def radiance(
        self, scene: Scene | None, t: float, levels: np.ndarray, faults: SimFaults, exposure_us: int
    ) -> np.ndarray:
        """Radiance reaching each pixel, with the ring at ``levels`` ((H, n) per row, or (n,))."""
        optics = self.optics
        levels = np.broadcast_to(np.asarray(levels, np.float32), (optics.height, optics.n_sectors))
        glow = render.window_glow(optics, levels, faults.smudge) if faults.smudge > 0 else 0.0
        if scene is None or not scene.objects:
            bg = scene.background if scene is not None else 0.0
            return np.full((optics.height, optics.width), bg, np.float32) + glow
        gains = tuple(faults.sector_gain.get(s, 1.0) for s in range(optics.n_sectors))
        pose = render.nearest(scene, t).pose_at(t)
        geom, per_sector, ambient = self._cast(scene, t, gains, (pose.x, pose.y, pose.z))
        lit = np.einsum("hk,khw->hw", levels, per_sector)
        assert geom.anchor is not None
        x0, y0, z0 = geom.anchor
        if (pose.x, pose.y, pose.z) != (x0, y0, z0):
            scale = z0 / pose.z
            f = optics.focal_px
            m = np.array(
                [
                    [scale, 0, optics.cx * (1 - scale) + f * (pose.x - x0) / pose.z],
                    [0, scale, optics.cy * (1 - scale) + f * (pose.y - y0) / pose.z],
                ],
                np.float32,
            )
            size = (optics.width, optics.height)
            lit = cv2.warpAffine(lit * scale**2, m, size, borderMode=cv2.BORDER_REPLICATE)
            ambient = cv2.warpAffine(ambient, m, size, borderMode=cv2.BORDER_REPLICATE)
        total = lit + ambient
        total = render.optical_blur(
            total,
            geom,
            optics,
            exposure_s=exposure_us * 1e-6,
            focus_shift_mm=faults.focus_shift_mm,
            smudge=faults.smudge,
        )
        return render.rolling_skew(total, geom, optics) + glow

    def _cast(
        self, scene: Scene, t: float, gains: tuple[float, ...], where: tuple[float, float, float]
    ) -> tuple[render.Geometry, np.ndarray, np.ndarray]:
        # The scene itself, not its id(): a scenario replaces scenes as shoppers are guided, and a
        # new scene can get a freed one's id, which would bring back another object's geometry.
        key = (scene, gains)
        if (
            self._cached is not None
            and self._key is not None
            and self._key[0] is scene
            and self._key[1] == gains
        ):
            anchor = self._cached[0].anchor
            assert anchor is not None
            if math.dist(anchor, where) < self.REUSE_MM:
                return self._cached
        self._key = self._cached = None  # let the old cast go before the new one is made
        geom = render.geometry(scene, t, self.optics)
        per_sector = render.sector_radiance(geom, self.optics, np.array(gains, np.float32))
        ambient = render.ambient_radiance(geom, scene)
        self._key, self._cached = key, (geom, per_sector, ambient)
        self.casts += 1
        return self._cached
