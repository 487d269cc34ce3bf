"""Every file a person hands over, under the security review's cases (issue #16): a config, a key, a
calibration folder and file, a burst, a liveness model, a folder of palm images. Each case is a
line of the table below: how the file is made, the command given it, the exit and the words the
message must hold. None may give a traceback, run unbounded or echo a huge value.

``python -m tests.test_inputs [--tree DIR]`` runs every case in a child process of its own, with a
time and a memory limit, against the checkout in DIR (default: this one), and prints per class
how many were tried, handled and failed: the before-and-after figures of the issue's note.
"""

# ruff: noqa: E501 - the table reads best one case a line

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import os
import struct
import sys
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"

#: how a message may be long at most: one line naming the problem, never a value echoed whole
MAX_MESSAGE = 1000


# -- material ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """Valid inputs each case starts from, made once: a key, a config, a calibration folder of
    frames, a burst folder and a palm image."""

    root: Path
    key: Path
    frames: Path
    burst: Path
    image: Path

    def config(self, old: str = "", new: str = "", *, append: str = "") -> str:
        text = EXAMPLE.read_text().replace("/var/lib/palm-scanner/device-key.pem", str(self.key))
        assert old in text, old
        return text.replace(old, new, 1) + append


def make_base(root: Path) -> Base:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from device import cli
    from device.config import defaults_for_simulation
    from device.protocol.keys import write_private_key

    root.mkdir(parents=True, exist_ok=True)
    key = root / "device-key.pem"
    write_private_key(key, Ed25519PrivateKey.generate())
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(
            [
                "calibrate",
                "flat",
                "--simulate",
                "--save-frames",
                str(root / "rig"),
                "--file",
                str(root / "c.toml"),
            ]
        )
    assert code == 0
    from tests.test_vision_tools import burst_folder

    burst = burst_folder(defaults_for_simulation(), "genuine", 5, root / "burst")
    return Base(root, key, root / "rig", burst, burst / "flood.png")


@functools.cache
def huge_png(w: int = 20000, h: int = 20000) -> bytes:
    """A valid 8-bit greyscale PNG of w x h black pixels: about 400 kB that decode to w x h bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(w + 1)
    body = b"".join(z.compress(row * 100) for _ in range(h // 100)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def copy_tree(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def fifo(path: Path) -> Path:
    os.mkfifo(path, 0o600)
    return path


def link(path: Path, target: str | Path) -> Path:
    path.symlink_to(target)
    return path


def write(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def deep(n: int, open_: str = "[", close: str = "]") -> str:
    return open_ * n + close * n


def edit_manifest(folder: Path, change: Callable[[dict], object]) -> Path:
    m = json.loads((folder / "manifest.json").read_text())
    change(m)
    (folder / "manifest.json").write_text(json.dumps(m, allow_nan=True))
    return folder


def raw_manifest(folder: Path, old: str, new: str) -> Path:
    p = folder / "manifest.json"
    text = p.read_text()
    assert old in text, old
    p.write_text(text.replace(old, new))
    return folder


def _crops_at(folder: Path, roi: list[int]) -> Path:
    """The burst as a sealed capture's crops (200 x 200) of the window ``roi``."""
    for p in folder.glob("*.png"):
        p.write_bytes(cv2.imencode(".png", np.full((200, 200), 60, np.uint8))[1].tobytes())
    return edit_manifest(folder, lambda m: [e.update(roi=roi, width=200, height=200) for e in m["frames"]])


def sparse_manifest_tar(path: Path) -> Path:
    """A burst archive whose first member is a PAX 1.0 sparse manifest.json claiming 1 TiB: 1.5 kB."""
    info = tarfile.TarInfo("GNUSparseFile.0/manifest.json")
    sparse_map = b"1\n0\n512\n".ljust(512, b"\0")
    info.size = len(sparse_map) + 512
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "manifest.json",
        "GNU.sparse.realsize": str(1 << 40),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(sparse_map + b"{" * 512))
    path.write_bytes(buf.getvalue())
    return path


# -- the table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str  # config, key, frames, calibration, check, model, eval
    name: str
    make: Callable[[Base, Path], list[str]]  # the command's arguments after `palm`
    code: int  # the exit it must end with
    says: str  # words the message must hold ("" for a valid input)


def _config_case(name: str, make_text: Callable[[Base], str], says: str, code: int = 78) -> Case:
    def make(b: Base, t: Path) -> list[str]:
        return ["sim", "--config", str(write(t / "c.toml", make_text(b))), "--out", str(t / "o.png")]

    return Case("config", name, make, code, says)


def _recipient(b: Base, key: str) -> str:
    text = b.config()
    i = text.index('recipient_public_key = "') + len('recipient_public_key = "')
    return text[:i] + key + text[text.index('"', i) :]


def _config_file(name: str, place: Callable[[Base, Path], Path], says: str, code: int = 78) -> Case:
    return Case(
        "config",
        name,
        lambda b, t: ["sim", "--config", str(place(b, t)), "--out", str(t / "o.png")],
        code,
        says,
    )


def _key(name: str, place: Callable[[Base, Path], Path], says: str) -> Case:
    return Case("key", name, lambda b, t: ["keys", "show", str(place(b, t))], 78, says)


def _frames(name: str, spoil: Callable[[Path], object], says: str) -> Case:
    def make(b: Base, t: Path) -> list[str]:
        folder = copy_tree(b.frames, t / "rig")
        spoil(folder)
        return ["calibrate", "from-frames", str(folder), "--file", str(t / "out.toml")]

    return Case("frames", name, make, 65, says)


def _calibration(name: str, place: Callable[[Path], Path], says: str) -> Case:
    return Case(
        "calibration",
        name,
        lambda b, t: ["calibrate", "verify", "--simulate", "--file", str(place(t))],
        78,
        says,
    )


def _check(name: str, place: Callable[[Base, Path], Path], says: str) -> Case:
    return Case("check", name, lambda b, t: ["check", str(place(b, t))], 1, says)


def _burst(name: str, spoil: Callable[[Path], object], says: str) -> Case:
    def place(b: Base, t: Path) -> Path:
        folder = copy_tree(b.burst, t / "burst")
        spoil(folder)
        return folder

    return _check(name, place, says)


def _model(name: str, text: str | None, says: str, place: Callable[[Path], Path] | None = None) -> Case:
    def make(b: Base, t: Path) -> list[str]:
        path = place(t) if place else write(t / "model.json", text or "")
        return ["check", "--liveness", str(path), str(b.image)]

    return Case("model", name, make, 1, says)


def _eval(name: str, place: Callable[[Base, Path], object], says: str) -> Case:
    def make(b: Base, t: Path) -> list[str]:
        folder = t / "palms"
        folder.mkdir()
        write(folder / "001_l_940_01.png", b.image.read_bytes())
        place(b, folder)
        return ["eval", "--real", str(folder)]

    return Case("eval", name, make, 2, says)


BIG = 2 * 1024 * 1024

CASES = [
    # config: `palm sim --config FILE` reads it first
    _config_case("endpoint with an unclosed IPv6 bracket", lambda b: b.config('"https://ingest.example.com"', '"https://[::1"'), "endpoint"),
    _config_case("endpoint port out of range", lambda b: b.config("https://ingest.example.com", "https://h:99999"), "endpoint"),
    _config_case("array nested 100000 deep", lambda b: b.config("main_size = [640, 480]", f"main_size = {deep(100_000)}"), "nests"),
    _config_case("inline tables nested 5000 deep", lambda b: b.config('tuning_file = "imx219_noir.json"', "tuning_file = " + "{a=" * 5000 + "1" + "}" * 5000), "nests"),
    _config_case("dotted key 1000 parts deep", lambda b: "a" + ".a" * 1000 + " = 1\n" + b.config(), "nests"),
    _config_case("integer of 5000 digits", lambda b: b.config("buffer_count = 4", "buffer_count = " + "1" * 5000), "number"),
    _config_case("integer of 4301 digits", lambda b: b.config("buffer_count = 4", "buffer_count = " + "9" * 4301), "number"),
    _config_case("frame_rate = nan", lambda b: b.config("frame_rate = 60.0", "frame_rate = nan"), "NaN"),
    _config_case("frame_rate = -nan", lambda b: b.config("frame_rate = 60.0", "frame_rate = -nan"), "NaN"),
    _config_case("frame_rate = inf", lambda b: b.config("frame_rate = 60.0", "frame_rate = inf"), "infinity"),
    _config_case("idle_level = nan", lambda b: b.config("idle_level = 0.15", "idle_level = nan"), "NaN"),
    _config_case("max_on_s = nan", lambda b: b.config("max_on_s = 2.0", "max_on_s = nan"), "NaN"),
    _config_case("card_albedo = nan", lambda b: b.config("card_albedo = 0.5", "card_albedo = nan"), "NaN"),
    _config_case("first_sector_deg = nan", lambda b: b.config("first_sector_deg = 45.0", "first_sector_deg = nan"), "NaN"),
    _config_case("focus_distance_mm = 1e999", lambda b: b.config("focus_distance_mm = 125.0", "focus_distance_mm = 1e999"), "infinity"),
    _config_case("a NUL in key_file", lambda b: b.config(f'key_file = "{b.key}"', 'key_file = "a\\u0000b"'), "NUL"),
    _config_case("an id of 500000 characters", lambda b: b.config('id = "store-0042-lane-3"', f'id = "{"a" * 500_000}"'), "characters)"),
    _config_case("an endpoint of 500000 characters", lambda b: b.config('"https://ingest.example.com"', f'"{"x" * 500_000}"'), "characters)"),
    _config_case("a tuning file of 500000 characters", lambda b: b.config('"imx219_noir.json"', "[" + ", ".join(["1"] * 100_000) + "]"), "characters)"),
    _config_case("an all-zero recipient key", lambda b: _recipient(b, "A" * 43 + "="), "small order"),
    _config_case("a key of 31 bytes", lambda b: _recipient(b, "A" * 40 + "=="), "32 bytes"),
    _config_case("an X-Wing key whose X25519 half is all zeros", lambda b: _recipient(b, base64.b64encode(bytes(1216)).decode()), "small order"),
    _config_case("an X-Wing key whose ML-KEM half is not one", lambda b: _recipient(b, base64.b64encode(b"\xff" * 1184 + bytes(31) + b"\x09").decode()), "ML-KEM-768"),
    _config_case("protocol 1 with an X-Wing key", lambda b: b.config("protocol = 0", "protocol = 1"), "version 1 has only X25519"),
    _config_case("not valid TOML", lambda b: b.config("[camera]", "[camera"), "not valid TOML"),
    _config_case("an unknown key", lambda b: b.config("allow_swap = false", "allow_swop = false"), "not a known key"),
    _config_case("a config of 2 MiB", lambda b: b.config(append="#" * BIG + "\n"), "bytes"),
    _config_file("a config that is Latin-1", lambda b, t: write(t / "c.toml", b.config().encode() + b"# \xff\n"), "UTF-8"),
    _config_file("the config is /dev/zero", lambda b, t: link(t / "c.toml", "/dev/zero"), "character device"),
    _config_file("the config is a FIFO", lambda b, t: fifo(t / "c.toml"), "FIFO"),
    _config_file("the config is a folder", lambda b, t: (t / "c.toml").mkdir() or t / "c.toml", "folder"),
    _config_file("the config does not exist", lambda b, t: t / "none.toml", "does not exist"),
    _config_file("the config is a symbolic link to a config", lambda b, t: link(t / "c.toml", write(t / "real.toml", b.config())), "", code=0),
    _config_file("a config of 50 MB, sparse", lambda b, t: _sparse(t / "c.toml", 50_000_000), "bytes"),
    # key files: `palm keys show PATH`
    _key("a key that is /dev/zero", lambda b, t: link(t / "k.pem", "/dev/zero"), "symbolic link"),
    _key("a key that is a FIFO", lambda b, t: fifo(t / "k.pem"), "FIFO"),
    _key("a key that is a symbolic link to a key", lambda b, t: link(t / "k.pem", b.key), "symbolic link"),
    _key("a key of 1 MiB", lambda b, t: write(t / "k.pem", b"A" * (1 << 20), 0o600), "bytes"),
    _key("a key that is a folder", lambda b, t: (t / "k").mkdir(mode=0o700) or t / "k", "folder"),
    _key("a key readable by others", lambda b, t: write(t / "k.pem", b.key.read_bytes(), 0o644), "read by others"),
    _key("a key that is not PEM", lambda b, t: write(t / "k.pem", b"junk", 0o600), "not a PEM"),
    _key("a key that does not exist", lambda b, t: t / "none.pem", "does not exist"),
    # calibration folders: `palm calibrate from-frames DIR`
    _frames("manifest is /dev/zero", lambda f: ((f / "manifest.json").unlink(), link(f / "manifest.json", "/dev/zero")), "character device"),
    _frames("manifest is a FIFO", lambda f: ((f / "manifest.json").unlink(), fifo(f / "manifest.json")), "FIFO"),
    _frames("manifest nested 100000 deep", lambda f: write(f / "manifest.json", deep(100_000)), "nests"),
    _frames("manifest objects nested 100000 deep", lambda f: write(f / "manifest.json", '{"a":' * 100_000 + "1" + "}" * 100_000), "nests"),
    _frames("timestamp_ns of 5000 digits", lambda f: raw_manifest(f, '"timestamp_ns": ', '"timestamp_ns": ' + "1" * 5000 + ", \"x\": "), "number"),
    _frames("card_albedo NaN", lambda f: edit_manifest(f, lambda m: m["optics"].update(card_albedo=float("nan"))), "NaN"),
    _frames("card_albedo Infinity", lambda f: edit_manifest(f, lambda m: m["optics"].update(card_albedo=float("inf"))), "infinity"),
    _frames("card_albedo 1e999", lambda f: raw_manifest(f, '"card_albedo": ', '"card_albedo": 1e999, "x": '), "infinity"),
    _frames("focal_px -Infinity", lambda f: edit_manifest(f, lambda m: m["optics"].update(focal_px=float("-inf"))), "infinity"),
    _frames("a manifest of 2 MiB", lambda f: raw_manifest(f, '"frames"', '"pad": "' + "x" * BIG + '", "frames"'), "bytes"),
    _frames("leds of 500000 characters", lambda f: edit_manifest(f, lambda m: m["frames"][0].update(leds="x" * 500_000)), "characters)"),
    _frames("a manifest that is a list", lambda f: write(f / "manifest.json", "[]"), "frames must be a list"),
    _frames("a manifest that is not JSON", lambda f: write(f / "manifest.json", "{"), "not valid JSON"),
    _frames("dark.png is /dev/zero", lambda f: ((f / "dark.png").unlink(), link(f / "dark.png", "/dev/zero")), "character device"),
    _frames("dark.png is a FIFO", lambda f: ((f / "dark.png").unlink(), fifo(f / "dark.png")), "FIFO"),
    _frames("dark.png is 20000 x 20000", lambda f: write(f / "dark.png", huge_png()), "megapixels"),
    _frames("dark.png is not an image", lambda f: write(f / "dark.png", b"junk"), "not a PNG"),
    _frames("dark.png is a JPEG", lambda f: write(f / "dark.png", cv2.imencode(".jpg", np.zeros((480, 640), np.uint8))[1].tobytes()), "not a PNG image"),
    _frames("dark.png is a folder", lambda f: ((f / "dark.png").unlink(), (f / "dark.png").mkdir()), "folder"),
    # calibration files: `palm calibrate verify --simulate --file FILE`
    _calibration("the file is /dev/zero", lambda t: link(t / "cal.toml", "/dev/zero"), "character device"),
    _calibration("the file is a FIFO", lambda t: fifo(t / "cal.toml"), "FIFO"),
    _calibration("arrays nested 100000 deep", lambda t: write(t / "cal.toml", f"format = {deep(100_000)}\n"), "nests"),
    _calibration("an integer of 5000 digits", lambda t: write(t / "cal.toml", "format = " + "1" * 5000 + "\n"), "number"),
    _calibration("format = nan", lambda t: write(t / "cal.toml", "format = nan\n"), "NaN"),
    _calibration("a file of 17 MiB, sparse", lambda t: _sparse(t / "cal.toml", 17 << 20), "bytes"),
    _calibration("random bytes", lambda t: write(t / "cal.toml", bytes(range(256))), "UTF-8"),
    _calibration("a width of 500000 characters", lambda t: write(t / "cal.toml", f'format = 1\nwidth = "{"w" * 500_000}"\nheight = 1\n'), "characters)"),
    # palm check: a frame, a burst folder, a burst archive
    _check("the image is /dev/zero", lambda b, t: link(t / "x.png", "/dev/zero"), "character device"),
    _check("the image is a FIFO", lambda b, t: fifo(t / "x.png"), "FIFO"),
    _check("the image is 20000 x 20000", lambda b, t: write(t / "x.png", huge_png()), "megapixels"),
    _check("the image is a BMP of 30000 x 30000 by its header", lambda b, t: write(t / "x.bmp", b"BM" + bytes(16) + struct.pack("<ii", 30000, 30000) + bytes(100)), "megapixels"),
    _check("the image is a 2 GB sparse file", lambda b, t: _sparse(t / "x.png", 2_000_000_000), "bytes"),
    _check("the image is not an image", lambda b, t: write(t / "x.png", b"junk"), "not a PNG"),
    _check("the archive is /dev/zero", lambda b, t: link(t / "x.tar", "/dev/zero"), "character device"),
    _check("the archive is a 1 GB sparse file", lambda b, t: _sparse(t / "x.tar", 1_000_000_000), "bytes"),
    _check("the archive's manifest is sparse, 1 TiB", lambda b, t: sparse_manifest_tar(t / "x.tar"), "plain regular file"),
    _burst("the burst's manifest nested 100000 deep", lambda f: write(f / "manifest.json", deep(100_000)), "nests"),
    _burst("the burst's flood.png is /dev/zero", lambda f: ((f / "flood.png").unlink(), link(f / "flood.png", "/dev/zero")), "character device"),
    _burst("the burst's flood.png is 20000 x 20000", lambda f: write(f / "flood.png", huge_png()), "megapixels"),
    _burst("the burst's manifest is a FIFO", lambda f: ((f / "manifest.json").unlink(), fifo(f / "manifest.json")), "FIFO"),
    _burst("exposure_us 1e999", lambda f: raw_manifest(f, '"exposure_us": 2200', '"exposure_us": 1e999'), "infinity"),
    _burst("exposure_us a string", lambda f: raw_manifest(f, '"exposure_us": 2200', '"exposure_us": "abc"'), "exposure_us"),
    _burst("exposure_us of 5000 digits", lambda f: raw_manifest(f, '"exposure_us": 2200', '"exposure_us": ' + "2" * 5000), "number"),
    _burst("gain NaN", lambda f: raw_manifest(f, '"gain": 2.0', '"gain": NaN'), "NaN"),
    _burst("the flood roi a string", lambda f: edit_manifest(f, lambda m: [e.update(roi="x") for e in m["frames"]]), "roi"),
    _burst("a crop whose roi lies outside the frame", lambda f: _crops_at(f, [9000, 9000, 200, 200]), "roi"),
    _burst("a role with a slash", lambda f: edit_manifest(f, lambda m: m["frames"][0].update(role="../etc/passwd")), "role"),
    _burst("frames of two sizes", lambda f: write(f / "sector-0.png", cv2.imencode(".png", np.zeros((100, 100), np.uint8))[1].tobytes()), "size"),
    _burst("a manifest that is a list", lambda f: write(f / "manifest.json", "[1]"), "no list of frames"),
    # liveness models: `palm check --liveness FILE`
    _model("the model is /dev/zero", None, "character device", lambda t: link(t / "m.json", "/dev/zero")),
    _model("the model is a FIFO", None, "FIFO", lambda t: fifo(t / "m.json")),
    _model("a model nested 100000 deep", deep(100_000), "nests"),
    _model("a model that is a list", "[]", "no JSON object"),
    _model("a model whose threshold is NaN", '{"weights": {}, "bias": 0, "mean": {}, "scale": {}, "threshold": NaN}', "NaN"),
    _model("a model whose weights are strings", '{"weights": "x", "bias": 0, "mean": {}, "scale": {}, "threshold": 0.5}', "weights"),
    # palm eval --real DIR
    _eval("an image that is /dev/zero", lambda b, f: link(f / "001_l_940_02.png", "/dev/zero"), "character device"),
    _eval("an image that is a FIFO", lambda b, f: fifo(f / "001_l_940_02.png"), "FIFO"),
    _eval("an image of 20000 x 20000", lambda b, f: write(f / "001_l_940_02.png", huge_png()), "megapixels"),
]  # fmt: skip


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


# -- running a case ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int | None  # None: killed or timed out
    out: str

    def problems(self, case: Case) -> list[str]:
        """What is wrong with how a case ended, whatever the message's words."""
        found = []
        if self.code is None:
            found.append("did not end (time or memory limit)")
        elif self.code != case.code:
            found.append(f"exit {self.code}, expected {case.code}")
        if "Traceback" in self.out:
            found.append("a traceback")
        if any(len(line) > MAX_MESSAGE for line in self.out.splitlines()):
            found.append(f"a line of {max(len(line) for line in self.out.splitlines())} characters")
        return found


def run_in_process(args: list[str]) -> Outcome:
    from device import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(args)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:  # a traceback is what the test looks for
            import traceback

            traceback.print_exc()
            code = 1
    return Outcome(code, out.getvalue() + err.getvalue())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return make_base(tmp_path_factory.mktemp("inputs"))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}: {c.name}" for c in CASES])
def test_every_handed_over_file_is_named_and_bounded(case: Case, base: Base, tmp_path: Path) -> None:
    outcome = run_in_process(case.make(base, tmp_path))
    assert not outcome.problems(case), (outcome.problems(case), outcome.out[-2000:])
    assert case.says in outcome.out, outcome.out[-2000:]


def test_the_table_covers_every_kind_of_file_a_person_hands_over() -> None:
    kinds = {c.kind for c in CASES}
    assert kinds == {"config", "key", "frames", "calibration", "check", "model", "eval"}
    assert len({(c.kind, c.name) for c in CASES}) == len(CASES)


def test_image_headers_are_read_without_decoding() -> None:
    from device import inputs

    png = cv2.imencode(".png", np.zeros((30, 40), np.uint8))[1].tobytes()
    jpeg = cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))[1].tobytes()
    bmp = cv2.imencode(".bmp", np.zeros((30, 40), np.uint8))[1].tobytes()
    assert [inputs.image_size(d, "x") for d in (png, jpeg, bmp)] == [(40, 30)] * 3
    assert inputs.image_size(huge_png(20000, 20000)[:64], "x") == (20000, 20000)
    with pytest.raises(inputs.InputError, match="megapixels"):
        inputs.decode_image(huge_png(20000, 20000), what="x", flags=cv2.IMREAD_UNCHANGED)
    with pytest.raises(inputs.InputError, match="frame header"):
        inputs.image_size(b"\xff\xd8\xff\xe0\x00\x10JFIF", "x")


