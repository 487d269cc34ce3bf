"""The service around the scan loop: readiness, watchdog, signals, faults, status and shutdown.

The same code serves shoppers on a scanner under systemd and on the simulated
scanner: what differs comes in through the constructor.

- READY=1 goes to systemd once the camera has delivered a frame; WATCHDOG=1
  before every frame the loop asks for (a wedged loop stops pinging and systemd
  restarts the service).
- SIGTERM (and SIGINT): the scan in progress ends at its next frame (or once the
  burst or upload under way is done), the ring goes dark, sealed captures still
  waiting get a short deadline to upload, every frame still held is zeroed, and the
  process exits 0.
- SIGHUP: the config file is read again; a bad one is refused with the reason and
  the running config kept.
- The camera failing: a fault on the indicator and /healthz, then reopened with
  back-off until it delivers again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from device.clock import Clock
from device.config import Config
from device.daemon.loop import LIGHTS, Scan, ScanLoop, Summary
from device.daemon.notify import Notifier
from device.daemon.process import trim_heap
from device.daemon.status import Metrics
from device.errors import CameraError, ConfigError
from device.hardware.camera import Camera
from device.hardware.indicator import Indicator
from device.hardware.ring import LedRing
from device.uplink.uplink import Uplink

log = logging.getLogger(__name__)

#: how long the idle loop watches before it looks after the outbox and the config
IDLE_SLICE_S = 1.0
#: time given to captures still waiting in the outbox when the service stops
SHUTDOWN_UPLOAD_S = 2.0
#: camera reopening back-off: first wait, factor, longest wait (seconds)
BACKOFF = (0.5, 2.0, 30.0)


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised at the next frame once the service has been asked to stop."""


@dataclass
class Parts:
    camera: Camera
    ring: LedRing
    indicator: Indicator
    uplink: Uplink


