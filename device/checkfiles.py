"""``palm check``: judge image files a person hands over, one JSON object per input.

An offline tool: it reads the images it is given (real captures from other
scanners included) and writes nothing. A single frame gets the quality measures;
a burst laid out as the protocol's plaintext (manifest.json and one PNG per LED
pattern, in a folder or a .tar) gets liveness too.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device import inputs
from device.calibration.flatfield import FlatField
from device.config import Config
from device.errors import ProtocolError
from device.hardware import patterns
from device.protocol.archive import check_ustar_headers, validate_archive
from device.vision import liveness as L
from device.vision.pipeline import Verdict, analyse_burst, analyse_frame

#: largest frame file and burst archive read (a 12-megapixel rig's burst of six PNGs is about 60 MB)
MAX_FRAME_BYTES, MAX_BURST_BYTES = 64 * inputs.MiB, 128 * inputs.MiB


class UnreadableError(inputs.InputError):
    """An input that is not an image or burst this tool can read (the message says why)."""


def _grey(data: np.ndarray | None, what: str) -> np.ndarray:
    if data is None:
        raise UnreadableError(f"{what} is not an image OpenCV can read (PNG, JPEG, BMP, TIFF ...)")
    if data.ndim == 3:
        data = cv2.cvtColor(data, cv2.COLOR_BGRA2GRAY if data.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if data.dtype == np.uint16:
        data = (data // 256).astype(np.uint8)
    if data.dtype != np.uint8 or data.ndim != 2:
        raise UnreadableError(f"{what} is a {data.dtype} image: expected 8- or 16-bit greyscale or colour")
    return data


def _decode(data: bytes, what: str) -> np.ndarray:
    return _grey(inputs.decode_image(data, what=what, flags=cv2.IMREAD_UNCHANGED), what)


def _frames_listed(manifest: Any) -> list[str]:
    entries = manifest.get("frames") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UnreadableError("manifest.json has no list of frames")
    roles: list[str] = []
    for e in entries:
        role = e.get("role") if isinstance(e, dict) else None
        if not isinstance(role, str) or not patterns.is_role(role):
            raise UnreadableError(f"a manifest entry's role {inputs.cut(role)} is not a frame's role")
        roles.append(role)
    return roles


def _read_burst(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The frames and manifest of a burst folder or .tar, every file bounded and checked (device.inputs)
    before it is decoded."""
    if path.is_dir():
        manifest = inputs.read_json(path / "manifest.json", what="burst manifest")
        frames = {}
        for role in _frames_listed(manifest):
            data = inputs.read_bytes(path / f"{role}.png", what="frame", limit=MAX_FRAME_BYTES)
            frames[role] = _decode(data, f"{role}.png")
        return frames, manifest
    data = inputs.read_bytes(path, what="burst archive", limit=MAX_BURST_BYTES)
    try:
        check_ustar_headers(data)
    except ProtocolError as exc:
        raise UnreadableError(f"not a protocol archive: {exc.detail}") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            first = tar.next()
            if first is None or first.name != "manifest.json":  # plain ustar: check_ustar_headers
                raise UnreadableError("the archive's first member is not a plain manifest.json")
            if first.size > inputs.MiB:
                raise UnreadableError(f"the archive's manifest.json is {first.size:,} bytes: at most 1 MiB")
            f = tar.extractfile(first)
            manifest = inputs.load_json(f.read() if f else b"", what="the archive's manifest.json")
    except tarfile.TarError as exc:
        raise UnreadableError(f"not a burst archive: {exc}") from None
    roles = _frames_listed(manifest)
    try:
        validate_archive(data, roles)
    except ProtocolError as exc:
        raise UnreadableError(f"not a protocol archive: {exc.detail}") from None
    frames = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for role in roles:
            f = tar.extractfile(f"{role}.png")
            assert f is not None
            frames[role] = _decode(f.read(), f"{role}.png")
    return frames, manifest


@cache
def _scanner_flat(config: Config) -> FlatField:
    """The flat fields bursts are judged against: the simulated scanner's, measured by the
    calibration's own flat step (bursts from another rig need that rig's: issue #7)."""
    from device.evaluation import sim_flat_field

    return sim_flat_field(config)


