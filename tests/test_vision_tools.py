"""palm check on bursts, palm eval and palm bench, run as a person runs them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.config import Config
from device.hardware import patterns
from device.protocol.archive import CaptureFrame, build_archive
from device.sim.scene import Reach, make_scene
from device.sim.sheet import render_burst


def palm(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def burst_folder(config: Config, kind: str, seed: int, out: Path, reach: Reach | None = None) -> Path:
    """A burst of ``config``'s ring in the protocol's plaintext layout (``reach``: where the
    object is held)."""
    scene = make_scene(kind, seed, motion="still", reach=reach)
    names = patterns.all_patterns(len(config.leds.sector_pins))
    frames = render_burst(config, scene, names, exposure_us=2200, gain=2.0)
    out.mkdir(parents=True)
    entries = []
    for f in frames:
        role = f.leds or ""
        ok, png = cv2.imencode(".png", f.pixels)
        assert ok
        (out / f"{role}.png").write_bytes(png.tobytes())
        entries.append(
            {
                "role": role,
                "width": 640,
                "height": 480,
                "roi": [0, 0, 640, 480],
                "exposure_us": 2200,
                "gain": 2.0,
                "leds": patterns.manifest_leds(role),
                "timestamp_ns": f.timestamp_ns,
            }
        )
    (out / "manifest.json").write_text(json.dumps({"frames": entries}))
    return out


def as_tar(folder: Path) -> Path:
    manifest = json.loads((folder / "manifest.json").read_text())
    frames = [
        CaptureFrame(
            role=e["role"],
            pixels=cv2.imread(str(folder / f"{e['role']}.png"), cv2.IMREAD_GRAYSCALE),
            roi=tuple(e["roi"]),
            exposure_us=e["exposure_us"],
            gain=e["gain"],
            leds=e["leds"],
            timestamp_ns=e["timestamp_ns"],
        )
        for e in manifest["frames"]
    ]
    path = folder.with_suffix(".tar")
    path.write_bytes(bytes(build_archive(frames)))
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:
        assert tar.getnames()[0] == "manifest.json"
    return path


def test_check_judges_bursts_and_reports_unreadable_inputs(config: Config, tmp_path: Path) -> None:
    live = burst_folder(config, "genuine", 7, tmp_path / "genuine")
    fake = burst_folder(config, "print_flat", 7, tmp_path / "print")
    screen = burst_folder(config, "screen", 7, tmp_path / "screen")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    single = tmp_path / "single.png"
    single.write_bytes(
        cv2.imencode(".png", cv2.imread(str(live / "flood.png"), cv2.IMREAD_GRAYSCALE))[1].tobytes()
    )
    proc = palm(
        "check",
        str(live),
        str(as_tar(fake)),
        str(screen),
        str(tmp_path / "junk.png"),
        str(single),
        str(tmp_path / "missing"),
    )
    assert proc.returncode == 1 and "2 input(s) could not be read" in proc.stderr, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["path"] for o in out] == [
        str(live),
        str(tmp_path / "print.tar"),
        str(screen),
        str(tmp_path / "junk.png"),
        str(single),
        str(tmp_path / "missing"),
    ]
    assert out[0]["quality"]["ok"] and out[0]["liveness"]["live"] is True
    assert out[1]["liveness"]["live"] is False
    assert out[2]["liveness"] is None or out[2]["liveness"]["live"] is False
    assert "error" in out[3] and "not a PNG, JPEG or BMP image" in out[3]["error"]
    assert out[4]["liveness"] is None and "score" in out[4]["quality"] and "reasons" in out[4]["quality"]
    assert "error" in out[5]
    for o in out[:3]:
        assert {"ok", "score", "reasons", "focus", "veins", "exposure_p50"} <= set(o["quality"])


def test_eval_prints_iso_rates_as_json_and_draws_det_curves(tmp_path: Path) -> None:
    plot = tmp_path / "det.png"
    proc = palm("eval", "--samples", "6", "--seed", "77", "--json", "--plot", str(plot), "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["samples"] == 6 and r["seed"] == 77 and 0 < r["threshold"] < 1
    assert set(r["apcer"]) == {"print_flat", "print_flat_veins", "print_curved", "screen", "fake_hand"}
    assert all(0 <= v <= 1 for v in [r["bpcer"], r["quality_reject_rate"], *r["apcer"].values()])
    # Few samples, loose bounds: a working pipeline makes few errors even here.
    assert r["bpcer"] <= 1 / 6 and max(r["apcer"].values()) <= 1 / 6
    img = cv2.imread(str(plot))
    assert (
        img is not None and img.shape == (640, 640, 3) and np.unique(img.reshape(-1, 3), axis=0).shape[0] > 5
    )
    clash = palm("eval", "--samples", "5", "--seed", "900001")
    assert clash.returncode == 2 and "development seeds" in clash.stderr


def test_bench_prints_every_stage(tmp_path: Path) -> None:
    proc = palm("bench", "--runs", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert set(r["stages"]) == {
        "presence (lit+dark 640x480)",
        "segmentation and crop",
        "quality",
        "liveness",
        "whole burst",
    }
    for s in r["stages"].values():
        assert 0 < s["median_ms"] <= s["p95_ms"]
    assert r["burst_median_ms"] == r["stages"]["whole burst"]["median_ms"]
    # Six frames at the camera's rate: IMX219's full-field mode gives 41.85 fps of the 60 asked.
    assert r["frame_rate"] == 41.85 and r["capture_ms"] == pytest.approx(6000 / 41.85)
