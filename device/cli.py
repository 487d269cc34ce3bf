"""The ``palm`` command: parses arguments and calls one function per subcommand.

Errors a user can cause (a bad config, a missing file, a wrong argument) are
turned into one line on stderr and an exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from device import __version__
from device.config import Config, defaults_for_simulation, load_config
from device.errors import OutputError, ScannerError, UsageError

EX_UNAVAILABLE = 69  # sysexits.h: the service is not available

Handler = Callable[[argparse.Namespace], int]


def _config_for(args: argparse.Namespace) -> Config:
    if getattr(args, "config", None):
        return load_config(args.config)
    return defaults_for_simulation()


def _write_png(path: str, image: np.ndarray) -> None:
    import cv2  # the simulator's pictures are synthetic; the daemon never calls this

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OutputError(f"cannot encode {path!r} as PNG")
    try:
        Path(path).write_bytes(buf.tobytes())
    except OSError as exc:
        raise OutputError(f"cannot write {path!r}: {exc.strerror}") from None


def cmd_sim(args: argparse.Namespace) -> int:
    from device.hardware import patterns
    from device.sim.scene import SCENE_KINDS, make_scene
    from device.sim.sheet import contact_sheet, render_burst

    config = _config_for(args)
    n = len(config.leds.sector_pins)
    if args.contact_sheet:
        scenes = [make_scene(kind, args.seed, condition=args.condition) for kind in SCENE_KINDS]
        sheet = contact_sheet(config, scenes, exposure_us=args.exposure_us, gain=args.gain)
        _write_png(args.contact_sheet, sheet)
        print(
            f"wrote {args.contact_sheet}: {len(scenes)} scenes x {n + 2} LED patterns "
            f"({sheet.shape[1]}x{sheet.shape[0]}, exposure {args.exposure_us} us, gain {args.gain:g})"
        )
        return 0
    if not args.out:
        raise UsageError("palm sim needs --out FILE.png (one frame) or --contact-sheet FILE.png")
    try:
        patterns.levels(args.pattern, n)
        scene = make_scene(
            args.scene, args.seed, condition=args.condition, distance_mm=args.distance_mm, motion=args.motion
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    (frame,) = render_burst(config, scene, (args.pattern,), exposure_us=args.exposure_us, gain=args.gain)
    _write_png(args.out, frame.pixels)
    print(
        f"wrote {args.out}: scene {scene.kind} seed {args.seed} ({scene.condition} light), "
        f"pattern {args.pattern}, {frame.width}x{frame.height}, mean grey "
        f"{float(frame.pixels.mean()):.1f}"
    )
    return 0


def _not_yet(name: str, issue: int) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        print(f"palm {name}: not available in this version yet (planned in issue #{issue})", file=sys.stderr)
        return EX_UNAVAILABLE

    return handler


def build_parser() -> argparse.ArgumentParser:
    from device.sim.scene import SCENE_KINDS

    parser = argparse.ArgumentParser(
        prog="palm",
        description="Open firmware for NIR palm scanners: run the scanner, simulate it, "
        "manage its keys, check and evaluate captures, calibrate it.",
    )
    parser.add_argument("--version", action="version", version=f"palm-scanner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sim = sub.add_parser(
        "sim",
        help="render frames of the simulated scanner to PNG files",
        description="Render what the simulated scanner's camera sees, through the real LED ring "
        "driver on mock pins, for a person to look at. The output is synthetic, not biometric.",
    )
    sim.add_argument("--scene", default="genuine", choices=SCENE_KINDS, help="what is held over the scanner")
    sim.add_argument("--seed", type=int, default=1, help="scene seed: the same seed, the same scene")
    sim.add_argument(
        "--pattern", default="flood", help="LED pattern: ambient, flood or sector-K (default flood)"
    )
    sim.add_argument("--out", metavar="FILE.png", help="write one frame here")
    sim.add_argument(
        "--contact-sheet", metavar="FILE.png", help="write every scene under every pattern here instead"
    )
    sim.add_argument(
        "--condition",
        choices=("dark", "shop", "bright", "sunlit"),
        default="shop",
        help="ambient NIR light (default shop)",
    )
    sim.add_argument("--distance-mm", type=float, default=None, help="hold the object this far away")
    sim.add_argument("--motion", choices=("still", "hover", "approach", "fast"), default="hover")
    sim.add_argument("--exposure-us", type=int, default=3000, help="exposure (default 3000)")
    sim.add_argument("--gain", type=float, default=2.0, help="analogue gain (default 2.0)")
    sim.add_argument("--config", metavar="FILE", help="take camera, ring and optics from this config")
    sim.set_defaults(handler=cmd_sim)

    skeleton = [
        ("run", 5, "serve shoppers: the scanner daemon (--simulate: on the simulated scanner)"),
        ("keys", 3, "create and show the device key and a development recipient key"),
        ("check", 4, "judge image files or bursts: quality, liveness, reasons"),
        ("eval", 4, "measure BPCER and APCER on fresh simulated scenes"),
        ("calibrate", 6, "calibrate the scanner with a grey card and targets"),
        ("ingest", 3, "the reference ingest service, for development and tests"),
    ]
    for name, issue, text in skeleton:
        p = sub.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. Not available in this version yet (issue #{issue}).",
        )
        p.set_defaults(handler=_not_yet(name, issue))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ScannerError as exc:
        print(f"palm {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