def _flat_for_crop(flat: FlatField, roi: list[int], size: tuple[int, int]) -> FlatField:
    """The flat fields seen through a sealed capture's crop window (its roi, resampled)."""
    x, y, w, h = roi
    out = {}
    for role, img in flat.response.items():
        window = img[max(0, y) : y + h, max(0, x) : x + w]
        if window.size == 0:
            raise UnreadableError(
                f"the flood roi {roi} lies outside the calibration's {img.shape[1]} x {img.shape[0]}"
            )
        out[role] = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
    focal = flat.focal_px * size[0] / w if flat.focal_px is not None else None  # in the crop's pixels
    return dataclasses.replace(flat, response=out, focal_px=focal)


def _quality_json(v: Verdict) -> dict[str, Any]:
    q = v.quality
    return {
        "ok": q.ok,
        "score": q.score,
        "reasons": q.reasons,
        **{k: round(val, 5) for k, val in q.measures.items()},
    }


def burst_verdict(path: Path, config: Config, flat: FlatField | None, model: L.Model) -> Verdict:
    """The verdict on one burst (a folder or a .tar in the protocol's plaintext layout); raises
    UnreadableError naming what is wrong with it."""
    return _judge_burst(path, config, flat, model)[0]


def _judge_burst(
    path: Path, config: Config, flat: FlatField | None, model: L.Model
) -> tuple[Verdict, dict[str, np.ndarray]]:
    frames, manifest = _read_burst(path)
    missing = {patterns.AMBIENT, patterns.FLOOD} - set(frames)
    if missing:
        raise UnreadableError(f"a burst needs ambient and flood frames; missing {sorted(missing)}")
    flood_entry = next(e for e in manifest["frames"] if e.get("role") == patterns.FLOOD)
    h, w = frames[patterns.FLOOD].shape
    odd = sorted(r for r, f in frames.items() if f.shape != (h, w))
    if odd:
        raise UnreadableError(
            f"{', '.join(odd)}: not the flood frame's size, {w} x {h} (a burst's frames are one size)"
        )
    exposure, gain, roi = _flood_settings(flood_entry, w, h)
    flat = flat or _scanner_flat(config)
    sectors = sorted(r for r in frames if r.startswith("sector-"))
    if sectors and sectors != sorted(flat.lit_roles()):
        raise UnreadableError(
            f"the burst's sectors ({', '.join(sectors)}) are not the calibration's "
            f"({', '.join(sorted(flat.lit_roles()))}): judge it with its own rig's calibration"
        )
    if (w, h) != tuple(config.camera.main_size) and list(roi) != [0, 0, w, h]:
        # A sealed capture: the frames are already the palm crop.
        flat = _flat_for_crop(flat, roi, (w, h))
    return analyse_burst(frames, exposure_us=exposure, gain=gain, flat=flat, model=model), frames


def _flood_settings(entry: dict[str, Any], w: int, h: int) -> tuple[int, float, list[int]]:
    """The flood frame's exposure, gain and crop window from its manifest entry, each checked."""
    exposure, gain, roi = entry.get("exposure_us"), entry.get("gain"), entry.get("roi", [0, 0, w, h])
    if not isinstance(exposure, int) or isinstance(exposure, bool) or not 0 < exposure <= 10_000_000:
        raise UnreadableError(
            f"the manifest's flood exposure_us = {inputs.cut(exposure)}: expected microseconds, 1 to 10000000"
        )
    if not isinstance(gain, int | float) or isinstance(gain, bool) or not 0 < gain <= 1000:
        raise UnreadableError(f"the manifest's flood gain = {inputs.cut(gain)}: expected a number above 0")
    if not (
        isinstance(roi, list)
        and len(roi) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < 1 << 20 for v in roi)
        and roi[2] > 0
        and roi[3] > 0
    ):
        raise UnreadableError(f"the manifest's flood roi = {inputs.cut(roi)}: expected [x, y, width, height]")
    return exposure, float(gain), roi


def liveness_json(lv: L.Liveness | None) -> dict[str, Any] | None:
    if lv is None:
        return None
    return {"live": lv.live, "verdict": lv.verdict, "score": lv.score, "reasons": lv.reasons, **lv.cues}


