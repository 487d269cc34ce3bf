"""The calibration steps a technician runs at the scanner, and ``verify``.

Each step tells the person what to place where (through :class:`Station`), measures,
and returns its result with a verdict in plain words: what it found and, when it
failed, what to do. The same code runs on the real scanner and on the simulated one
(where the station puts the asked-for target in front of the camera itself).

- dark: lens covered, ring off: the sensor's offset, noise and hot pixels;
- flat: nothing in front (a smudged window glows with the ring's own light), then the
  grey card: one flat field per sector and for the full ring, each sector's share of
  the light and the side it lights from (a dead, weak or miswired sector);
- exposure: from the card's flat field, the palm's exposure and gain and the ring's
  on-time per burst, within the eye-safety limit;
- focus: the target's edges (10-90 % width), compared with the last measurement so
  the person turning the lens knows which way helps; scattered light (the black
  square's grey) also shows a smudged window;
- scale: the target's square of known size: pixels per millimetre at the nominal distance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from device.calibration import calfile as cf
from device.capture import MOTION_SAFE_US, TARGET_P50
from device.config import Config
from device.hardware import patterns, sensors
from device.hardware.camera import Camera, capture_burst
from device.hardware.ring import LedRing

#: grey level the brightest part of a calibration frame is exposed to (well below clipping)
AIM_DN = 170.0
#: skin's reflectance at 850-940 nm (palms: 0.45-0.6); the exposure step plans for it
SKIN_ALBEDO = 0.5

#: limits a step holds the scanner to; ``verify`` allows drift within DRIFT
DARK_OFFSET_MAX_DN = 16.0
DARK_NOISE_MAX_DN = 3.0
HOT_PIXEL_MAX_FRACTION = 1e-3
WINDOW_GLOW_MAX = 0.03
SECTOR_DEAD, SECTOR_WEAK = 0.15, 0.6
#: the card's corners against its centre: lens and ring fall-off leave 10-20 % (about 5 % with a
#: lens 30 % wider than the NoIR module's, whose corners look 50 degrees off axis); a card that
#: leaves the view shows the room beyond, which returns none of the ring's light (under 0.5 %)
CARD_FILL_MIN = 0.02
SECTOR_DEG_TOLERANCE = 360.0 / 16
EDGE_PX_MAX = 3.6  # a focused NoIR module at 640 x 480: 2.4 to 3 px
VEIL_MAX = 0.12  # the target's black square, as a fraction of its white (clean: about 0.05)


class Station(Protocol):
    """Where calibration happens: the scanner, and the person at it."""

    @property
    def camera(self) -> Camera: ...
    @property
    def ring(self) -> LedRing: ...

    def ask(self, instruction: str, target: str) -> None:
        """Tell the person to place ``target`` (cap, nothing, card, target); return when done."""

    def say(self, text: str) -> None: ...

    def progress(self, label: str, done: int, total: int) -> None: ...


@dataclass
class Outcome:
    """A step's result: passed or not, what a person reads, and what goes into the file."""

    step: str
    ok: bool
    lines: list[str] = field(default_factory=list)
    part: Any = None  # the calfile dataclass for this step, when it measured one
    pictures: dict[str, np.ndarray] = field(default_factory=dict)  # for the report: cards, targets


class StepFailed(Exception):  # noqa: N818 - a step that could not measure, said to the technician
    """A step cannot measure at all (nothing recognisable in front); the message says why."""


# -- measuring ----------------------------------------------------------------------------------


def _average(
    station: Station, roles: Sequence[str], exposure_us: int, gain: float, bursts: int, label: str | None
) -> dict[str, np.ndarray]:
    """The mean frame of each role over ``bursts`` bursts (float32): noise down by sqrt(bursts)."""
    sums: dict[str, np.ndarray] = {}
    for i in range(bursts):
        frames = capture_burst(
            camera=station.camera, ring=station.ring, patterns=roles, exposure_us=exposure_us, gain=gain
        )
        station.ring.off()
        for f in frames:
            role = f.leds or patterns.AMBIENT
            acc = sums.setdefault(role, np.zeros(f.pixels.shape, np.float64))
            acc += f.pixels
            f.wipe()
        if label is not None:
            station.progress(label, i + 1, bursts)
    return {role: (s / bursts).astype(np.float32) for role, s in sums.items()}


