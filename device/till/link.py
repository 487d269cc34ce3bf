"""The till's side of a running scanner: its checkouts, the API serving them, and their log lines.

The scan loop reads the checkout armed now and moves it on (device.daemon.loop); the API's
threads arm and cancel; every change goes to the till's event streams and, when it ends, to a
JSON log line naming the till. On the scanner the tills and the TLS key are in ``[till]
state_dir``; the simulated scanner makes a till and a key of its own in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device import __version__
from device.clock import Clock
from device.config import Config, TillConfig
from device.till.api import TillAPI
from device.till.checkouts import Checkouts
from device.till.tills import MemoryTills, TillError, Tills, memory_context, server_context, tls_files

log = logging.getLogger(__name__)

SIM_TILL = "sim-till"


@dataclass
class TillLink:
    checkouts: Checkouts
    api: TillAPI
    fingerprint_sha256: str
    token: str | None = None  # the simulated scanner's own till only

    @property
    def port(self) -> int:
        return self.api.port

    def start(self) -> TillLink:
        self.api.start()
        return self

    def stop(self, reason: str = "the scanner stopped") -> None:
        """End the checkout under way (failed: the till must not wait for it), close the API."""
        self.checkouts.end_current("failed", reason)
        self.api.stop()


def describe_device(
    config: Config, *, calibration_id: str | None, suite: str, state: Callable[[], str]
) -> Callable[[Checkouts], dict[str, Any]]:
    """What ``GET /v1/device`` answers, given the checkouts; ``state``: the service's (serving,
    fault, ...)."""

    def describe(checkouts: Checkouts) -> dict[str, Any]:
        state_now = state()
        if state_now in ("fault", "stopped"):
            status = "fault"
        elif state_now == "starting" or checkouts.current() is not None:
            status = "busy"  # no frame from the camera yet, or a checkout under way
        else:
            status = "ready"
        return {
            "id": config.device.id,
            "firmware": __version__,
            "calibration": calibration_id,
            "protocol": config.cloud.protocol or 2,  # an armed scan: 2 unless pinned (1 cannot carry it)
            "suite": suite,
            "status": status,
        }

    return describe


def _wire(
    *,
    clock: Clock,
    wall: Callable[[], float],
    device: Callable[[Checkouts], dict[str, Any]],
    tills: Tills | MemoryTills,
    tls: Any,
    host: str,
    port: int,
    also: Callable[[dict[str, Any]], None],
) -> tuple[Checkouts, TillAPI]:
    api: TillAPI | None = None

    def emit(event: dict[str, Any]) -> None:
        if api is not None:
            api.publish(event)
        if event.get("state") in ("accepted", "not_accepted", "timed_out", "cancelled", "failed"):
            log.info(
                "checkout ended",
                extra={
                    "till": event["till"],
                    "checkout_id": event["checkout_id"],
                    "state": event["state"],
                    "capture_id": event["capture_id"],
                    "reasons": event["reasons"],
                },  # the cloud's result is the till's: not in the scanner's log
            )
        also(event)

    checkouts = Checkouts(clock=clock, wall=wall, emit=emit)
    api = TillAPI(
        checkouts=checkouts,
        tills=tills,
        device=lambda: device(checkouts),
        tls=tls,
        host=host,
        port=port,
    )
    return checkouts, api


def open_till(
    config: TillConfig,
    *,
    clock: Clock,
    wall: Callable[[], float],
    device: Callable[[Checkouts], dict[str, Any]],
    also: Callable[[dict[str, Any]], None] = lambda event: None,
) -> TillLink:
    """The scanner's till API from ``[till]``: tills and the TLS key from ``state_dir`` (the key and
    certificate made on the first start, for the listen address)."""
    host, port = config.address
    named = host if host not in ("0.0.0.0", "::") else "127.0.0.1"  # an address the till can pin
    key, cert, fingerprint = tls_files(config.state_dir, [named])
    tills = Tills(config.state_dir)
    if not tills.names():
        log.warning(
            "no till can arm this scanner yet: add one with `palm till add NAME --state-dir %s`",
            config.state_dir,
        )
    try:
        checkouts, api = _wire(
            clock=clock,
            wall=wall,
            device=device,
            tills=tills,
            tls=server_context(cert, key),
            host=host,
            port=port,
            also=also,
        )
    except OSError as exc:
        raise TillError(
            f"[till] listen = {config.listen!r}: cannot listen there ({exc.strerror}); use an address "
            "of this scanner and a free port"
        ) from None
    return TillLink(checkouts, api, fingerprint)


def simulated_till(
    *,
    port: int,
    clock: Clock,
    wall: Callable[[], float],
    device: Callable[[Checkouts], dict[str, Any]],
    also: Callable[[dict[str, Any]], None] = lambda event: None,
) -> TillLink:
    """The simulated scanner's API on 127.0.0.1:``port`` with one till of its own; the token and
    the TLS key live in this process's memory only."""
    tills = MemoryTills()
    token = tills.add(SIM_TILL)
    tls, fingerprint = memory_context(["127.0.0.1"])
    checkouts, api = _wire(
        clock=clock, wall=wall, device=device, tills=tills, tls=tls, host="127.0.0.1", port=port, also=also
    )
    return TillLink(checkouts, api, fingerprint, token)
