"""A calibration session: the steps in order at a station, the file, the report.

``palm calibrate STEP`` calls :func:`calibrate`; the simulated scanner's station
(:class:`SimStation`) puts the asked-for target in front of the camera itself and can
be given faults, so that each step is shown to catch the one it is meant to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from device import __version__
from device.calibration import calfile as cf
from device.calibration import frames as F
from device.calibration import steps as S
from device.calibration.flatfield import FlatField
from device.clock import FakeClock
from device.config import Config
from device.errors import CameraError, UsageError
from device.hardware import patterns
from device.hardware.camera import Camera
from device.hardware.ring import LedRing

#: what ``palm calibrate`` can run
CHOICES = ("all", *cf.STEPS, "verify", "from-frames")
#: faults the simulated scanner can be given, and the step that must catch each
SIM_FAULTS = {
    "dead-sector": "flat",
    "weak-sector": "flat",
    "smudge": "flat",
    "swapped-pins": "flat",
    "defocus": "focus",
    "light-leak": "dark",
    "camera-gone": "every step",
}


class Console:
    """What the technician reads: instructions, findings and progress, on a terminal or a log."""

    def __init__(self, out: TextIO = sys.stdout, *, wait: Callable[[], None] | None = None) -> None:
        self.out = out
        self.tty = out.isatty()
        self.wait = wait
        self._open = False

    def say(self, text: str) -> None:
        self._end_progress()
        print(text, file=self.out, flush=True)

    def ask(self, instruction: str) -> None:
        self.say(f"> {instruction}")
        if self.wait is not None:
            self.wait()

    def progress(self, label: str, done: int, total: int) -> None:
        if self.tty:
            print(f"\r  {label}: {done}/{total}", end="", file=self.out, flush=True)
            self._open = done < total
            if done == total:
                print(file=self.out, flush=True)
        elif done == total:
            print(f"  {label}: {total} measured", file=self.out, flush=True)

    def _end_progress(self) -> None:
        if self._open:
            print(file=self.out, flush=True)
            self._open = False


def press_enter() -> None:
    """The real station waits for the technician to place what was asked."""
    try:
        input("  press Enter when it is in place ")
    except EOFError:
        raise S.StepFailed(
            "nobody answered (no terminal on standard input): run `palm calibrate` at the scanner's console"
        ) from None


@dataclass
class ScannerStation:
    """A scanner (real or simulated) and the console; ``place`` puts a target in front (sim only)."""

    camera: Camera
    ring: LedRing
    console: Console
    place: Callable[[str], None] = field(default=lambda target: None)

    def ask(self, instruction: str, target: str) -> None:
        self.place(target)
        self.console.ask(instruction)

    def say(self, text: str) -> None:
        self.console.say(text)

    def progress(self, label: str, done: int, total: int) -> None:
        self.console.progress(label, done, total)


@contextlib.contextmanager
def sim_station(
    config: Config, faults: Sequence[str] = (), console: Console | None = None
) -> Iterator[ScannerStation]:
    """The simulated scanner in a shop, with a technician who places whatever is asked for."""
    from device.sim.camera import SimFaults, Wiring
    from device.sim.scanner import SimulatedScanner
    from device.sim.scene import Scene, make_scene

    sim = SimFaults(camera_gone="camera-gone" in faults, smudge=0.5 if "smudge" in faults else 0.0)
    pins = config.leds.sector_pins
    wiring = Wiring(pins, config.leds.active_high)
    for f in faults:
        name, _, arg = f.partition(":")
        if name == "dead-sector":
            sim.sector_gain[int(arg)] = 0.0
        elif name == "weak-sector":
            sim.sector_gain[int(arg)] = 0.35
        elif name == "defocus":
            sim.focus_shift_mm = -70.0  # the lens turned: sharp at 55 mm instead of 125
        elif name == "swapped-pins":
            swapped = list(pins)
            swapped[0], swapped[1] = swapped[1], swapped[0]
            wiring = Wiring(tuple(swapped), config.leds.active_high)
    clock = FakeClock()
    d = config.calibration.card_distance_mm
    kinds = {"cap": "cap", "nothing": "empty", "card": "card", "target": "target"}
    shown: dict[str, Scene | None] = {"now": None}
    leak = "light-leak" in faults

    def scenes(t_ns: int) -> tuple[Scene | None, float]:
        return shown["now"], 0.0

    def place(target: str) -> None:
        scene = make_scene(kinds[target], 0, condition="shop", distance_mm=d)
        if target == "cap" and leak:  # the cap does not sit: the shop's light gets past it
            scene = make_scene("card", 0, condition="bright", distance_mm=d)
        shown["now"] = scene

    scanner = SimulatedScanner(config=config, scenes=scenes, clock=clock, faults=sim, wiring=wiring)
    with scanner:
        yield ScannerStation(scanner.camera, scanner.ring, console or Console(), place)


@contextlib.contextmanager
def real_station(config: Config, console: Console) -> Iterator[ScannerStation]:
    from device.hardware.scanner import RealScanner

    with RealScanner(config) as scanner:
        yield ScannerStation(scanner.camera, scanner.ring, console)


@dataclass
class Session:
    """The outcome of ``palm calibrate``: every step's findings and the calibration that resulted."""

    outcomes: list[S.Outcome]
    calibration: cf.Calibration

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def calibrate(
    step: str,
    station: ScannerStation,
    config: Config,
    previous: cf.Calibration | None,
    *,
    save_frames: Path | None = None,
) -> Session:
    """Run ``step`` (or all, in order); the calibration gets each passed step's result.
    ``save_frames``: the flat step's card frames also go to this folder (see frames.py)."""
    w, h = config.camera.main_size
    cal = previous or cf.empty(config.device.id, w, h, config.leds.sector_pins, __version__)
    if previous is not None and (
        (previous.width, previous.height) != (w, h) or previous.sector_pins != config.leds.sector_pins
    ):
        station.say(
            f"the calibration {previous.id} was made for {previous.width}x{previous.height} frames and "
            "sectors on "
            f"BCM {list(previous.sector_pins)}; this config differs, so it starts afresh"
        )
        cal = cf.empty(config.device.id, w, h, config.leds.sector_pins, __version__)
    todo = list(cf.STEPS) if step == "all" else [step]
    outcomes: list[S.Outcome] = []
    parts: dict[str, object] = {}
    view = None
    for name in todo:
        station.say(f"== {name}")
        try:
            if name == "dark":
                out = S.dark(station, config)
            elif name == "flat":
                kept: dict[str, tuple[np.ndarray, int, float]] = {}
                out = S.flat(station, config, kept)
                if out.ok and save_frames is not None:
                    save_flat_frames(station, config, kept, save_frames)
            elif name == "exposure":
                flat = parts.get("flat") or cal.flat
                if not isinstance(flat, cf.Flat):
                    raise S.StepFailed(
                        "exposure is worked out from the flat fields: run `palm calibrate flat` first"
                    )
                out = S.exposure(flat, config)
            elif name == "focus":
                view = S.look_at_target(station, config)
                out = S.focus(view, cal.focus)
            else:  # scale: the target is still in place after focus in `all`
                view = view or S.look_at_target(station, config)
                out = S.scale(view, config)
        except S.StepFailed as e:
            out = S.Outcome(name, False, [f"FAIL: {e}"])
        except CameraError as e:
            out = S.Outcome(
                name,
                False,
                [f"FAIL: the camera: {e}. Check its ribbon cable and `rpicam-hello --list-cameras`"],
            )
        for line in out.lines:
            station.say(f"  {line}")
        station.say(f"{name}: {'passed' if out.ok else 'FAILED'}")
        outcomes.append(out)
        if not out.ok:
            break  # later steps stand on this one
        parts[name] = out.part
    if parts:
        cal = cal.updated(**parts)
    return Session(outcomes, cal)


