"""``palm run --simulate``: the product on the simulated scanner, with shoppers and attacks.

Keys are made in memory for the run, the reference ingest listens on 127.0.0.1 in
this process (unless --endpoint names another), and time skips the waits: frames
and back-offs cost nothing, computing costs what it costs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device import __version__
from device.clock import SkippingClock
from device.config import Config
from device.daemon.loop import ScanLoop, Summary
from device.evaluation import sim_flat_field
from device.ingest.server import Ingest, IngestServer
from device.protocol.keys import load_device_key, recipient_public
from device.protocol.seal import Sealer
from device.sim.scanner import SimulatedScanner
from device.sim.scene import Scenario, shoppers
from device.uplink.outbox import Outbox
from device.uplink.session import make_session
from device.uplink.uplink import Uplink
from device.vision.liveness import default_model

LABEL = {"genuine": "bona_fide"}


def run_simulated(
    config: Config, *, scans: int, seed: int, as_json: bool, endpoint: str | None, out: IO[str] = sys.stdout
) -> Summary:
    clock = SkippingClock()
    start = clock.monotonic_ns()
    events = shoppers(seed, 2 * scans + 2, attack_share=0.3)  # more than enough: the run stops at N
    scenario = Scenario(events, start_ns=start)

    def emit(event: dict[str, Any]) -> None:
        t = (clock.monotonic_ns() - start) / 1e9
        scene, _ = scenario(clock.monotonic_ns())
        if as_json:
            out.write(json.dumps({"t_s": round(t, 3), **event}) + "\n")
        else:
            out.write(f"[{t:7.2f} s] {_describe(event, scene.kind if scene else None)}\n")
        out.flush()

    server = None
    if endpoint is None:
        device_key = Ed25519PrivateKey.generate()
        cloud = X25519PrivateKey.generate()
        server = IngestServer(
            Ingest(recipients=[cloud], devices={config.device.id: device_key.public_key()})
        ).start()
        endpoint = server.url
        recipient = cloud.public_key()
    else:
        device_key = load_device_key(config.device.key_file)
        recipient = recipient_public(config.cloud.recipient_public_bytes)
    try:
        sealer = Sealer(
            device_id=config.device.id,
            device_key=device_key,
            recipient=recipient,
            firmware=__version__,
            monotonic_ns=clock.monotonic_ns,
        )
        session = make_session(
            ca_bundle=config.cloud.ca_bundle,
            pin_sha256=config.cloud.pin_sha256,
            user_agent=f"palm-scanner/{__version__}",
        )
        uplink = Uplink(endpoint=endpoint, session=session, clock=clock, outbox=Outbox())
        flat = sim_flat_field(config)
        summary = Summary()
        with SimulatedScanner(config=config, scenes=scenario, clock=clock) as scanner:
            kind_now: Callable[[], str | None] = lambda: _kind(scenario, clock)  # noqa: E731
            loop = ScanLoop(
                config=config,
                camera=scanner.camera,
                ring=scanner.ring,
                indicator=scanner.indicator,
                clock=clock,
                sealer=sealer,
                uplink=uplink,
                flat=flat,
                model=default_model(),
                emit=emit,
                kind_of_scene=kind_now,
            )
            while len(summary.scans) < scans:
                if not loop.wait_for_hand(
                    give_up_s=max(5.0, scenario.duration_s - (clock.monotonic_ns() - start) / 1e9 + 2)
                ):
                    break
                scan = loop.scan()
                if scan.outcome != "left":
                    summary.scans.append(scan)
        uplink.close()
    finally:
        if server is not None:
            server.stop()
    result = summary.as_json()
    if as_json:
        out.write(json.dumps({"summary": result}) + "\n")
    else:
        out.write(_summary_text(result))
    return summary


def _kind(scenario: Scenario, clock: SkippingClock) -> str | None:
    scene, _ = scenario(clock.monotonic_ns())
    if scene is None or scene.kind == "empty":
        return None
    return "bona_fide" if scene.kind == "genuine" else scene.kind


def _describe(event: dict[str, Any], kind: str | None) -> str:
    e = event["event"]
    if e == "hand_seen":
        return f"hand seen ({'bona fide palm' if kind == 'genuine' else kind or 'unknown'})"
    if e == "guidance":
        return "guidance: " + ", ".join(event["reasons"])
    if e == "capture_accepted":
        return f"capture accepted, quality {event['quality']:.2f}"
    if e == "capture_rejected":
        return f"capture rejected ({', '.join(event['reasons'])}), quality {event['score']:.2f}"
    if e == "not_live":
        return f"not a live palm (liveness {event['score']}, {', '.join(event['reasons'])})"
    if e == "uploaded":
        return (
            f"sealed and uploaded in {event['ms']} ms (HTTP {event['status']}, capture {event['capture_id']})"
        )
    if e == "upload_failed":
        return f"upload failed: {event['outcome']} ({event['error']})"
    if e == "result":
        return f"result: {event['outcome'].replace('_', ' ')} after {event['end_to_end_ms']} ms"
    return json.dumps(event)


def _summary_text(s: dict[str, Any]) -> str:
    lines = [f"summary: {s['scans']} scans"]
    for kind, counts in s["outcomes"].items():
        lines.append(f"  {kind:18s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    lines.append("  timing (ms)            median      p95")
    for stage, t in s["timing_ms"].items():
        lines.append(f"  {stage:20s} {t['median']:8.1f} {t['p95']:8.1f}")
    return "\n".join(lines) + "\n"
