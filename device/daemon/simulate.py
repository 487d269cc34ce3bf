"""``palm run --simulate``: the product on the simulated scanner, with shoppers and attacks.

Keys are made in memory for the run, the reference ingest listens on 127.0.0.1 in
this process (unless --endpoint names another). Time is simulated: the scene moves
only while the scanner waits (for frames, back-offs, the shopper), so a seed always
gives the same run; the timings printed are a stopwatch's (waits plus the real time
spent computing, not the time spent rendering frames).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device import __version__
from device.calibration.session import sim_calibration
from device.clock import CounterTime, SimulatedTime
from device.config import Config
from device.daemon.loop import Scan, Summary, loop_maker
from device.daemon.notify import Notifier
from device.daemon.process import harden
from device.daemon.service import Parts, Service
from device.daemon.status import StatusServer
from device.ingest.server import Ingest, IngestServer
from device.protocol.keys import load_device_key, new_recipient_key, recipient_public
from device.protocol.seal import Sealer
from device.sim.scanner import SimulatedScanner
from device.sim.scene import Scenario, shoppers
from device.till.link import SIM_TILL, TillLink, describe_device, simulated_till
from device.uplink.outbox import Outbox
from device.uplink.session import make_session
from device.uplink.uplink import Uplink
from device.vision.liveness import describe_model, load_model

LABEL = {"genuine": "bona_fide"}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    scans: int
    seed: int
    as_json: bool = False
    endpoint: str | None = None
    status_port: int | None = None
    camera_fault_at_s: float | None = None  # the camera stops delivering at this scene time...
    camera_fault_for_s: float = 3.0  # ...for this long
    reload: Callable[[], Config] | None = None
    on_scan: Callable[[Scan], None] = lambda scan: None  # after each answer (benchmarks watch here)
    quiet: bool = False  # no event lines, only the summary
    signals: bool = True  # SIGTERM, SIGINT and SIGHUP handled by the service (main thread only)
    #: called with the service and the simulated scanner before serving (tests reach in here)
    before_serving: Callable[[Service, SimulatedScanner, SimulatedTime], None] | None = None
    #: serve the till API on 127.0.0.1 (0: any free port) with a till of its own; armed mode
    till_port: int | None = None
    #: with a till: shoppers also arrive on their own (else each arming brings the next one)
    walk_ins: bool = False
    #: the simulated clock kept behind the wall clock (None: when a till is served, which runs on the wall's)
    paced: bool | None = None
    #: called with the till's link once its API listens (tests arm from here)
    on_till: Callable[[TillLink], None] | None = None


#: a shopper steps up this long after the till arms (the cashier asks, the hand comes)
STEP_UP_S = 1.0


def run_simulated(config: Config, opts: Options, *, out: IO[str] = sys.stdout) -> Summary:
    """Serve a scenario of shoppers and attacks on the simulated scanner; print events and a summary."""
    hardening = harden(allow_swap=True, lock=False)  # simulated frames: swap is no leak here
    log.info(hardening.describe())
    till = opts.till_port is not None
    on_call = till and not opts.walk_ins
    clock = SimulatedTime(paced=till if opts.paced is None else opts.paced)
    counter = CounterTime(clock)  # the uplink waits on a real server: its deadlines count real time
    start = clock.monotonic_ns()
    # More presentations than needed: the run stops after opts.scans answers.
    events = shoppers(opts.seed, 3 * opts.scans + 5, attack_share=0.3, interactive=True)
    scenario = Scenario(events, start_ns=start, on_call=on_call)
    if config.till is not None and not till:
        log.info("[till] is for the scanner: the simulated run serves a till of its own with --till-port")

    origin = [clock.stopwatch_ns()]  # the stopwatch reads 0 when serving begins
    writing = threading.Lock()  # the till's threads emit too

    def emit(event: dict[str, Any]) -> None:
        with writing:
            _emit(event)

    def _emit(event: dict[str, Any]) -> None:
        t = (clock.stopwatch_ns() - origin[0]) / 1e9
        if on_call and event["event"] == "checkout" and event.get("new"):
            scenario.call(clock.monotonic_ns(), STEP_UP_S)  # armed: the next shopper steps up
        scene, _ = scenario(clock.monotonic_ns())
        if event["event"] == "result":  # the shopper sees the light and takes the hand away
            scenario.answered(clock.monotonic_ns())
        if event["event"] == "guidance":  # ...or moves it as the light asks
            scenario.guided(clock.monotonic_ns(), event["reasons"])
        if event["event"] == "hand_seen":  # what the simulator put there, for the reader
            event = {**event, "scene": _kind(scenario, clock)}
        if opts.quiet:
            return
        if opts.as_json:
            out.write(json.dumps({"t_s": round(t, 3), **event}) + "\n")
        else:
            out.write(f"[{t:7.2f} s] {_describe(event, scene.kind if scene else None)}\n")
        out.flush()

    service: Service | None = None
    server = status = None
    link: TillLink | None = None
    endpoint = opts.endpoint
    if endpoint is None:
        device_key = Ed25519PrivateKey.generate()
        cloud = new_recipient_key(config.cloud.recipient.suite)[1]  # the configured key's suite
        server = IngestServer(
            Ingest(recipients=[cloud], devices={config.device.id: device_key.public_key()})
        ).start()
        endpoint = server.url
        recipient = recipient_public(cloud.public_raw)
    else:
        device_key = load_device_key(config.device.key_file)
        recipient = config.cloud.recipient
    try:
        sealer = Sealer(
            device_id=config.device.id,
            device_key=device_key,
            recipient=recipient,
            firmware=__version__,
            protocol=config.cloud.protocol,
            monotonic_ns=counter.monotonic_ns,
        )
        session = make_session(
            ca_bundle=config.cloud.ca_bundle,
            pin_sha256=config.cloud.pin_sha256,
            user_agent=f"palm-scanner/{__version__}",
        )
        uplink = Uplink(endpoint=endpoint, session=session, clock=counter, outbox=Outbox())
        cal = sim_calibration(config)  # the simulated scanner calibrated as a technician would
        log.info("calibrated the simulated scanner: %s", cal.id)
        model = load_model(config.calibration.liveness_file)
        log.info("liveness: %s", describe_model(model, config.calibration.liveness_file))
        if opts.till_port is not None:
            describe = describe_device(
                config,
                calibration_id=cal.id,
                suite=sealer.suite,
                state=lambda: service.metrics.state if service is not None else "starting",
            )
            link = simulated_till(
                port=opts.till_port,
                clock=clock,
                wall=time.time,
                device=describe,
                also=emit,
            ).start()
            ready = {
                "event": "till_ready",
                "port": link.port,
                "token": link.token,
                "fingerprint_sha256": link.fingerprint_sha256,
            }
            with writing:
                if opts.as_json:
                    out.write(json.dumps(ready) + "\n")
                else:
                    out.write(
                        f"till API on https://127.0.0.1:{link.port} for till {SIM_TILL}: token {link.token}, "
                        f"certificate SHA-256 {link.fingerprint_sha256}\n"
                    )
                out.flush()
            if opts.on_till is not None:
                opts.on_till(link)
        with SimulatedScanner(config=config, scenes=scenario, clock=clock) as scanner:
            log.info("camera: %s", scanner.camera.describe())
            make_loop = loop_maker(
                scanner=scanner,
                clock=clock,
                sealer=sealer,
                uplink=uplink,
                calibration=cal,
                model=model,
                emit=emit,
                kind_of_scene=lambda: _kind(scenario, clock),
                stopwatch=clock.stopwatch_ns,
                checkouts=link.checkouts if link is not None else None,
                armed_only=link is not None,
            )

            parts = Parts(
                camera=scanner.camera, ring=scanner.ring, indicator=scanner.indicator, uplink=uplink
            )
            service = Service(
                config=config,
                parts=parts,
                make_loop=make_loop,
                clock=clock,
                reload=opts.reload,
                on_scan=opts.on_scan,
                notifier=Notifier(),  # under systemd (or a test's stand-in) the same as the daemon
            )
            if opts.status_port is not None:
                status = StatusServer(service.metrics, opts.status_port).start()
                log.info("status on http://127.0.0.1:%d/metrics and /healthz", status.port)
            if opts.camera_fault_at_s is not None:
                _schedule_camera_fault(scanner, clock, opts.camera_fault_at_s, opts.camera_fault_for_s)
            if opts.before_serving is not None:
                opts.before_serving(service, scanner, clock)
            if opts.signals:
                service.install_signals()
            origin[0] = clock.stopwatch_ns()
            if on_call:  # the till drives: until its checkouts have ended, or a signal
                assert link is not None
                checkouts = link.checkouts
                service.serve(done=lambda: sum(checkouts.finished.values()) >= opts.scans)
            else:  # the scenario ends when its last shopper has gone: stop then, whatever the count
                service.serve(scans=opts.scans, until_ns=lambda: start + int((scenario.duration_s + 2) * 1e9))
        uplink.close()
    finally:
        if link is not None:
            link.stop()
        if status is not None:
            status.stop()
        if server is not None:
            server.stop()
    summary = service.summary
    summary.stopped_by = service.stopped_by
    result = summary.as_json()
    m = service.metrics
    # Every presentation the scenario made, answered or not (a phone's screen in a dark shop
    # is invisible at 850 nm and never gets a scan): nothing presented goes uncounted.
    result["presented"] = {LABEL.get(k, k): n for k, n in sorted(scenario.presented.items())}
    result["camera_restarts"] = m.camera_restarts
    result["outbox"] = {"depth": len(uplink.outbox), "dropped": dict(uplink.outbox.dropped)}
    if link is not None:  # every checkout a till armed, by how it ended
        summary.checkouts = dict(sorted(link.checkouts.finished.items()))
        result["checkouts"] = summary.checkouts
    if service.stopped_by:
        result["stopped_by"] = service.stopped_by
    if opts.as_json:
        out.write(json.dumps({"summary": result}) + "\n")
    else:
        out.write(_summary_text(result))
    out.flush()
    return summary


def _schedule_camera_fault(
    scanner: SimulatedScanner, clock: SimulatedTime, at_s: float, for_s: float
) -> None:
    faults = scanner.camera.faults

    def gone() -> None:
        faults.camera_gone = True
        clock.call_later(for_s, back)

    def back() -> None:
        faults.camera_gone = False

    clock.call_later(at_s, gone)


def _kind(scenario: Scenario, clock: SimulatedTime) -> str | None:
    scene, _ = scenario(clock.monotonic_ns())
    if scene is None or scene.kind == "empty":
        return None
    return "bona_fide" if scene.kind == "genuine" else scene.kind


def _describe(event: dict[str, Any], kind: str | None) -> str:
    e = event["event"]
    if e == "hand_seen":
        return f"hand seen ({'bona fide palm' if kind == 'genuine' else kind or 'unknown'})"
    if e == "hand_unarmed":
        return "a hand, and no checkout armed: not captured"
    if e == "checkout":
        why = f" ({', '.join(event['reasons'])})" if event["reasons"] else ""
        return f"checkout {event['checkout_id']} of {event['till']}: {event['state'].replace('_', ' ')}{why}"
    if e == "guidance":
        far = f" (the palm is about {event['distance_mm']} mm away)" if "distance_mm" in event else ""
        return "guidance: " + ", ".join(event["reasons"]) + far
    if e == "capture_accepted":
        return f"capture accepted, quality {event['quality']:.2f}"
    if e == "capture_rejected":
        return f"capture rejected ({', '.join(event['reasons'])}), quality {event['score']:.2f}"
    if e == "not_live":
        return f"not a live palm (liveness {event['score']}, {', '.join(event['reasons'])})"
    if e == "liveness_unsure":
        again = "taking the burst again" if event["retake"] else "asking the shopper to try again"
        return f"liveness cannot tell ({', '.join(event['reasons'])}): {again}"
    if e == "uploaded":
        said = f"; the cloud says {event['cloud_decision']}" if event.get("cloud_decision") else ""
        return (
            f"sealed and uploaded in {event['ms']} ms (HTTP {event['status']}, capture "
            f"{event['capture_id']}){said}"
        )
    if e == "upload_failed":
        return f"upload failed: {event['outcome']} ({event['error']})"
    if e == "left_unanswered":
        return f"the hand left before a capture, after {event['after_ms']} ms: no answer"
    if e == "false_trigger":
        return "nothing under the ring after all: learning the empty scene again"
    if e == "result":
        return f"result: {event['outcome'].replace('_', ' ')} after {event['end_to_end_ms']} ms"
    return json.dumps(event)


def _summary_text(s: dict[str, Any]) -> str:
    lines = [f"summary: {s['scans']} scans"]
    for kind in sorted(set(s["outcomes"]) | set(s.get("presented", {}))):
        counts = s["outcomes"].get(kind, {})
        answers = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no answer"
        lines.append(f"  {kind:18s} presented {s.get('presented', {}).get(kind, 0):3d}: {answers}")
    if "checkouts" in s:
        ended = ", ".join(f"{k} {v}" for k, v in s["checkouts"].items()) or "none"
        lines.append(f"  checkouts ended: {ended}")
    lines.append("  timing (ms)            median      p95")
    for stage, t in s["timing_ms"].items():
        lines.append(f"  {stage:20s} {t['median']:8.1f} {t['p95']:8.1f}")
    return "\n".join(lines) + "\n"
