"""``palm send-test``: the installer's check that keys, certificates and the network are right.

It seals a synthetic capture from the simulator (synthetic, not biometric, and
marked ``"test": true`` in ``checks``) exactly as the daemon seals a real one,
and sends it to the configured endpoint.
"""

from __future__ import annotations

import numpy as np

from device import __version__
from device.clock import MonotonicClock
from device.config import Config
from device.hardware import patterns
from device.protocol.archive import CaptureFrame
from device.protocol.keys import load_device_key
from device.protocol.seal import SealedCapture, Sealer
from device.sim.scene import make_scene
from device.sim.sheet import render_burst
from device.uplink.outbox import Outbox
from device.uplink.session import make_session
from device.uplink.uplink import Delivery, RetryPolicy, Uplink

CROP = 320


def synthetic_frames(config: Config, seed: int = 1) -> list[CaptureFrame]:
    """A simulated palm's burst, cropped to the centre of the frame."""
    names = patterns.all_patterns(len(config.leds.sector_pins))
    frames = render_burst(
        config, make_scene("genuine", seed, motion="still"), names, exposure_us=3000, gain=2.0
    )
    out = []
    for f in frames:
        h, w = f.pixels.shape
        x, y = (w - CROP) // 2, (h - CROP) // 2
        crop = np.ascontiguousarray(f.pixels[y : y + CROP, x : x + CROP])
        out.append(
            CaptureFrame(
                role=f.leds or "",
                pixels=crop,
                roi=(x, y, CROP, CROP),
                exposure_us=f.exposure_us,
                gain=f.gain,
                leds=patterns.manifest_leds(f.leds or ""),
                timestamp_ns=f.timestamp_ns,
            )
        )
        f.wipe()
    return out


def sealer_for(config: Config) -> Sealer:
    return Sealer(
        device_id=config.device.id,
        device_key=load_device_key(config.device.key_file),
        recipient=config.cloud.recipient,
        firmware=__version__,
        protocol=config.cloud.protocol,
    )


def send_test(
    config: Config,
    *,
    policy: RetryPolicy | None = None,
    sealer: Sealer | None = None,
    endpoint: str | None = None,
    wait_s: float = 30.0,
) -> tuple[SealedCapture, Delivery]:
    """Seal a synthetic capture and send it: with the config's key to its endpoint, unless a
    ``sealer`` (keys made in memory) and an ``endpoint`` are given (the simulated scanner)."""
    sealer = sealer or sealer_for(config)  # the key file is checked before anything is rendered
    capture = sealer.seal(synthetic_frames(config), checks={"test": True}, calibration=None)
    session = make_session(
        ca_bundle=config.cloud.ca_bundle,
        pin_sha256=config.cloud.pin_sha256,
        user_agent=f"palm-scanner/{__version__}",
    )
    uplink = Uplink(
        endpoint=endpoint or config.cloud.endpoint,
        session=session,
        clock=MonotonicClock(),
        outbox=Outbox(),
        policy=policy,
    )
    try:
        return capture, uplink.deliver(capture, wait_s=wait_s)
    finally:
        uplink.close()


def describe(capture: SealedCapture, d: Delivery, endpoint: str) -> str:
    """One line: what became of the test capture."""
    # a scanner would keep retrying a pending capture; the test has stopped waiting for it
    outcome = (
        "not delivered, still retrying when the test stopped waiting" if d.outcome == "pending" else d.outcome
    )
    line = f"{outcome}: capture {capture.capture_id} to {endpoint}"
    if d.status is not None:
        line += f", HTTP {d.status}"
    if d.error:
        line += f", {d.error}" + (f" ({d.detail})" if d.detail else "")
    return line + f", {d.attempts} attempt{'s' if d.attempts != 1 else ''} in {d.elapsed_ms:.0f} ms"