def sim_calibration(config: Config, *, target: bool = True) -> cf.Calibration:
    """The simulated scanner's calibration (flat fields, the palm's exposure, focus and scale),
    measured by the calibration's own steps, as ``palm run --simulate`` and ``palm eval`` use it."""
    with sim_station(config, console=Console(io.StringIO())) as station:
        flat = S.flat(station, config)
        view = S.look_at_target(station, config) if target else None
    if not flat.ok or not isinstance(flat.part, cf.Flat):
        raise RuntimeError("the simulated scanner's flat calibration failed: " + "; ".join(flat.lines))
    w, h = config.camera.main_size
    cal = cf.empty(config.device.id, w, h, config.leds.sector_pins, __version__)
    parts = {"flat": flat.part, "exposure": S.exposure(flat.part, config).part}
    if view is not None:  # the focus target: focus and scale (the daemon's distance in mm)
        parts |= {"focus": S.focus(view, None).part, "scale": S.scale(view, config).part}
    return cal.updated(**parts)


def save_flat_frames(
    station: ScannerStation, config: Config, kept: dict[str, tuple[np.ndarray, int, float]], folder: Path
) -> None:
    """Write the flat step's card frames as a calibration folder (issue #7)."""
    given = flat_frames(station, config, kept)
    F.write(folder, given.shots, given.optics)
    station.say(f"wrote the calibration frames to {folder} ({len(given.shots)} PNGs and {F.MANIFEST})")


