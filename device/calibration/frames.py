"""A calibration given as frames: the folder a lab or another rig hands over (issue #7).

    manifest.json     {"frames": [...], "optics": {...}}
    dark.png          lens covered, LEDs off
    card-ambient.png  the grey card, LEDs off
    card-flood.png    the grey card, every sector on
    card-sector-K.png the grey card, sector K alone (3 to 8 sectors)

8-bit greyscale PNGs. Each ``frames`` entry is as in the protocol's plaintext manifest
(``role``, ``width``, ``height``, ``exposure_us``, ``gain``, ``leds``, ``timestamp_ns``),
its role the file's name without ``.png``. ``optics``: ``width``, ``height``,
``focal_px``, ``card_distance_mm``, ``card_albedo`` and ``leds``, a list of
``{"sector": k, "position_mm": [x, y, z]}`` relative to the lens centre (x right, y
down, z toward the scene).

Grey card frames are not biometric: writing them is allowed (``palm calibrate flat
--simulate --save-frames DIR``); nothing here ever sees a hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device import inputs
from device.errors import ScannerError
from device.hardware import patterns
from device.inputs import cut

MANIFEST = "manifest.json"
DARK = "dark"
MIN_SECTORS, MAX_SECTORS = 3, 8


class FramesError(ScannerError):
    """A calibration folder that cannot be used; the message says what is wrong."""

    exit_code = 65  # EX_DATAERR


@dataclass(frozen=True)
class Shot:
    """One frame of the folder and how it was taken."""

    role: str
    pixels: np.ndarray  # uint8 (H, W)
    exposure_us: int
    gain: float
    leds: str
    timestamp_ns: int


@dataclass(frozen=True)
class RigOptics:
    width: int
    height: int
    focal_px: float
    card_distance_mm: float
    card_albedo: float
    led_positions_mm: tuple[tuple[float, float, float], ...]  # by sector

    @property
    def n_sectors(self) -> int:
        return len(self.led_positions_mm)

    def sector_deg(self) -> list[float]:
        """Where each sector sits around the lens, degrees counter-clockwise from the image's right."""
        return [math.degrees(math.atan2(-y, x)) % 360 for x, y, _ in self.led_positions_mm]

    def as_json(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "focal_px": self.focal_px,
            "card_distance_mm": self.card_distance_mm,
            "card_albedo": self.card_albedo,
            "leds": [{"sector": k, "position_mm": list(p)} for k, p in enumerate(self.led_positions_mm)],
        }


def card_role(pattern: str) -> str:
    return f"card-{pattern}"


def roles_for(n_sectors: int) -> list[str]:
    return [DARK, *(card_role(p) for p in patterns.all_patterns(n_sectors))]


@dataclass(frozen=True, eq=False)
class CalibrationFrames:
    optics: RigOptics
    shots: Mapping[str, Shot]

    def responses(self) -> dict[str, np.ndarray]:
        """Each lit pattern's response to the card (grey levels per microsecond x gain, float32),
        the shop's light and the sensor's offset taken away: the dark frame is the offset, the
        ambient card frame (less the offset) the shop's light, scaled to each frame's exposure."""
        dark = self.shots[DARK].pixels.astype(np.float32)
        amb = self.shots[card_role(patterns.AMBIENT)]
        amb_rate = np.maximum(amb.pixels.astype(np.float32) - dark, 0) / (amb.exposure_us * amb.gain)
        out = {}
        for pattern in patterns.all_patterns(self.optics.n_sectors)[1:]:
            s = self.shots[card_role(pattern)]
            rate = (s.pixels.astype(np.float32) - dark) / (s.exposure_us * s.gain)
            out[pattern] = np.maximum(rate - amb_rate, 0)
        return out