def test_a_value_quoted_in_a_message_is_cut() -> None:
    from device.inputs import cut

    assert cut("abc") == "'abc'"
    long = cut("x" * 50_000_000)
    assert len(long) < 100 and long.endswith("(50,000,000 characters)")
    assert cut(list(range(1000))).endswith("characters)") and len(cut(list(range(1000)))) < 100


def test_numbers_and_nesting_at_the_limits_are_accepted() -> None:
    from device import inputs

    ok = "[" * inputs.MAX_DEPTH + "]" * inputs.MAX_DEPTH
    assert inputs.load_json(ok, what="x") is not None
    assert inputs.load_toml(f"x = {ok}", what="x")
    assert inputs.load_json(json.dumps({"t": 1 << 62, "s": "[" * 1000}), what="x")["t"] == 1 << 62
    assert inputs.load_toml('s = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["  # [[[[[[[[[[[[', what="x")
    with pytest.raises(inputs.InputError, match="nests"):
        inputs.load_json("[" * (inputs.MAX_DEPTH + 1) + "]" * (inputs.MAX_DEPTH + 1), what="x")


# -- before and after ---------------------------------------------------------------------------------


def _run_child(tree: Path, args: list[str], timeout: float) -> Outcome:
    """One case in a process of its own, against the checkout in ``tree``, at most ``timeout`` s and
    3 GiB of address space."""
    import resource
    import subprocess

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    env = {**os.environ, "PYTHONPATH": str(tree)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "device", *args],
            capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=limit, cwd=tree,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return Outcome(None, "")
    return Outcome(proc.returncode if proc.returncode >= 0 else None, proc.stdout + proc.stderr)


