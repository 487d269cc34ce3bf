"""The technician's report: one self-contained HTML page to leave behind.

Figures and verdicts of every step, the flat fields' uniformity maps (drawn from the
tables in the calibration file) and pictures of the grey card and the focus target,
only as the steps that recognised them kept them: never a picture of a hand.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Sequence

import cv2
import numpy as np

from device.calibration import calfile as cf
from device.calibration.steps import Outcome
from device.hardware import patterns

MAP_PX = 240  # width of a uniformity map in the page


def _png(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", image)
    if not ok:  # an 8-bit image always encodes; this would be a bug
        raise RuntimeError("cannot encode a report picture")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def uniformity_map(table: np.ndarray, width: int = MAP_PX) -> np.ndarray:
    """A table as a colour map (relative to its own maximum), with iso-lines every 10 %."""
    rel = table / max(float(table.max()), 1e-12)
    h = round(width * table.shape[0] / table.shape[1])
    big = cv2.resize(rel.astype(np.float32), (width, h), interpolation=cv2.INTER_CUBIC)
    img = cv2.applyColorMap(np.clip(big * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    steps = np.floor(np.clip(big, 0, 0.999) * 10)
    edge = (np.diff(steps, axis=0, prepend=steps[:1]) != 0) | (
        np.diff(steps, axis=1, prepend=steps[:, :1]) != 0
    )
    img[edge] = (255, 255, 255)
    return img


def _picture(image: np.ndarray, width: int = 320) -> np.ndarray:
    top = max(float(np.percentile(image, 99.5)), 1e-6)
    u8 = np.clip(image * (230.0 / top), 0, 255).astype(np.uint8)
    h = round(width * u8.shape[0] / u8.shape[1])
    return cv2.resize(u8, (width, h), interpolation=cv2.INTER_AREA)


def _cls(ok: bool) -> str:
    return "ok" if ok else "fail"


def render(cal: cf.Calibration, outcomes: Sequence[Outcome], *, saved_to: str | None, title: str) -> str:
    e = html.escape
    ok = all(o.ok for o in outcomes)
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{e(title)}</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 "
        "1em;color:#222}"
        "h1{font-size:1.5em}.ok{color:#176b2c}.fail{color:#b00020}table{border-collapse:collapse}"
        "td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}"
        "figure{display:inline-block;margin:.5em 1em .5em 0}figcaption{font-size:.85em;color:#555}"
        "pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p class={_cls(ok)}><b>{'All steps passed.' if ok else 'Not passed: see below.'}</b></p>",
        "<table>",
        f"<tr><th>scanner</th><td>{e(cal.device_id)}</td></tr>",
        f"<tr><th>calibration id</th><td>{e(cal.id)}</td></tr>",
        f"<tr><th>made</th><td>{e(cal.created)}</td></tr>",
        f"<tr><th>report written</th><td>{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}</td></tr>",
        f"<tr><th>frames</th><td>{cal.width} x {cal.height}, sectors on BCM "
        f"{e(str(list(cal.sector_pins)))}</td></tr>",
        f"<tr><th>software</th><td>{e(cal.software)}</td></tr>",
        f"<tr><th>file</th><td>{e(saved_to) if saved_to else 'not saved'}</td></tr>",
        "</table>",
    ]
    for o in outcomes:
        out.append(f"<h2>{e(o.step)}: <span class={_cls(o.ok)}>{'passed' if o.ok else 'FAILED'}</span></h2>")
        out.append("<pre>" + e("\n".join(o.lines)) + "</pre>")
        if o.step == "flat" and isinstance(o.part, cf.Flat):
            out.append(
                "<p>Uniformity: each pattern's light on the grey card, relative to its brightest cell; "
                "white lines every 10 %.</p>"
            )
            for role, table in o.part.tables.items():
                label = "full ring" if role == patterns.FLOOD else role
                out.append(
                    f"<figure><img alt='{e(label)}' src='{_png(uniformity_map(table))}'>"
                    f"<figcaption>{e(label)}: min {table.min() / max(table.max(), 1e-12) * 100:.0f} %"
                    "</figcaption></figure>"
                )
        for name, picture in o.pictures.items():
            out.append(
                f"<figure><img alt='{e(name)}' src='{_png(_picture(picture))}'>"
                f"<figcaption>{e(name)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
