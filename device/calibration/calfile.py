"""The calibration file: what `palm calibrate` measured, as TOML, with no images in it.

Flat fields are stored as tables (the card's response averaged over cells of
CELL_PX x CELL_PX pixels, in grey levels per microsecond x gain), as libcamera's
lens-shading tables are: a grey card's light varies smoothly, and a table is
what a person can read and diff. The checks read them back as full-size maps.

The file's ``id`` is what sealed captures carry in their envelope's
``calibration`` field, so the cloud knows which calibration judged a capture.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device import inputs
from device.calibration.flatfield import NOMINAL_FOCAL_OF_WIDTH, FlatField, ring_spread
from device.errors import ScannerError
from device.inputs import cut

FORMAT = 1
#: side of a flat-field table's cell, in frame pixels
CELL_PX = 16
#: largest calibration file read (a 12-megapixel rig's tables are about 3 MB)
MAX_FILE_BYTES = 16 * inputs.MiB


class CalibrationError(ScannerError):
    """The calibration file is missing, unreadable or does not fit this scanner."""

    exit_code = 78  # EX_CONFIG: the scanner cannot run without its calibration


@dataclass(frozen=True)
class Dark:
    offset_dn: float
    noise_dn: float
    hot_pixels: int
    exposure_us: int
    gain: float


@dataclass(frozen=True, eq=False)
class Flat:
    card_albedo: float
    card_distance_mm: float
    #: role -> (rows, cols) grey levels per (us x gain), each cell the mean of CELL_PX^2 pixels
    tables: Mapping[str, np.ndarray]
    #: a clean window returns almost none of the ring's light: the glow with nothing in front,
    #: as a fraction of the card's flood response at the centre
    window_glow: float
    #: each sector's total light as a fraction of the sectors' median
    sector_share: tuple[float, ...]
    #: the direction each sector lights the card from, degrees counter-clockwise from the right
    sector_deg: tuple[float, ...]
    #: the flood's response at the corners relative to the centre (lens and ring fall-off)
    corner_ratio: float

    def field(self, width: int, height: int) -> FlatField:
        """The full-size flat fields the checks divide by."""
        return FlatField(
            response={
                role: np.maximum(cv2.resize(t, (width, height), interpolation=cv2.INTER_CUBIC), 1e-9)
                for role, t in self.tables.items()
            },
            card_albedo=self.card_albedo,
            card_distance_mm=self.card_distance_mm,
        )


@dataclass(frozen=True)
class Exposure:
    """The palm's starting exposure (metering refines it per hand) and the ring's on-time."""

    exposure_us: int
    gain: float
    ring_on_ms: float


@dataclass(frozen=True)
class Focus:
    edge_px: float  # 10-90 % width of the target's edges
    veil: float  # the black square's grey as a fraction of the white (scattered light)


@dataclass(frozen=True)
class Scale:
    px_per_mm: float
    distance_mm: float


@dataclass(frozen=True)
class Calibration:
    id: str
    created: str  # UTC, ISO 8601
    device_id: str
    width: int
    height: int
    sector_pins: tuple[int, ...]
    software: str
    dark: Dark | None = None
    flat: Flat | None = None
    exposure: Exposure | None = None
    focus: Focus | None = None
    scale: Scale | None = None
    history: tuple[str, ...] = field(default=())  # the steps run, oldest first

    def flat_field(self) -> FlatField:
        if self.flat is None:
            raise CalibrationError("the calibration has no flat fields: run `palm calibrate flat`")
        field = self.flat.field(self.width, self.height)
        # pixels per mm at a distance is the focal length in pixels: the checks' sizes become
        # distances, and the ring's spread is measured in angles. Without the scale step, the
        # ring's spread takes the nominal lens's (380 px at 640 wide).
        focal = self.scale.px_per_mm * self.scale.distance_mm if self.scale is not None else None
        spread = ring_spread(
            self.flat.tables,
            self.width,
            self.height,
            focal or self.width * NOMINAL_FOCAL_OF_WIDTH,
            self.flat.card_distance_mm,
        )
        return replace(field, focal_px=focal, ring_spread=round(spread, 4))

    def missing(self) -> list[str]:
        """The steps this calibration still lacks."""
        return [name for name in STEPS if getattr(self, name) is None]

    def updated(self, **parts: Any) -> Calibration:
        """A new calibration (new id and time) with some steps' results replaced."""
        now = dt.datetime.now(dt.UTC)
        return replace(
            self,
            id=new_id(now),
            created=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            history=(*self.history, *parts)[-20:],
            **parts,
        )

    def age_days(self, now: dt.datetime | None = None) -> float:
        made = dt.datetime.fromisoformat(self.created.replace("Z", "+00:00"))
        return ((now or dt.datetime.now(dt.UTC)) - made).total_seconds() / 86400