class Service:
    def __init__(
        self,
        *,
        config: Config,
        parts: Parts,
        make_loop: Callable[[Config, Callable[[], None]], ScanLoop],
        clock: Clock,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        reload: Callable[[], Config] | None = None,
        on_scan: Callable[[Scan], None] = lambda scan: None,
    ) -> None:
        self.config = config
        self.parts = parts
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.metrics.watch_upload(parts.uplink.overdue_s)
        self.notifier = notifier or Notifier({})
        self._reload = reload
        self._on_scan = on_scan
        self.loop = make_loop(config, self._tick)
        self.summary = Summary()
        self._stop = threading.Event()
        self._hup = threading.Event()
        self._last_ping_ns = 0
        self._ready = False
        self.stopped_by: str | None = None

    # -- signals -----------------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here: the handler runs between two bytecodes of the main thread, which may
        # hold the ring's lock. The loop stops at its next frame (or after the burst or upload
        # under way) and the shutdown darkens the ring.
        if signum == signal.SIGHUP:
            self._hup.set()
        else:
            self.stopped_by = signal.Signals(signum).name
            self._stop.set()

    def request_stop(self, why: str = "asked") -> None:
        self.stopped_by = why
        self._stop.set()

    # -- the loop ------------------------------------------------------------------------------

    def _tick(self) -> None:
        if self._stop.is_set():
            raise StopRequested
        interval = self.notifier.watchdog_interval_s
        now = self.clock.monotonic_ns()
        if interval is not None and now - self._last_ping_ns >= interval * 1e9 / 2:
            self.notifier.watchdog()
            self._last_ping_ns = now

    def serve(
        self,
        *,
        scans: int | None = None,
        until_ns: Callable[[], int | None] | None = None,
        done: Callable[[], bool] = lambda: False,
    ) -> Summary:
        """Serve shoppers until stopped, ``scans`` scans are done, the clock passes ``until_ns()``,
        or ``done()`` (a simulated run's checkouts have all ended)."""
        try:
            self._start_camera()
            while not self._stop.is_set():
                if self._hup.is_set():
                    self._hup.clear()
                    self.reload()
                limit = until_ns() if until_ns is not None else None
                if (limit is not None and self.clock.monotonic_ns() > limit) or done():
                    break
                try:
                    if not self.loop.wait_for_hand(give_up_s=IDLE_SLICE_S):
                        self._look_after_outbox()
                        continue
                    scan = self.loop.scan()
                except CameraError as e:
                    self.loop.wipe_held()
                    self.loop.abandon("camera_fault")
                    self._recover(e)
                    continue
                self._look_after_outbox()
                if scan.outcome == "left":
                    continue
                self.summary.add(scan)
                self.metrics.scan(scan.outcome, scan.reasons)
                if "uploading" in scan.stages_ms:  # sealed and sent: delivered, or why not
                    why = "accepted" if scan.outcome == "accepted" else (scan.reasons or ["failed"])[0]
                    self.metrics.upload(why, scan.stages_ms["uploading"] / 1000)
                trim_heap()
                self._on_scan(scan)
                if scans is not None and self.summary.count >= scans:
                    break
        except StopRequested:
            log.info("stopping", extra={"signal": self.stopped_by})
        finally:
            self._shutdown()
        return self.summary

    def _start_camera(self) -> None:
        """The first frame, then READY: systemd counts the service up only once frames arrive."""
        while True:
            try:
                self._tick()
                self.parts.camera.preview()
                break
            except CameraError as e:
                self._recover(e)
                return
        self._became_ready()

    def _became_ready(self) -> None:
        self.metrics.set(state="serving", fault=None)
        if not self._ready:
            self._ready = True
            self.notifier.ready("serving shoppers")
            log.info("ready: the camera delivers frames")
        else:
            self.notifier.status("serving shoppers")

    def _recover(self, error: CameraError) -> None:
        """Show the fault; reopen the camera with back-off until a frame arrives (or a stop)."""
        fault = f"camera: {error}"
        log.error("camera fault; reopening it", extra={"fault": str(error)})
        self.metrics.set(state="fault", fault=fault)
        self.notifier.status(f"fault: {fault}")
        self.parts.ring.off()
        self.parts.indicator.show(**LIGHTS["fault"])
        wait, factor, longest = BACKOFF
        while True:
            with contextlib.suppress(CameraError):
                self.parts.camera.close()
            self._sleep(wait)
            try:
                self.parts.camera.start()
                self.parts.camera.preview()
            except CameraError as e:
                log.warning("camera still failing", extra={"fault": str(e), "next_try_s": wait * factor})
                wait = min(wait * factor, longest)
                continue
            self.metrics.camera_restarted()
            log.info("camera back", extra={"restarts": self.metrics.camera_restarts})
            self.parts.indicator.show(**LIGHTS["idle"])
            self._became_ready()
            return

    def _sleep(self, seconds: float) -> None:
        """Sleep in slices, pinging the watchdog and stopping when asked."""
        end = self.clock.monotonic_ns() + int(seconds * 1e9)
        while (left := end - self.clock.monotonic_ns()) > 0:
            self._tick()
            self.clock.sleep(min(left / 1e9, 0.5))

    def _look_after_outbox(self) -> None:
        uplink = self.parts.uplink
        if len(uplink.outbox):
            for d in uplink.flush(budget_s=0.5):
                self.metrics.upload(d.outcome, d.elapsed_ms / 1000)
        self.metrics.set(outbox_depth=len(uplink.outbox), outbox_dropped=uplink.outbox.dropped.copy())

    # -- reload and shutdown -------------------------------------------------------------------

    def reload(self) -> None:
        if self._reload is None:
            log.warning("SIGHUP: this service has no config file to read again")
            return
        try:
            new = self._reload()
        except ConfigError as e:
            log.error("config refused; the running config is kept", extra={"reason": str(e)})
            return
        changed = _changed_keys(self.config, new)
        later = sorted(k for k in changed if k not in LIVE_KEYS)
        self.config = new
        self.loop.reconfigure(new)
        log.info(
            "config reloaded",
            extra={"applied": sorted(k for k in changed if k in LIVE_KEYS), "after_restart": later},
        )

    def _shutdown(self) -> None:
        parts = self.parts
        self.notifier.stopping()
        for step in (parts.ring.off, parts.indicator.show):
            try:
                step()
            except Exception as e:
                log.warning("shutdown step failed", extra={"error": str(e)})
        self.loop.wipe_held()
        pending = len(parts.uplink.outbox)
        if pending:
            done = parts.uplink.flush(budget_s=SHUTDOWN_UPLOAD_S)
            for d in done:
                self.metrics.upload(d.outcome, d.elapsed_ms / 1000)
            left = len(parts.uplink.outbox)
            if left:
                log.warning(
                    "captures not delivered before stopping: dropped",
                    extra={"count": left, "delivered": sum(d.delivered for d in done)},
                )
        self.metrics.set(state="stopped", outbox_depth=len(parts.uplink.outbox))


#: config keys the running service takes on SIGHUP; the others need a restart (new hardware,
#: keys or cloud connection): the log names them
LIVE_KEYS = frozenset(
    {
        "leds.idle_level",
        "camera.exposure_min_us",
        "camera.exposure_max_us",
        "camera.gain_min",
        "camera.gain_max",
    }
)


def _changed_keys(old: Config, new: Config) -> list[str]:
    out = []
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        a, b = getattr(old, section.name), getattr(new, section.name)
        if a is None or b is None:  # an optional section ([till]) added or removed
            if a != b:
                out.append(section.name)
            continue
        for key in dataclasses.fields(a):
            if getattr(a, key.name) != getattr(b, key.name):
                out.append(f"{section.name}.{key.name}")
    return out