def _lit(frames: dict[str, np.ndarray], role: str) -> np.ndarray:
    return np.maximum(frames[role] - frames[patterns.AMBIENT], 0)


def _settings_for(level_dn: float, exposure_us: int, gain: float, config: Config) -> tuple[int, float]:
    """Exposure and gain that bring a level measured at (exposure_us, gain) to AIM_DN."""
    cam = config.camera
    want = exposure_us * gain * AIM_DN / max(level_dn, 0.5)
    exposure = int(min(max(want / cam.gain_min, cam.exposure_min_us), cam.exposure_max_us))
    g = float(min(max(want / exposure, cam.gain_min), cam.gain_max))
    return exposure, round(g, 3)


def _metered(station: Station, roles: Sequence[str], config: Config) -> tuple[int, float]:
    """Settings that put the brightest of ``roles`` (99.5th percentile of the frame as read, the
    shop's light included, so that nothing clips) near AIM_DN."""
    exposure, gain = 1000, 1.0
    for _ in range(4):
        frames = _average(station, [patterns.AMBIENT, *roles], exposure, gain, 1, None)
        top = max(float(np.percentile(frames[r], 99.5)) for r in roles)
        new = _settings_for(top, exposure, gain, config)
        if abs(top - AIM_DN) < 0.15 * AIM_DN or new == (exposure, gain):
            return new
        exposure, gain = new
    return exposure, gain


# -- dark -----------------------------------------------------------------------------------------


def _dark_frames(station: Station, exposure: int, gain: float, n: int) -> np.ndarray:
    """``n`` frames with the ring off, (n, H, W) float32."""
    station.ring.off()
    stack = []
    for i in range(n):
        frame = capture_burst(
            camera=station.camera,
            ring=station.ring,
            patterns=[patterns.AMBIENT],
            exposure_us=exposure,
            gain=gain,
        )[0]
        stack.append(frame.pixels.astype(np.float32))
        frame.wipe()
        station.progress("dark frames", i + 1, n)
    return np.stack(stack)


def average_dark(station: Station, exposure: int, gain: float) -> np.ndarray:
    """The mean of 8 frames with the ring off (the lens covered): the sensor's offset."""
    return _dark_frames(station, exposure, gain, 8).mean(axis=0)


def dark(station: Station, config: Config) -> Outcome:
    station.ask("Cover the window with the lens cap (or fold a dark cloth over it twice).", "cap")
    exposure, gain = config.camera.exposure_max_us, min(4.0, config.camera.gain_max)
    cube = _dark_frames(station, exposure, gain, 16)
    mean = cube.mean(axis=0)
    offset = float(np.median(mean))
    noise = float(np.median(cube.std(axis=0)))
    hot = int(np.count_nonzero(mean > offset + max(10.0, 8 * noise)))
    part = cf.Dark(
        offset_dn=round(offset, 3), noise_dn=round(noise, 3), hot_pixels=hot, exposure_us=exposure, gain=gain
    )
    fraction = hot / mean.size
    lines = [
        f"sensor offset {offset:.1f} grey levels, noise {noise:.2f}, hot pixels {hot} "
        f"({fraction * 100:.3f} %) at {exposure} us, gain {gain:g}"
    ]
    ok = True
    if offset > DARK_OFFSET_MAX_DN:
        ok = False
        lines.append(
            f"FAIL: light reaches the sensor with the ring off ({offset:.0f} grey levels, at most "
            f"{DARK_OFFSET_MAX_DN:.0f}): cover the window completely and run `palm calibrate dark` again"
        )
    if noise > DARK_NOISE_MAX_DN:
        ok = False
        lines.append(
            f"FAIL: the sensor is noisy ({noise:.1f} grey levels, at most {DARK_NOISE_MAX_DN:g}): check the "
            "camera cable and the tuning file; if it stays, replace the camera module"
        )
    if fraction > HOT_PIXEL_MAX_FRACTION and offset <= DARK_OFFSET_MAX_DN:
        ok = False
        lines.append(
            f"FAIL: {hot} hot pixels (at most {HOT_PIXEL_MAX_FRACTION * 100:.1f} % of the sensor): "
            "replace the camera module"
        )
    return Outcome("dark", ok, lines, part)