def check_path(
    path: Path,
    config: Config,
    flat: FlatField | None = None,
    model: L.Model | None = None,
    crop_to: Path | None = None,
) -> dict[str, Any]:
    """One input's JSON line; ``flat``: the flat fields bursts are judged against (a calibration
    given as frames), else the simulated scanner's; ``model``: the liveness model (a rig's own, from
    `palm calibrate liveness`), else the shipped one; ``crop_to``: write the crop the scanner would
    seal there (a frame's, or a burst's flood frame's) as a PNG, and name it in the line."""
    out: dict[str, Any] = {"path": str(path)}
    try:
        if path.is_dir() or path.suffix == ".tar":
            verdict, frames = _judge_burst(path, config, flat, model or L.default_model())
            frame = frames[patterns.FLOOD]
            out["quality"] = _quality_json(verdict)
            out["liveness"] = liveness_json(verdict.liveness)
        else:
            data = inputs.read_bytes(path, what="image", limit=MAX_FRAME_BYTES)
            frame = _decode(data, path.name)
            verdict = analyse_frame(frame)
            out["quality"] = _quality_json(verdict)
            out["liveness"] = None
    except (inputs.InputError, OSError, KeyError, StopIteration) as exc:
        return {
            "path": str(path),
            "error": str(exc) if isinstance(exc, inputs.InputError) else f"cannot read: {exc}",
        }
    if crop_to is not None:
        out["crop"] = _write_crop(frame, verdict, crop_to)
    return out


def _write_crop(frame: np.ndarray, verdict: Verdict, to: Path) -> str | None:
    """The crop the scanner would seal, written to ``to`` (an offline tool's output, for an
    outside matcher); None where no palm was found. Raises OutputError if it cannot be written."""
    from device.errors import OutputError

    if verdict.hand is None:
        return None
    ok, png = cv2.imencode(".png", verdict.hand.crop(frame))
    try:
        if not ok:
            raise OSError("PNG encoding failed")
        to.write_bytes(png.tobytes())
    except OSError as exc:
        raise OutputError(f"cannot write the crop {to}: {exc}") from None
    return str(to)


def _bursts_in(folder: Path) -> list[Path]:
    """The bursts in a folder: its sub-folders with a manifest.json and its .tar files, by name."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if (p.is_dir() and (p / "manifest.json").is_file()) or p.suffix == ".tar"
    )


def is_labelled(folder: Path) -> bool:
    """A rig's labelled bursts (live/NAME/, attack/KIND/NAME/) rather than one burst."""
    return (
        folder.is_dir()
        and not (folder / "manifest.json").exists()
        and ((folder / "live").is_dir() or (folder / "attack").is_dir())
    )


def check_labelled(
    bdir: Path, config: Config, flat: FlatField | None, model: L.Model
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Each labelled burst of a rig (``bdir``/live/NAME/ and ``bdir``/attack/KIND/NAME/, folders or
    .tar files) in order: its JSON line (`check_path`'s, with its "label") and its rigfit.Labelled
    row, None where it has no cues (unreadable, or no hand found in the ring's light; the line says
    which)."""
    from device.vision.fitting import BONA_FIDE
    from device.vision.rigfit import Labelled

    if not bdir.is_dir():
        raise UnreadableError(f"{bdir} is not a folder of bursts (live/NAME/ and attack/KIND/NAME/)")
    found: list[tuple[str, Path]] = [(BONA_FIDE, p) for p in _bursts_in(bdir / "live")]
    attack = bdir / "attack"
    kinds = sorted(p for p in attack.iterdir() if p.is_dir()) if attack.is_dir() else []
    for kind_dir in kinds:
        found += [(kind_dir.name, p) for p in _bursts_in(kind_dir)]
    for kind, path in found:
        label = "live" if kind == BONA_FIDE else f"attack/{kind}"
        try:
            verdict = burst_verdict(path, config, flat, model)
        except (inputs.InputError, OSError, KeyError, StopIteration) as exc:
            error = str(exc) if isinstance(exc, inputs.InputError) else f"cannot read: {exc}"
            yield {"path": str(path), "label": label, "error": error}, None
            continue
        line = {
            "path": str(path),
            "label": label,
            "quality": _quality_json(verdict),
            "liveness": liveness_json(verdict.liveness),
        }
        if verdict.liveness is None:
            yield line, None
            continue
        cues = dict(verdict.liveness.cues)
        yield line, Labelled(kind, str(path.relative_to(bdir)), cues, verdict.quality.ok)


def read_labelled(bdir: Path, config: Config, flat: FlatField, model: L.Model) -> tuple[list[Any], list[str]]:
    """The labelled bursts of a rig as rigfit.Labelled rows (see `check_labelled`), and one line per
    burst that could not be used (unreadable, or no hand found: no cues to fit on). Nothing is
    skipped without its line."""
    rows, problems = [], []
    for line, row in check_labelled(bdir, config, flat, model):
        if row is not None:
            rows.append(row)
        elif "error" in line:
            problems.append(f"{line['path']}: {line['error']}")
        else:
            reasons = ", ".join(line["quality"]["reasons"])
            problems.append(f"{line['path']}: no hand found in the ring's light ({reasons})")
    return rows, problems