#: the steps that fill a calibration, in the order `palm calibrate all` runs them
STEPS = ("dark", "flat", "exposure", "focus", "scale")


def new_id(now: dt.datetime) -> str:
    """``cal-YYYYMMDD-HHMMSS-xxxx``: sortable, unique enough, and a short string for the envelope."""
    return f"cal-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def empty(
    device_id: str, width: int, height: int, sector_pins: tuple[int, ...], software: str
) -> Calibration:
    now = dt.datetime.now(dt.UTC)
    return Calibration(
        id=new_id(now),
        created=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        device_id=device_id,
        width=width,
        height=height,
        sector_pins=sector_pins,
        software=software,
    )


# -- writing ------------------------------------------------------------------------------------


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(float(f"{v:.6g}")) if math.isfinite(v) else "nan"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to the calibration file")


def to_toml(cal: Calibration) -> str:
    out = [
        "# palm-scanner calibration, written by `palm calibrate`. No images: figures and tables only.",
        "# Flat-field tables: the grey card's light per cell of "
        f"{CELL_PX}x{CELL_PX} pixels, grey levels per (microsecond x gain).",
        f"format = {FORMAT}",
    ]
    for key in ("id", "created", "device_id", "width", "height", "sector_pins", "software", "history"):
        out.append(f"{key} = {_value(getattr(cal, key))}")
    for name in ("dark", "exposure", "focus", "scale"):
        part = getattr(cal, name)
        if part is not None:
            out += ["", f"[{name}]"]
            out += [f"{k} = {_value(getattr(part, k))}" for k in part.__dataclass_fields__]
    if cal.flat is not None:
        f = cal.flat
        out += ["", "[flat]"]
        for k in (
            "card_albedo",
            "card_distance_mm",
            "window_glow",
            "sector_share",
            "sector_deg",
            "corner_ratio",
        ):
            out.append(f"{k} = {_value(getattr(f, k))}")
        for role, table in f.tables.items():
            out += ["", f'[flat.tables."{role}"]', "rows = ["]
            out += ["  [" + ", ".join(f"{x:.5g}" for x in row) + "]," for row in table.tolist()]
            out.append("]")
    return "\n".join(out) + "\n"