def write(folder: Path, shots: Mapping[str, Shot], optics: RigOptics) -> None:
    """Write the folder (PNGs and the manifest); the folder may exist but must hold none of them."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for role, shot in shots.items():
            ok, buf = cv2.imencode(".png", shot.pixels)
            if not ok:
                raise FramesError(f"cannot encode {role}.png")
            (folder / f"{role}.png").write_bytes(buf.tobytes())
        manifest = {
            "frames": [
                {
                    "role": s.role,
                    "width": int(s.pixels.shape[1]),
                    "height": int(s.pixels.shape[0]),
                    "exposure_us": s.exposure_us,
                    "gain": s.gain,
                    "leds": s.leds,
                    "timestamp_ns": s.timestamp_ns,
                }
                for s in shots.values()
            ],
            "optics": optics.as_json(),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    except OSError as e:
        raise FramesError(f"cannot write the calibration frames to {folder}: {e.strerror}") from None


def _num(d: Mapping[str, Any], key: str, where: str, *, positive: bool = True) -> float:
    v = d.get(key)
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not math.isfinite(v)
        or (positive and v <= 0)
    ):
        want = "a positive number" if positive else "a number"
        raise FramesError(f"{where}: {key} = {cut(v)} is not {want}")
    return float(v)


def _optics(d: Any) -> RigOptics:
    if not isinstance(d, dict):
        raise FramesError(f"{MANIFEST}: optics is missing or not an object")
    leds = d.get("leds")
    if not isinstance(leds, list) or not MIN_SECTORS <= len(leds) <= MAX_SECTORS:
        raise FramesError(f"{MANIFEST}: optics.leds must list {MIN_SECTORS} to {MAX_SECTORS} sectors")
    positions: dict[int, tuple[float, float, float]] = {}
    for i, led in enumerate(leds):
        where = f"{MANIFEST}: optics.leds[{i}]"
        if (
            not isinstance(led, dict)
            or not isinstance(led.get("sector"), int)
            or isinstance(led.get("sector"), bool)
        ):
            raise FramesError(f"{where} needs an integer sector")
        pos = led.get("position_mm")
        if not (isinstance(pos, list) and len(pos) == 3 and all(isinstance(x, (int, float)) for x in pos)):
            raise FramesError(f"{where}.position_mm must be [x, y, z] in mm")
        positions[led["sector"]] = (float(pos[0]), float(pos[1]), float(pos[2]))
    if sorted(positions) != list(range(len(leds))):
        raise FramesError(f"{MANIFEST}: optics.leds must number the sectors 0 to {len(leds) - 1}, each once")
    where = f"{MANIFEST}: optics"
    albedo = _num(d, "card_albedo", where)
    if albedo >= 1:
        raise FramesError(f"{where}: card_albedo = {albedo} is not a reflectance below 1")
    return RigOptics(
        width=int(_num(d, "width", where)),
        height=int(_num(d, "height", where)),
        focal_px=_num(d, "focal_px", where),
        card_distance_mm=_num(d, "card_distance_mm", where),
        card_albedo=albedo,
        led_positions_mm=tuple(positions[k] for k in range(len(leds))),
    )


def read(folder: Path) -> CalibrationFrames:
    """Read and check a calibration folder; FramesError names the first thing wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FramesError(f"{folder} is not a folder of calibration frames")
    if not (folder / MANIFEST).exists():
        raise FramesError(f"{folder} has no {MANIFEST}")
    try:
        manifest = inputs.read_json(folder / MANIFEST, what="calibration manifest")
    except inputs.InputError as err:
        raise FramesError(str(err)) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("frames"), list):
        raise FramesError(f"{MANIFEST}: frames must be a list, one entry per PNG")
    optics = _optics(manifest.get("optics"))
    want = roles_for(optics.n_sectors)
    entries: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(manifest["frames"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("role"), str):
            raise FramesError(f"{MANIFEST}: frames[{i}] needs a role")
        entries[entry["role"]] = entry
    missing = [r for r in want if r not in entries]
    if missing:
        raise FramesError(
            f"{folder}: no {', '.join(r + '.png' for r in missing)} in the manifest: a rig of "
            f"{optics.n_sectors} sectors needs {', '.join(r + '.png' for r in want)}"
        )
    extra = sorted(set(entries) - set(want))
    if extra:
        raise FramesError(
            f"{MANIFEST}: frames {', '.join(extra)} do not belong to a rig of {optics.n_sectors} sectors "
            f"(optics.leds): expected {', '.join(want)}"
        )
    shots = {}
    for role in want:
        e = entries[role]
        where = f"{MANIFEST}: frame {role}"
        path = folder / f"{role}.png"
        try:
            img = inputs.read_image(
                path, what="calibration frame", flags=cv2.IMREAD_UNCHANGED, formats=("PNG",)
            )
        except inputs.InputError as err:
            raise FramesError(str(err)) from None
        if img.dtype != np.uint8 or img.ndim != 2:
            raise FramesError(f"{path} is not 8-bit greyscale ({img.dtype}, {img.ndim} dimensions)")
        h, w = img.shape
        if (w, h) != (optics.width, optics.height) or (e.get("width"), e.get("height")) != (w, h):
            raise FramesError(
                f"{path} is {w}x{h}: the manifest says {e.get('width')}x{e.get('height')}, the optics "
                f"{optics.width}x{optics.height}; every frame must be the optics' size"
            )
        ts = e.get("timestamp_ns")
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise FramesError(f"{where}: timestamp_ns = {cut(ts)} is not an integer")
        leds = e.get("leds")
        expect_leds = "none" if role == DARK else patterns.manifest_leds(role.removeprefix("card-"))
        if leds != expect_leds:
            raise FramesError(f"{where}: leds = {cut(leds)}, but {role}.png is the pattern {expect_leds!r}")
        shots[role] = Shot(
            role=role,
            pixels=img,
            exposure_us=int(_num(e, "exposure_us", where)),
            gain=_num(e, "gain", where),
            leds=leds,
            timestamp_ns=ts,
        )
    return CalibrationFrames(optics=optics, shots=shots)
