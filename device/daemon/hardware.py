"""``palm run``: the daemon on the scanner's own camera, LED ring and indicator.

Everything the simulated run wires, from the config instead: the device key, the
cloud's recipient key and endpoint, the calibration file (flat fields for liveness,
its id sealed into every capture), the real scanner. Refuses to start, with one line
saying what to do, when any of them is missing or wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from device import __version__
from device.calibration import calfile
from device.clock import Clock
from device.config import Config
from device.daemon.loop import Summary, loop_maker
from device.daemon.notify import Notifier
from device.daemon.process import harden
from device.daemon.service import Parts, Service
from device.daemon.status import StatusServer
from device.protocol.keys import load_device_key
from device.protocol.seal import Sealer
from device.selftest import describe_calibration
from device.till.link import TillLink, describe_device, open_till
from device.uplink.outbox import Outbox
from device.uplink.session import make_session
from device.uplink.uplink import Uplink
from device.vision.liveness import describe_model, load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    scans: int | None = None  # None: serve until stopped
    status_port: int | None = None
    reload: Callable[[], Config] | None = None
    signals: bool = True
    lock_memory: bool = True
    #: the scanner's parts (tests give gpiozero's mock pins and a stand-in camera here)
    open_scanner: Callable[[Config], AbstractContextManager[Any]] | None = None
    #: called with the service and the status port before serving (tests stop it from another thread)
    before_serving: Callable[[Service, int | None], None] | None = None


def run_on_hardware(config: Config, opts: Options) -> Summary:
    cal = calfile.load(config.calibration.file)
    try:
        log.info("calibration: %s", describe_calibration(cal, config, ("flat", "exposure")))
    except LookupError as e:
        raise calfile.CalibrationError(str(e)) from None
    hardening = harden(allow_swap=config.device.allow_swap, lock=opts.lock_memory)
    log.info(hardening.describe())
    device_key = load_device_key(config.device.key_file)
    recipient = config.cloud.recipient
    model = load_model(config.calibration.liveness_file)
    log.info("liveness: %s", describe_model(model, config.calibration.liveness_file))
    if opts.open_scanner is None:
        from device.hardware.scanner import RealScanner

        open_scanner: Callable[[Config], AbstractContextManager[Any]] = RealScanner
    else:
        open_scanner = opts.open_scanner
    session = make_session(
        ca_bundle=config.cloud.ca_bundle,
        pin_sha256=config.cloud.pin_sha256,
        user_agent=f"palm-scanner/{__version__}",
    )
    status = None
    link: TillLink | None = None
    with open_scanner(config) as scanner:
        log.info("camera: %s", scanner.camera.describe())
        clock: Clock = scanner.clock
        sealer = Sealer(
            device_id=config.device.id,
            device_key=device_key,
            recipient=recipient,
            firmware=__version__,
            protocol=config.cloud.protocol,
            monotonic_ns=clock.monotonic_ns,
        )
        uplink = Uplink(endpoint=config.cloud.endpoint, session=session, clock=clock, outbox=Outbox())
        service: Service | None = None
        if config.till is not None:
            describe = describe_device(
                config,
                calibration_id=cal.id,
                suite=sealer.suite,
                state=lambda: service.metrics.state if service is not None else "starting",
            )
            link = open_till(
                config.till,
                clock=clock,
                wall=time.time,
                device=describe,
            )

        make_loop = loop_maker(
            scanner=scanner,
            clock=clock,
            sealer=sealer,
            uplink=uplink,
            calibration=cal,
            model=model,
            emit=lambda event: log.info("%s", event["event"], extra={"fields": event}),
            checkouts=link.checkouts if link is not None else None,
            armed_only=config.armed_only,
        )
        parts = Parts(camera=scanner.camera, ring=scanner.ring, indicator=scanner.indicator, uplink=uplink)
        service = Service(
            config=config,
            parts=parts,
            make_loop=make_loop,
            clock=clock,
            reload=opts.reload,
            notifier=Notifier(),
        )
        try:
            if opts.status_port is not None:
                status = StatusServer(service.metrics, opts.status_port).start()
                log.info("status on http://127.0.0.1:%d/metrics and /healthz", status.port)
            if link is not None:
                link.start()
                log.info(
                    "till API on https://%s:%d (%s mode); certificate SHA-256 %s",
                    *config.till.address,  # type: ignore[union-attr]
                    config.till.mode,  # type: ignore[union-attr]
                    link.fingerprint_sha256,
                )
            if opts.signals:
                service.install_signals()
            if opts.before_serving is not None:
                opts.before_serving(service, status.port if status is not None else None)
            service.serve(scans=opts.scans)
        finally:
            if link is not None:
                link.stop()
            if status is not None:
                status.stop()
            uplink.close()
    return service.summary