def _before_and_after(tree: Path, timeout: float) -> None:
    import tempfile  # a test tool's scratch files, never the daemon's

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        base = make_base(root / "base")
        tally: dict[str, list[int]] = {}
        for i, case in enumerate(CASES):
            t = root / f"case-{i}"
            t.mkdir()
            problems = _run_child(tree, case.make(base, t), timeout).problems(case)
            row = tally.setdefault(case.kind, [0, 0])
            row[0] += 1
            row[1] += not problems
            if problems:
                print(f"  failed  {case.kind}: {case.name}: {'; '.join(problems)}")
        print(f"{'class':12s} tried handled failed   ({tree})")
        for kind, (tried, handled) in tally.items():
            print(f"{kind:12s} {tried:5d} {handled:7d} {tried - handled:6d}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout to run the cases against")
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()
    _before_and_after(a.tree.resolve(), a.timeout)


def test_an_unterminated_string_is_parsed_once_not_rescanned() -> None:
    """The review's case: a regex that removed strings before the depth scan restarted at every quote
    (64 kB of an unterminated string took 11 s). The parsers themselves read it once."""
    from device import inputs

    with pytest.raises(inputs.InputError, match="not valid JSON"):
        inputs.load_json('"' + '\\"' * 500_000, what="x")
    with pytest.raises(inputs.InputError, match="not valid TOML"):
        inputs.load_toml('x = "' + '\\"' * 300_000, what="x")
    with pytest.raises(inputs.InputError, match="integer of 16000 bits"):
        inputs.load_toml("x = 0x" + "f" * 4000, what="x")
    assert inputs.cut(int("f" * 4000, 16)) == "an integer of 16000 bits"