def flat_frames(
    station: ScannerStation, config: Config, kept: dict[str, tuple[np.ndarray, int, float]]
) -> F.CalibrationFrames:
    """The flat step's card frames as a calibration folder holds them (8-bit), with a dark frame
    taken now (the lens cap) and the simulated scanner's optics."""
    from device.sim.optics import Optics

    _, exposure, gain = kept["card-flood"]
    station.ask("Cover the window with the lens cap again, for the folder's dark frame.", "cap")
    dark = S.average_dark(station, exposure, gain)
    optics = Optics.from_config(config.camera, config.sim, config.leds)
    w, h = config.camera.main_size
    rig = F.RigOptics(
        width=w,
        height=h,
        focal_px=config.sim.focal_px,
        card_distance_mm=config.calibration.card_distance_mm,
        card_albedo=config.calibration.card_albedo,
        led_positions_mm=tuple(tuple(float(v) for v in p) for p in optics.led_positions()),  # type: ignore[misc]
    )
    now = time.monotonic_ns()  # the frames are averages of several: the time they were written
    shots = {F.DARK: F.Shot(F.DARK, _u8(dark), exposure, gain, "none", now)}
    for role, (img, e, g) in kept.items():
        leds = patterns.manifest_leds(role.removeprefix("card-"))
        shots[role] = F.Shot(role, _u8(img), e, g, leds, now)
    return F.CalibrationFrames(optics=rig, shots=shots)


def sim_calibration_frames(config: Config) -> F.CalibrationFrames:
    """The simulated scanner's grey card and dark frames, as a lab would hand them over."""
    with sim_station(config, console=Console(io.StringIO())) as station:
        kept: dict[str, tuple[np.ndarray, int, float]] = {}
        flat = S.flat(station, config, kept)
        if not flat.ok:
            raise RuntimeError("the simulated scanner's flat calibration failed: " + "; ".join(flat.lines))
        return flat_frames(station, config, kept)


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def from_frames(folder: Path, config: Config, previous: cf.Calibration | None) -> Session:
    """A calibration from a folder of frames: the same tables and verdicts as the scanner's flat step."""
    return from_given(F.read(folder), str(folder), config, previous)


def from_given(
    given: F.CalibrationFrames, source: str, config: Config, previous: cf.Calibration | None
) -> Session:
    """A calibration from frames read (``source``: where from, for messages): flat fields, the
    palm's exposure and the scale (the manifest's focal length at the card's distance)."""
    o = given.optics
    if o.n_sectors != len(config.leds.sector_pins) or (o.width, o.height) != config.camera.main_size:
        raise F.FramesError(
            f"{source}: {o.n_sectors} sectors and {o.width}x{o.height} frames, but the config has "
            f"{len(config.leds.sector_pins)} sectors ([leds] sector_pins) and {config.camera.main_size[0]}x"
            f"{config.camera.main_size[1]} frames ([camera] main_size): give the rig's config with --config"
        )
    rig = dataclasses.replace(
        config,
        calibration=dataclasses.replace(
            config.calibration, card_distance_mm=o.card_distance_mm, card_albedo=o.card_albedo
        ),
    )
    flat = S.judge_flat(given.responses(), rig, glow_response=None, expected=o.sector_deg())
    outcomes = [flat]
    w, h = o.width, o.height
    cal = previous or cf.empty(config.device.id, w, h, config.leds.sector_pins, __version__)
    if flat.ok and isinstance(flat.part, cf.Flat):
        exposure = S.exposure(flat.part, rig)
        outcomes.append(exposure)
        scale = cf.Scale(px_per_mm=round(o.focal_px / o.card_distance_mm, 4), distance_mm=o.card_distance_mm)
        parts: dict[str, object] = {"flat": flat.part, "scale": scale}
        if exposure.ok:
            parts["exposure"] = exposure.part
        cal = cal.updated(**parts)
    return Session(outcomes, cal)


def flat_from_frames(folder: Path, config: Config) -> FlatField:
    """The flat fields (and focal length) a calibration folder gives, through the same tables as
    the scanner's own; FramesError when its flat step would fail (a dead sector in the rig's frames)."""
    return flat_from_given(F.read(folder), str(folder), config)


def flat_from_given(given: F.CalibrationFrames, source: str, config: Config) -> FlatField:
    result = from_given(given, source, config, None)
    flat = result.outcomes[0]
    if not flat.ok or result.calibration.flat is None:
        raise F.FramesError(f"{source}: " + "; ".join(line for line in flat.lines if line.startswith("FAIL")))
    return result.calibration.flat_field()


def report_path_ok(path: Path) -> None:
    if path.suffix.lower() not in (".html", ".htm"):
        raise UsageError(
            f"--report: the report is an HTML page: give a name ending in .html, not {path.name!r}"
        )