def save(cal: Calibration, path: Path) -> None:
    """Write atomically (a temporary file beside it, then rename): a scanner never reads half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(to_toml(cal))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CalibrationError(f"cannot write the calibration to {path}: {e.strerror}") from None


# -- reading ------------------------------------------------------------------------------------


def load(path: Path) -> Calibration:
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise CalibrationError(
            f"no calibration at {path}: run `palm calibrate all` with the grey card and the focus target"
        )
    try:
        data = inputs.read_toml(path, what="calibration", limit=MAX_FILE_BYTES)
    except inputs.InputError as e:
        raise CalibrationError(f"{e}: run `palm calibrate all` again") from None
    try:
        return parse(data)
    except CalibrationError as e:
        raise CalibrationError(f"{path}: {e}") from None


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    label = f"{where}.{key}" if where else key
    if key not in data:
        raise CalibrationError(f"{label} is missing")
    v = data[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        raise CalibrationError(f"{label} = {cut(v)} is not {_kind_name(kind)}")
    if isinstance(v, float) and not math.isfinite(v):
        raise CalibrationError(f"{label} is not a finite number")
    return v


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}
    return names.get(kind, "valid") if isinstance(kind, type) else "valid"


def _numbers(data: Mapping[str, Any], key: str, where: str, n: int | None = None) -> tuple[float, ...]:
    v = _get(data, key, list, where)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) or (
        n is not None and len(v) != n
    ):
        want = f"{n} numbers" if n is not None else "numbers"
        label = f"{where}.{key}" if where else key
        raise CalibrationError(f"{label} must be a list of {want}")
    return tuple(float(x) for x in v)


def parse(data: Mapping[str, Any]) -> Calibration:
    fmt = _get(data, "format", int)
    if fmt != FORMAT:
        raise CalibrationError(f"format = {fmt} is not one this software reads ({FORMAT}): calibrate again")
    width, height = _get(data, "width", int), _get(data, "height", int)
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise CalibrationError(f"width x height = {width} x {height} is not a frame size")
    pins = tuple(int(p) for p in _numbers(data, "sector_pins", ""))
    cal = Calibration(
        id=_get(data, "id", str),
        created=_get(data, "created", str),
        device_id=_get(data, "device_id", str),
        width=width,
        height=height,
        sector_pins=pins,
        software=_get(data, "software", str),
        history=tuple(str(h) for h in data.get("history", [])),
    )
    if len(cal.id) > 64:
        raise CalibrationError("id is longer than 64 characters")
    try:
        cal.age_days()
    except ValueError:
        raise CalibrationError(f"created = {cut(cal.created)} is not an ISO 8601 time") from None
    parts: dict[str, Any] = {}
    if "dark" in data:
        d = data["dark"]
        parts["dark"] = Dark(
            offset_dn=_get(d, "offset_dn", float, "dark"),
            noise_dn=_get(d, "noise_dn", float, "dark"),
            hot_pixels=_get(d, "hot_pixels", int, "dark"),
            exposure_us=_get(d, "exposure_us", int, "dark"),
            gain=_get(d, "gain", float, "dark"),
        )
    if "flat" in data:
        parts["flat"] = _parse_flat(data["flat"], width, height, len(pins))
    if "exposure" in data:
        e = data["exposure"]
        parts["exposure"] = Exposure(
            exposure_us=_get(e, "exposure_us", int, "exposure"),
            gain=_get(e, "gain", float, "exposure"),
            ring_on_ms=_get(e, "ring_on_ms", float, "exposure"),
        )
    if "focus" in data:
        f = data["focus"]
        parts["focus"] = Focus(
            edge_px=_get(f, "edge_px", float, "focus"), veil=_get(f, "veil", float, "focus")
        )
    if "scale" in data:
        s = data["scale"]
        parts["scale"] = Scale(
            px_per_mm=_get(s, "px_per_mm", float, "scale"), distance_mm=_get(s, "distance_mm", float, "scale")
        )
    return replace(cal, **parts)


def table_shape(width: int, height: int) -> tuple[int, int]:
    """(rows, cols) of a flat-field table for a frame of this size."""
    return max(1, round(height / CELL_PX)), max(1, round(width / CELL_PX))


def _parse_flat(f: Mapping[str, Any], width: int, height: int, n_sectors: int) -> Flat:
    tables_in = _get(f, "tables", dict, "flat")
    want = ["flood", *(f"sector-{k}" for k in range(n_sectors))]
    if sorted(tables_in) != sorted(want):
        raise CalibrationError(
            f"flat.tables has {', '.join(sorted(tables_in)) or 'nothing'}: "
            f"this scanner's {n_sectors} sectors need {', '.join(want)}"
        )
    shape = table_shape(width, height)
    tables = {}
    for role in want:
        rows = _get(tables_in[role], "rows", list, f'flat.tables."{role}"')
        try:
            t = np.array(rows, dtype=np.float32)
        except (ValueError, TypeError):
            raise CalibrationError(f'flat.tables."{role}".rows is not a table of numbers') from None
        if t.shape != shape or not np.all(np.isfinite(t)) or float(t.min()) < 0:
            raise CalibrationError(
                f'flat.tables."{role}".rows must be {shape[0]} rows of {shape[1]} non-negative numbers '
                f"for {width}x{height} frames"
            )
        tables[role] = t
    return Flat(
        card_albedo=_get(f, "card_albedo", float, "flat"),
        card_distance_mm=_get(f, "card_distance_mm", float, "flat"),
        tables=tables,
        window_glow=_get(f, "window_glow", float, "flat"),
        sector_share=_numbers(f, "sector_share", "flat", n_sectors),
        sector_deg=_numbers(f, "sector_deg", "flat", n_sectors),
        corner_ratio=_get(f, "corner_ratio", float, "flat"),
    )