# -- flat -----------------------------------------------------------------------------------------


def flat(
    station: Station, config: Config, keep: dict[str, tuple[np.ndarray, int, float]] | None = None
) -> Outcome:
    """``keep``: filled with the averaged card frames by role (card-ambient, card-flood,
    card-sector-K) and their exposure and gain, for a calibration folder (issue #7)."""
    cal = config.calibration
    n = len(config.leds.sector_pins)
    sectors = [patterns.sector(k) for k in range(n)]
    # The window first: with nothing in front, the ring's light should not come back.
    station.ask("Take everything off the scanner: nothing within a metre above the window.", "nothing")
    glow_exp, glow_gain = config.camera.exposure_max_us, 1.0
    empty = _average(station, [patterns.AMBIENT, patterns.FLOOD], glow_exp, glow_gain, 4, "window")
    glow_response = float(np.median(_lit(empty, patterns.FLOOD))) / (glow_exp * glow_gain)
    station.ask(
        f"Hold the grey card flat over the window at {cal.card_distance_mm:.0f} mm (use the spacer), "
        "square to the camera, filling the view.",
        "card",
    )
    flood_exp, flood_gain = _metered(station, [patterns.FLOOD], config)
    sector_exp, sector_gain = _metered(station, sectors, config)
    frames = _average(
        station, [patterns.AMBIENT, patterns.FLOOD], flood_exp, flood_gain, 8, "card, full ring"
    )
    responses = {patterns.FLOOD: _lit(frames, patterns.FLOOD) / (flood_exp * flood_gain)}
    card_picture = frames[patterns.FLOOD]
    if keep is not None:
        for role in (patterns.AMBIENT, patterns.FLOOD):
            keep[f"card-{role}"] = (frames[role], flood_exp, flood_gain)
    frames = _average(
        station, [patterns.AMBIENT, *sectors], sector_exp, sector_gain, 8, "card, sector by sector"
    )
    for role in sectors:
        responses[role] = _lit(frames, role) / (sector_exp * sector_gain)
        if keep is not None:
            keep[f"card-{role}"] = (frames[role], sector_exp, sector_gain)
    return judge_flat(responses, config, glow_response=glow_response, card_picture=card_picture)


def judge_flat(
    responses: dict[str, np.ndarray],
    config: Config,
    *,
    glow_response: float | None,
    card_picture: np.ndarray | None = None,
    expected: Sequence[float] | None = None,
) -> Outcome:
    """The flat fields' figures and verdict, from each pattern's response to the card (grey
    levels per us x gain, full frames). Shared by the scanner's step and frames given as files.
    ``expected``: where each sector sits (degrees), when not from [leds] first_sector_deg."""
    n_pins = len(config.leds.sector_pins)
    where = list(expected) if expected is not None else [expected_deg(config, k) for k in range(n_pins)]
    cal = config.calibration
    pins = config.leds.sector_pins
    n = len(pins)
    flood = responses[patterns.FLOOD]
    h, w = flood.shape
    rows, cols = cf.table_shape(w, h)
    tables = {
        role: cv2.resize(r, (cols, rows), interpolation=cv2.INTER_AREA) for role, r in responses.items()
    }
    ft = tables[patterns.FLOOD]
    centre = float(np.median(ft[rows // 3 : rows - rows // 3, cols // 3 : cols - cols // 3]))
    corners = [ft[0, 0], ft[0, -1], ft[-1, 0], ft[-1, -1]]
    corner_ratio = float(np.mean(corners)) / max(centre, 1e-12)
    totals = [float(tables[patterns.sector(k)].sum()) for k in range(n)]
    med = float(np.median(totals)) or 1e-12
    share = tuple(round(t / med, 4) for t in totals)
    degs = tuple(round(_lit_side(tables[patterns.sector(k)], ft), 1) for k in range(n))
    glow = (glow_response / max(centre, 1e-12)) if glow_response is not None else 0.0
    part = cf.Flat(
        card_albedo=cal.card_albedo,
        card_distance_mm=cal.card_distance_mm,
        tables={role: t.astype(np.float32) for role, t in tables.items()},
        window_glow=round(glow, 5),
        sector_share=share,
        sector_deg=degs,
        corner_ratio=round(corner_ratio, 4),
    )
    lines = [
        f"card at the centre: {centre * 1000:.2f} grey levels per ms x gain under the full ring; "
        f"corners {corner_ratio * 100:.0f} % of the centre",
        "sectors' shares of the light: "
        + ", ".join(f"{k} (BCM {pins[k]}) {s * 100:.0f} %" for k, s in enumerate(share)),
        "the side each sector lights from: "
        + ", ".join(f"{k} {d:.0f} (expected {where[k]:.0f})" for k, d in enumerate(degs))
        + " degrees",
    ]
    if glow_response is not None:
        lines.append(
            f"window glow with nothing in front: {glow * 100:.1f} % of the card (at most "
            f"{WINDOW_GLOW_MAX * 100:.0f} %)"
        )
    problems = []
    if corner_ratio < CARD_FILL_MIN:
        problems.append(
            f"the card does not fill the view (its corners read {corner_ratio * 100:.0f} % of the centre, "
            f"expected over {CARD_FILL_MIN * 100:.0f} %): hold a card that covers the whole window, at "
            f"{cal.card_distance_mm:.0f} mm"
        )
    if glow > WINDOW_GLOW_MAX:
        problems.append(
            f"the window is smudged or scratched: with nothing in front it returns {glow * 100:.1f} % "
            "of the "
            "card's light (a clean window: under 1 %). Wipe it with a lens cloth and run `palm "
            "calibrate flat` again"
        )
    for k, s in enumerate(share):
        if s < SECTOR_DEAD:
            problems.append(
                f"sector {k} (BCM {pins[k]}) gives {s * 100:.0f} % of the others' light: dead or "
                "disconnected. "
                "Check its connector and LEDs"
            )
        elif s < SECTOR_WEAK:
            problems.append(
                f"sector {k} (BCM {pins[k]}) is weak ({s * 100:.0f} % of the others' light): an LED of it is "
                "out, or its resistor is wrong"
            )
    if not problems or all(s >= SECTOR_WEAK for s in share):
        problems += _wiring(degs, where, config)  # judged once every sector gives its light
    lines += [f"FAIL: {p}" for p in problems]
    pictures = (
        {"grey card under the full ring": card_picture} if card_picture is not None and not problems else {}
    )
    return Outcome("flat", not problems, lines, part, pictures)


def _lit_side(sector: np.ndarray, flood: np.ndarray) -> float:
    """The direction (degrees counter-clockwise from the image's right) from which a sector
    lights the card: the way its share of the full ring's light rises (a plane fitted to the
    share, so the frame's shape does not bias it)."""
    ratio = sector / np.maximum(flood, 1e-12)
    rows, cols = ratio.shape
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
    a = np.stack([np.ones(ratio.size), xs.ravel() - (cols - 1) / 2, ys.ravel() - (rows - 1) / 2], axis=1)
    _, gx, gy = np.linalg.lstsq(a, ratio.ravel().astype(np.float64), rcond=None)[0]
    return math.degrees(math.atan2(-gy, gx)) % 360  # y is down in the image


def expected_deg(config: Config, k: int) -> float:
    n = len(config.leds.sector_pins)
    return (config.leds.first_sector_deg + 360.0 * k / n) % 360


def _angle_gap(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def _wiring(degs: Sequence[float], where: Sequence[float], config: Config) -> list[str]:
    """Each sector pin must light its own side of the ring (``where``: each sector's place, degrees)."""
    pins = config.leds.sector_pins
    n = len(pins)
    out = []
    for k, d in enumerate(degs):
        if _angle_gap(d, where[k]) <= max(SECTOR_DEG_TOLERANCE, 90.0 / n):
            continue
        other = min(range(n), key=lambda j: _angle_gap(d, where[j]))
        out.append(
            f"sector {k}'s pin (BCM {pins[k]}) lights the side of sector {other} ({d:.0f} degrees, "
            f"sector {k} sits at {where[k]:.0f}): the ring's wires are swapped or [leds] first_sector_deg is "
            f"wrong. Connect sector {k} to BCM {pins[k]} as [leds] sector_pins lists them"
        )
    return out


# -- exposure -------------------------------------------------------------------------------------


def exposure(flat_part: cf.Flat, config: Config) -> Outcome:
    """The palm's starting exposure from the card's flat field; the ring's on-time per burst."""
    ft = flat_part.tables[patterns.FLOOD]
    rows, cols = ft.shape
    centre = float(np.median(ft[rows // 3 : rows - rows // 3, cols // 3 : cols - cols // 3]))
    palm_per_us_gain = centre * SKIN_ALBEDO / flat_part.card_albedo
    want = TARGET_P50 / max(palm_per_us_gain, 1e-12)  # exposure x gain for the palm's target grey
    cam = config.camera
    exp = int(min(max(want / cam.gain_min, cam.exposure_min_us), MOTION_SAFE_US, cam.exposure_max_us))
    gain = round(float(min(max(want / exp, cam.gain_min), cam.gain_max)), 3)
    n_lit = len(config.leds.sector_pins) + 1  # flood and each sector
    # The rate the camera runs at: its full-field mode may be slower than asked.
    frame_ms = 1000.0 / sensors.frame_rate(cam.frame_rate, cam.tuning_file)
    ring_on_ms = round(n_lit * frame_ms + exp / 1000.0, 1)
    part = cf.Exposure(exposure_us=exp, gain=gain, ring_on_ms=ring_on_ms)
    lines = [
        f"a palm at {flat_part.card_distance_mm:.0f} mm: exposure {exp} us, gain {gain:g} for grey "
        f"{TARGET_P50:.0f}; the ring is lit {ring_on_ms:.0f} ms per burst "
        f"(limit {config.leds.max_on_s * 1000:.0f} ms)"
    ]
    ok = True
    if exp * gain < want * 0.98:
        ok = False
        lines.append(
            f"FAIL: the ring is too weak: a palm needs {want:.0f} us x gain, the camera allows "
            f"{exp * gain:.0f} within a hovering hand's {MOTION_SAFE_US} us. Check the LED supply and "
            "run `palm calibrate flat` again"
        )
    if ring_on_ms > config.leds.max_on_s * 1000:
        ok = False
        lines.append(
            f"FAIL: a burst keeps the ring lit {ring_on_ms:.0f} ms, over the eye-safety limit of "
            f"{config.leds.max_on_s * 1000:.0f} ms ([leds] max_on_s): raise [camera] frame_rate, "
            "or use a sensor whose full-field mode is faster"
        )
    return Outcome("exposure", ok, lines, part)


# -- focus and scale ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetView:
    lit: np.ndarray  # flood minus ambient, float32
    square: tuple[int, int, int, int]  # x, y, w, h of the black square
    side_px: float
    edge_px: float
    veil: float


def look_at_target(station: Station, config: Config) -> TargetView:
    cal = config.calibration
    station.ask(
        f"Hold the focus target (the white card with the black {cal.target_square_mm:.0f} mm square) flat at "
        f"{cal.card_distance_mm:.0f} mm, the square in the middle of the window.",
        "target",
    )
    exp, gain = _metered(station, [patterns.FLOOD], config)
    frames = _average(station, [patterns.AMBIENT, patterns.FLOOD], exp, gain, 4, "target")
    return measure_target(_lit(frames, patterns.FLOOD))


def measure_target(lit: np.ndarray) -> TargetView:
    """Find the target's black square and measure its edges; StepFailed if there is none."""
    h, w = lit.shape
    top = float(np.percentile(lit, 99))
    if top < 8:
        raise StepFailed("the frame is dark: is the target in front of the window, at the spacer's height?")
    u8 = cv2.convertScaleAbs(cv2.GaussianBlur(lit, (0, 0), 1.5), alpha=255.0 / top)
    _, dark_mask = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    n, _, stats, _ = cv2.connectedComponentsWithStats(dark_mask.astype(np.uint8))
    best = None
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        inside = x > 2 and y > 2 and x + bw < w - 2 and y + bh < h - 2
        squareish = 0.8 < bw / max(bh, 1) < 1.25 and area > 0.85 * bw * bh and area > 400
        if inside and squareish and (best is None or area > best[4]):
            best = (x, y, bw, bh, area)
    if best is None:
        raise StepFailed(
            "no black square in view: hold the focus target (white card, black square in the middle) "
            "over the window, the whole square inside the view"
        )
    x, y, bw, bh, area = best
    white = float(np.median(lit[dark_mask == 0]))
    inner = lit[y + bh // 4 : y + bh - bh // 4, x + bw // 4 : x + bw - bw // 4]
    black = float(np.median(inner))
    edge = float(
        np.median(
            [
                _edge_width(lit[y + bh // 4 : y + bh - bh // 4, max(0, x - 12) : x + 12], axis=1),
                _edge_width(lit[y + bh // 4 : y + bh - bh // 4, x + bw - 12 : x + bw + 12][:, ::-1], axis=1),
                _edge_width(lit[max(0, y - 12) : y + 12, x + bw // 4 : x + bw - bw // 4], axis=0),
                _edge_width(lit[y + bh - 12 : y + bh + 12, x + bw // 4 : x + bw - bw // 4][::-1], axis=0),
            ]
        )
    )
    return TargetView(
        lit=lit,
        square=(x, y, bw, bh),
        side_px=math.sqrt(area),
        edge_px=edge,
        veil=black / max(white, 1e-6),
    )


def _edge_width(patch: np.ndarray, axis: int) -> float:
    """10-90 % width (pixels) of a white-to-black edge crossing ``patch`` along ``axis``."""
    profile = patch.mean(axis=1 - axis) if axis == 1 else patch.mean(axis=1)
    profile = profile.astype(np.float64)
    hi, lo = float(profile[:4].mean()), float(profile[-4:].mean())
    if hi - lo < 1e-6:
        return float("inf")
    p = (profile - lo) / (hi - lo)
    # upsample 10x and find where the profile crosses 0.9 and 0.1 (it falls from white to black)
    xs = np.linspace(0, len(p) - 1, len(p) * 10)
    fine = np.interp(xs, np.arange(len(p)), p)
    a = xs[int(np.argmax(fine < 0.9))]
    b = xs[int(np.argmax(fine < 0.1))]
    return float(b - a)


def focus(view: TargetView, previous: cf.Focus | None) -> Outcome:
    part = cf.Focus(edge_px=round(view.edge_px, 3), veil=round(view.veil, 4))
    lines = [
        f"edges {view.edge_px:.2f} px wide (10-90 %; in focus: at most {EDGE_PX_MAX:g}); "
        f"the black square reads {view.veil * 100:.1f} % of the white (at most {VEIL_MAX * 100:.0f} %)"
    ]
    if previous is not None:
        before = previous.edge_px
        if view.edge_px < before * 0.97:
            lines.append(
                f"sharper than the last measurement ({before:.2f} -> {view.edge_px:.2f} px): the lens "
                "turned the right way"
            )
        elif view.edge_px > before * 1.03:
            lines.append(
                f"less sharp than the last measurement ({before:.2f} -> {view.edge_px:.2f} px): turn "
                "the lens back "
                "the other way"
            )
        else:
            lines.append(f"as sharp as the last measurement ({before:.2f} px)")
    ok = True
    if view.edge_px > EDGE_PX_MAX:
        ok = False
        lines.append(
            "FAIL: out of focus. Loosen the lens lock ring, turn the lens an eighth of a turn and run "
            "`palm calibrate focus` again: it says whether that was the right way"
        )
    if view.veil > VEIL_MAX:
        ok = False
        lines.append(
            "FAIL: light is scattered over the image (the black square looks grey): the window is smudged or "
            "scratched, or a bright light shines into it. Wipe the window and run the step again"
        )
    return Outcome("focus", ok, lines, part, {"focus target": view.lit} if ok else {})


def scale(view: TargetView, config: Config) -> Outcome:
    cal = config.calibration
    px_per_mm = view.side_px / cal.target_square_mm
    part = cf.Scale(px_per_mm=round(px_per_mm, 4), distance_mm=cal.card_distance_mm)
    w = config.camera.main_size[0]
    field_mm = w / px_per_mm
    lines = [
        f"{px_per_mm:.3f} px per mm at {cal.card_distance_mm:.0f} mm: the view is {field_mm:.0f} mm "
        "wide there, "
        f"a 85 mm palm spans {85 * px_per_mm:.0f} px"
    ]
    # A 640-pixel view a hand fits in: between a palm's width and 8 times it.
    ok = 85 <= field_mm <= 700
    if not ok:
        lines.append(
            f"FAIL: a view {field_mm:.0f} mm wide at {cal.card_distance_mm:.0f} mm (expected 85 to 700 "
            "mm): the "
            f"target's square is not {cal.target_square_mm:.0f} mm ([calibration] target_square_mm), or "
            "it is not "
            "at the spacer's height, or the lens is not the one the scanner was designed for"
        )
    return Outcome("scale", ok, lines, part)


# -- verify ---------------------------------------------------------------------------------------

#: how far a calibrated scanner may drift before verify fails
DRIFT_SECTOR = 0.15  # each sector's response, relative
DRIFT_SHAPE = 0.08  # RMS of each flat field's shape, relative
DRIFT_EDGE = 1.3  # edges this much wider than calibrated
DRIFT_SCALE = 0.05


def verify(station: Station, config: Config, cal: cf.Calibration, checks: Callable[[Outcome], None]) -> bool:
    """Re-measure the window, the card and the target quickly and compare with ``cal``."""
    if cal.flat is None or cal.focus is None or cal.scale is None:
        raise StepFailed(
            "the calibration lacks " + ", ".join(cal.missing()) + ": run `palm calibrate all` before `verify`"
        )
    ok = True
    now = flat(station, config)
    lines = list(now.lines)
    drift = []
    assert isinstance(now.part, cf.Flat)
    for role, old in cal.flat.tables.items():
        new = now.part.tables[role]
        level = float(new.sum() / max(float(old.sum()), 1e-12))
        shape = new / max(float(new.mean()), 1e-12) - old / max(float(old.mean()), 1e-12)
        rms = float(np.sqrt(np.mean(shape**2)))
        if abs(level - 1) > DRIFT_SECTOR or rms > DRIFT_SHAPE:
            drift.append(
                f"{role}: {level * 100:.0f} % of its calibrated light, shape differs by {rms * 100:.1f} % RMS"
            )
    if drift:
        lines += [f"FAIL: drifted since {cal.id}: {d}" for d in drift]
        lines.append("run `palm calibrate flat` (and `exposure`) again, or find what changed")
    flat_ok = now.ok and not drift
    checks(Outcome("flat", flat_ok, lines))
    ok &= flat_ok
    view = look_at_target(station, config)
    f = focus(view, None)
    if view.edge_px > cal.focus.edge_px * DRIFT_EDGE:
        f.ok = False
        f.lines.append(
            f"FAIL: less sharp than at calibration ({cal.focus.edge_px:.2f} -> {view.edge_px:.2f} px): "
            "the lens "
            "has turned; focus it again with `palm calibrate focus`"
        )
    checks(f)
    ok &= f.ok
    s = scale(view, config)
    rel = s.part.px_per_mm / cal.scale.px_per_mm - 1
    if abs(rel) > DRIFT_SCALE:
        s.ok = False
        s.lines.append(
            f"FAIL: {rel * 100:+.1f} % against calibration: the target is not at the spacer's height, "
            "or the lens moved"
        )
    checks(s)
    return ok & s.ok
