"""The scan loop: from a hand over the scanner to an answer for the shopper.

States: idle (ring glowing dim, watching the presence stream), guiding, capturing
(metering and bursts, best by quality), checking (liveness), sealing, uploading,
showing the result, waiting for the hand to leave. Every state has a time limit.
Parts come in through the constructor; time comes from the injected clock.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from device.calibration.calfile import Calibration
from device.calibration.flatfield import FlatField
from device.capture import Settings, meter, take
from device.clock import Clock
from device.config import Config
from device.hardware import patterns
from device.hardware.camera import Camera
from device.hardware.indicator import Indicator
from device.hardware.ring import LedRing
from device.protocol.archive import CaptureFrame
from device.protocol.seal import Sealer
from device.till.checkouts import Checkout, Checkouts
from device.uplink.uplink import Uplink
from device.vision import liveness as L
from device.vision import presence
from device.vision import reasons as R
from device.vision.pipeline import Verdict, analyse_burst
from device.vision.quality import Quality, view_scale

GUIDE_TIMEOUT_S = 8.0
LEAVE_TIMEOUT_S = 6.0
SHOW_RESULT_S = 1.2
UPLOAD_WAIT_S = 3.0
MAX_BURSTS = 3
#: a liveness "can't tell" (device.vision.liveness.TRY_AGAIN) takes the burst again this many times
LIVENESS_RETAKES = 1
#: an adult palm's inscribed radius (widths of 76-89 mm); a distance from it is good to about 10 %
PALM_RADIUS_MM = 40.0
#: quality reasons a shopper can fix while the scan goes on
GUIDANCE = frozenset(
    {R.TOO_FAR, R.TOO_CLOSE, R.OFF_CENTRE, R.PARTIAL_HAND, R.HOLD_STILL, R.OPEN_HAND, R.OUT_OF_FOCUS}
)
STEADY_FRAMES = 2
#: guidance that still holds is said (and shown) again this often
GUIDANCE_REPEAT_S = 1.0
#: the presence stream's exposure: a hand 15 cm away in the dim glow stands out in a dark shop
IDLE = Settings(exposure_us=6000, gain=2.0)

#: what the three lights show: outcomes, and for guidance the first reason (amber blinks; the
#: second light says which way). The README has the table for the shop's staff.
LIGHTS: dict[str, dict[str, Any]] = {
    "idle": {},
    "working": {"green": "slow"},
    "accepted": {"green": "on"},
    "try_again": {"amber": "on"},
    "not_accepted": {"red": "on"},
    "fault": {"red": "fast"},
    R.TOO_FAR: {"amber": "slow"},
    R.TOO_CLOSE: {"amber": "fast"},
    R.HOLD_STILL: {"amber": "slow", "green": "slow"},
    R.OPEN_HAND: {"amber": "fast", "green": "slow"},
    R.OFF_CENTRE: {"amber": "slow", "red": "slow"},
    R.PARTIAL_HAND: {"amber": "slow", "red": "slow"},
    R.TWO_HANDS: {"amber": "fast", "red": "slow"},
    R.OUT_OF_FOCUS: {"amber": "fast", "red": "fast"},
    "guide": {"amber": "slow"},
}


def cloud_decision(result: Any) -> str | None:
    """The one word of the cloud's ``result`` a log line may carry: its ``decision`` where that is
    a short plain word (the reference ingest's ``enrolled``, ``match``, ``no_match``); never the
    rest, which may hold a payment token or who the shopper is."""
    word = result.get("decision") if isinstance(result, dict) else None
    if isinstance(word, str) and 0 < len(word) <= 32 and word.replace("_", "").isalnum() and word.isascii():
        return word
    return None


@dataclass
class Scan:
    """One shopper's scan, as the summary counts it."""

    outcome: str
    reasons: list[str]
    stages_ms: dict[str, float]
    end_to_end_ms: float
    capture_id: str | None = None
    kind: str | None = None


@dataclass
class Summary:
    """What the scans came to: counts by scene kind and outcome, and each stage's timings over
    the last TIMING_KEPT scans. A daemon serves for months: nothing here grows with the scans."""

    TIMING_KEPT: ClassVar[int] = 2000
    count: int = 0
    outcomes: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    timings: dict[str, deque[float]] = field(default_factory=dict)
    #: the signal (or request) that stopped the service, if one did
    stopped_by: str | None = None
    #: with a till: its checkouts by how they ended
    checkouts: dict[str, int] | None = None

    def add(self, scan: Scan) -> None:
        self.count += 1
        self.outcomes[scan.kind or "all"][scan.outcome] += 1
        for stage, ms in (*scan.stages_ms.items(), ("end_to_end", scan.end_to_end_ms)):
            self.timings.setdefault(stage, deque(maxlen=self.TIMING_KEPT)).append(ms)

    def as_json(self) -> dict[str, Any]:
        def p95(v: list[float]) -> float:
            return statistics.quantiles(v, n=20)[-1] if len(v) > 1 else v[0]

        return {
            "scans": self.count,
            "outcomes": {k: dict(v) for k, v in sorted(self.outcomes.items())},
            "timing_ms": {
                k: {"median": round(statistics.median(v), 1), "p95": round(p95(list(v)), 1)}
                for k, v in self.timings.items()
            },
        }


def loop_maker(
    *,
    scanner: Any,
    clock: Clock,
    sealer: Sealer,
    uplink: Uplink,
    calibration: Calibration,
    model: L.Model,
    emit: Callable[[dict[str, Any]], None],
    **extra: Any,
) -> Callable[[Config, Callable[[], None]], ScanLoop]:
    """How the service makes its loop (again after SIGHUP), on a scanner's parts and its calibration:
    the flat fields, the id sealed into captures, where metering starts, the scale."""
    flat = calibration.flat_field()
    e, s = calibration.exposure, calibration.scale
    start = Settings(e.exposure_us, e.gain) if e is not None else None
    scale = (s.px_per_mm, s.distance_mm) if s is not None else None

    def make(cfg: Config, tick: Callable[[], None]) -> ScanLoop:
        return ScanLoop(
            config=cfg,
            camera=scanner.camera,
            ring=scanner.ring,
            indicator=scanner.indicator,
            clock=clock,
            sealer=sealer,
            uplink=uplink,
            flat=flat,
            model=model,
            calibration_id=calibration.id,
            start=start,
            scale=scale,
            emit=emit,
            tick=tick,
            **extra,
        )

    return make


def _gone(checkout: Checkout | None) -> str:
    """The outcome of a scan whose checkout ended under it (cancelled, timed out) or never was."""
    return checkout.state if checkout is not None else "not_armed"


def palm_distance_mm(radius_px: float, scale: tuple[float, float]) -> float:
    """How far a palm of ``radius_px`` (inscribed radius, frame pixels) is, from the calibration's
    scale (pixels per mm at a distance in mm): apparent size falls as one over the distance."""
    px_per_mm, at_mm = scale
    return at_mm * px_per_mm * PALM_RADIUS_MM / max(radius_px, 1e-6)


class ScanLoop:
    def __init__(
        self,
        *,
        config: Config,
        camera: Camera,
        ring: LedRing,
        indicator: Indicator,
        clock: Clock,
        sealer: Sealer,
        uplink: Uplink,
        flat: FlatField | None,
        model: L.Model,
        calibration_id: str | None = None,
        start: Settings | None = None,
        scale: tuple[float, float] | None = None,
        emit: Callable[[dict[str, Any]], None],
        kind_of_scene: Callable[[], str | None] = lambda: None,
        stopwatch: Callable[[], int] | None = None,
        tick: Callable[[], None] = lambda: None,
        checkouts: Checkouts | None = None,
        armed_only: bool = False,
    ) -> None:
        self._cfg = config
        # The till's checkouts (device.till); armed_only ([till] mode = "armed"): nobody is captured
        # without one. Without armed_only a scan still carries the checkout armed at the time.
        if armed_only and checkouts is None:
            raise ValueError("armed_only needs the till's checkouts")
        self._checkouts = checkouts
        self._armed_only = armed_only
        self._camera = camera
        self._ring = ring
        self._indicator = indicator
        self._clock = clock
        self._sealer = sealer
        self._uplink = uplink
        self._flat = flat
        self._calibration_id = calibration_id  # sealed captures name the calibration that judged them
        # pixels per mm at a distance (mm), from the calibration: "too far" says how far, in mm
        self._scale = scale
        # the presence stream's size limits, for this lens (the calibration's scale: its focal length)
        self._view = view_scale(scale[0] * scale[1] if scale else None, config.camera.main_size[0])
        self._model = model
        self._emit = emit
        self._kind = kind_of_scene
        # Stage timings read a stopwatch: the clock itself on a scanner; on the simulated one
        # the clock only moves while waiting, and the stopwatch adds the computing.
        self._stopwatch = stopwatch or clock.monotonic_ns
        # Called before every frame: the service pings its watchdog and stops here when asked.
        self._tick = tick
        self._held: list[Any] = []  # frames not yet wiped: wiped on any way out
        self._background = presence.Background()
        # where metering starts: the calibration's exposure for a palm at the nominal distance
        self._settings = start or Settings(exposure_us=2000, gain=2.0)
        self._last: presence.Presence | None = None  # the previous presence frame, for movement
        self._scan_checkout: Checkout | None = None  # the checkout of the scan under way
        self._unarmed = False  # a hand is there and no till asked for it

    def _ms_since(self, t_ns: int) -> float:
        """Stopwatch milliseconds since ``t_ns`` (a stopwatch reading)."""
        return (self._stopwatch() - t_ns) / 1e6

    def _waited_s(self, t_ns: int) -> float:
        """Clock seconds since ``t_ns`` (a clock reading): for time limits."""
        return (self._clock.monotonic_ns() - t_ns) / 1e9

    def _show(self, what: str) -> None:
        self._indicator.show(**LIGHTS.get(what, LIGHTS["guide"]))

    def _watch_settings(self) -> None:
        """The presence stream's exposure and gain (each watch sets the ring itself)."""
        self._camera.set_manual(exposure_us=IDLE.exposure_us, gain=IDLE.gain)

    def _watch(self) -> presence.Presence:
        """One presence decision: a frame with the ring glowing dim, then one with it dark."""
        self._tick()
        lit = self._camera.preview(not_before_ns=self._ring.dim(self._cfg.leds.idle_level))
        try:
            dark = self._camera.preview(not_before_ns=self._ring.dim(0.0))
            try:
                return presence.detect(
                    lit.pixels, dark.pixels, self._background, self._last, view_scale=self._view
                )
            finally:
                dark.wipe()
        finally:
            lit.wipe()

    def wait_for_hand(self, *, give_up_s: float | None = None) -> bool:
        """Idle: the ring blinks dim and the presence stream is watched until a hand is there."""
        self._watch_settings()
        self._show("idle")
        start = self._clock.monotonic_ns()
        self._last = None
        while give_up_s is None or self._waited_s(start) < give_up_s:
            p = self._watch()
            self._last = p
            if p.present and (not self._armed_only or self._checkout() is not None):
                self._unarmed = False
                return True
            if p.present and not self._unarmed:  # said once while the hand stays; never captured
                self._emit({"event": "hand_unarmed"})
            self._unarmed = p.present
        return False

    def _checkout(self) -> Checkout | None:
        """The checkout armed or running now (one past its deadline times out here)."""
        return self._checkouts.current() if self._checkouts is not None else None

    def _ended(self, checkout: Checkout | None) -> bool:
        """Whether the scan must stop: its checkout was cancelled or timed out, or (armed mode) there
        is none."""
        if checkout is None:
            return self._armed_only
        self._checkout()  # its deadline is looked at here
        return checkout.final

    def _advance(self, checkout: Checkout | None, state: str, **kw: Any) -> None:
        if checkout is not None and self._checkouts is not None:
            self._checkouts.advance(checkout, state, **kw)

    def scan(self) -> Scan:
        """One shopper, from the hand seen to the answer and the hand gone."""
        seen = self._stopwatch()
        kind = self._kind()
        stages: dict[str, float] = {}
        checkout = self._checkout()
        self._scan_checkout = checkout
        self._emit({"event": "hand_seen", **({"checkout_id": checkout.checkout_id} if checkout else {})})
        deadline = self._clock.monotonic_ns() + int(GUIDE_TIMEOUT_S * 1e9)
        stages["guiding"] = stages["capturing"] = 0.0
        unsure = 0  # bursts whose liveness could not tell
        while True:
            # Guiding: until the presence stream has nothing to ask of the hand for a moment.
            steady, last_reasons, said_ns = 0, None, 0
            t = self._stopwatch()
            while steady < STEADY_FRAMES:
                now = self._clock.monotonic_ns()
                if self._ended(checkout):
                    return self._finish(seen, stages, _gone(checkout), [], kind)
                if now > deadline:
                    return self._finish(seen, stages, "try_again", ["guidance_timeout"], kind)
                p = self._watch()
                self._last = p
                if not p.present:
                    return self._finish(seen, stages, "left", [], kind, quiet=True)
                # New guidance at once; the same again each GUIDANCE_REPEAT_S while it lasts.
                if p.reasons and (p.reasons != last_reasons or now - said_ns > GUIDANCE_REPEAT_S * 1e9):
                    self._emit({"event": "guidance", "reasons": p.reasons})
                    self._advance(checkout, "guiding", reasons=p.reasons)
                    self._show(p.reasons[0])
                    said_ns = now
                last_reasons = p.reasons
                steady = steady + 1 if not p.reasons else 0
            stages["guiding"] += self._ms_since(t)
            if self._ended(checkout):  # never a burst for a checkout that ended, or for none
                return self._finish(seen, stages, _gone(checkout), [], kind)
            self._advance(checkout, "capturing")
            t = self._stopwatch()
            verdict, frames = self._capture()
            stages["capturing"] += self._ms_since(t)
            if verdict.quality.ok and verdict.hand is not None:
                live = verdict.liveness
                if (
                    live is not None
                    and live.verdict == L.TRY_AGAIN
                    and unsure < LIVENESS_RETAKES
                    and self._clock.monotonic_ns() < deadline
                ):
                    # Not evidence of an attack: a cue unlike any palm the model has seen. The burst
                    # is taken again, metered afresh; a second "can't tell" is the answer.
                    unsure += 1
                    self._let_go(frames)
                    self._emit({"event": "liveness_unsure", "reasons": live.reasons, "retake": unsure})
                    continue
                break
            far = self._last is not None and R.TOO_FAR in self._last.reasons
            if verdict.hand is None and R.NO_HAND in verdict.quality.reasons and far:
                # Too small for the ring's light to outline: the shopper is still guided nearer.
                verdict = Verdict(None, Quality(False, 0.0, [R.TOO_FAR]), None)
            elif verdict.hand is None and R.NO_HAND in verdict.quality.reasons:
                # The ring's light finds nothing: the presence stream was fooled (a background
                # learned while a hand was there, a change of light). Nobody to answer: learn
                # the empty scene again.
                self._background.reset()
                self._emit({"event": "false_trigger"})
                return self._finish(seen, stages, "left", [R.NO_HAND], kind, quiet=True)
            self._let_go(frames)
            guidable = set(verdict.quality.reasons) & GUIDANCE
            if guidable and self._clock.monotonic_ns() < deadline:
                said: dict[str, Any] = {"event": "guidance", "reasons": R.ordered(guidable)}
                measured = verdict.liveness.cues.get("distance_mm") if verdict.liveness else None
                if guidable & {R.TOO_FAR, R.TOO_CLOSE} and measured is not None:
                    # the ring's own light measured it (liveness.ring_distance_mm)
                    said["distance_mm"] = round(measured)
                elif (
                    self._scale is not None
                    and verdict.hand is not None
                    and guidable & {R.TOO_FAR, R.TOO_CLOSE}
                ):
                    said["distance_mm"] = round(palm_distance_mm(verdict.hand.radius, self._scale))
                self._emit(said)
                self._advance(checkout, "guiding", reasons=R.ordered(guidable))
                self._show(R.ordered(guidable)[0])
                self._watch_settings()
                continue
            self._emit(
                {
                    "event": "capture_rejected",
                    "reasons": verdict.quality.reasons,
                    "score": verdict.quality.score,
                }
            )
            return self._finish(seen, stages, "try_again", verdict.quality.reasons, kind)
        live = verdict.liveness
        self._emit(
            {
                "event": "capture_accepted",
                "quality": verdict.quality.score,
                "palm_radius": round(verdict.quality.measures.get("radius", 0.0), 3),
            }
        )
        if live is not None and live.verdict == L.TRY_AGAIN:
            self._let_go(frames)
            self._emit({"event": "liveness_unsure", "reasons": live.reasons, "retake": None})
            return self._finish(seen, stages, "try_again", live.reasons, kind)
        if live is None or not live.live:
            self._let_go(frames)
            self._emit(
                {
                    "event": "not_live",
                    "score": live.score if live else None,
                    "reasons": live.reasons if live else [],
                }
            )
            return self._finish(seen, stages, "not_accepted", live.reasons if live else [], kind)
        if self._ended(checkout):  # cancelled (or timed out) while the burst was judged: not sealed
            self._let_go(frames)
            return self._finish(seen, stages, _gone(checkout), [], kind)
        # Sealing: the palm crops of every frame, then nothing but ciphertext.
        t = self._stopwatch()
        hand = verdict.hand
        crops = []
        for f in frames:
            pix = hand.crop(f.pixels)
            crops.append(
                CaptureFrame(
                    role=f.leds or "",
                    pixels=pix,
                    roi=hand.roi(f.pixels.shape),
                    exposure_us=f.exposure_us,
                    gain=f.gain,
                    leds=patterns.manifest_leds(f.leds or ""),
                    timestamp_ns=f.timestamp_ns,
                )
            )
            f.wipe()
        crops.sort(key=lambda c: c.role != patterns.FLOOD)  # flood first: the frame for recognition
        capture = self._sealer.seal(
            crops,
            checks={"quality": {"score": verdict.quality.score}, "liveness": {"score": live.score}},
            calibration=self._calibration_id,
            checkout=checkout.envelope_field() if checkout is not None else None,
        )
        stages["sealing"] = self._ms_since(t)
        self._advance(checkout, "sent", capture_id=capture.capture_id)
        t = self._stopwatch()
        delivery = self._uplink.deliver(capture, wait_s=UPLOAD_WAIT_S)
        stages["uploading"] = self._ms_since(t)
        if delivery.delivered:
            self._emit(
                {
                    "event": "uploaded",
                    "capture_id": capture.capture_id,
                    "ms": round(stages["uploading"]),
                    "status": delivery.status,
                    "cloud_decision": cloud_decision(delivery.result),
                }
            )
            return self._finish(
                seen, stages, "accepted", [], kind, capture.capture_id, result=delivery.result
            )
        self._emit(
            {
                "event": "upload_failed",
                "capture_id": capture.capture_id,
                "outcome": delivery.outcome,
                "error": delivery.error,
            }
        )
        outcome = "try_again" if delivery.outcome in ("pending", "expired") else "fault"
        if checkout is not None and delivery.outcome == "pending":
            # The till is told "failed" now: the capture must never reach the cloud after that.
            self._uplink.withdraw(capture.capture_id)
        return self._finish(
            seen, stages, outcome, [delivery.error or delivery.outcome], kind, capture.capture_id
        )

    def _capture(self) -> tuple[Verdict, list[Any]]:
        """Meter the palm, then up to MAX_BURSTS bursts; the best by quality (the others wiped)."""
        if self._armed_only and self._checkout() is None:
            raise AssertionError("a burst without an armed checkout")  # scan() never asks for one
        self._show("working")
        n = len(self._cfg.leds.sector_pins)
        best: tuple[Verdict, list[Any]] | None = None
        remeter = True
        for _ in range(MAX_BURSTS):
            if remeter:
                self._settings = meter(self._camera, self._ring, self._settings, self._cfg.camera)
            self._tick()
            frames = take(self._camera, self._ring, self._settings, n)
            self._held.extend(frames)
            self._ring.off()
            by_role = {f.leds or "": f.pixels for f in frames}
            verdict = analyse_burst(
                by_role,
                exposure_us=self._settings.exposure_us,
                gain=self._settings.gain,
                flat=self._flat,
                model=self._model,
            )
            if best is None or verdict.quality.score > best[0].quality.score:
                if best is not None:
                    self._let_go(best[1])
                best = (verdict, frames)
            else:
                self._let_go(frames)
            if verdict.quality.ok:
                break
            remeter = bool({R.TOO_DARK, R.TOO_BRIGHT, R.NO_HAND} & set(verdict.quality.reasons))
        assert best is not None
        return best

    def _finish(
        self,
        seen: int,
        stages: dict[str, float],
        outcome: str,
        why: list[str],
        kind: str | None,
        capture_id: str | None = None,
        *,
        quiet: bool = False,
        result: Any = None,
    ) -> Scan:
        self.wipe_held()
        self._settle(self._scan_checkout, outcome, why, capture_id, result)
        self._scan_checkout = None
        end = self._ms_since(seen)
        scan = Scan(
            outcome=outcome,
            reasons=why,
            stages_ms=stages,
            end_to_end_ms=end,
            capture_id=capture_id,
            kind=kind,
        )
        if not quiet:
            self._emit({"event": "result", "outcome": outcome, "reasons": why, "end_to_end_ms": round(end)})
        elif outcome == "left" and not why:  # gone before any capture: no answer to give
            self._emit({"event": "left_unanswered", "after_ms": round(end)})
        self._show(outcome if outcome in LIGHTS else "idle")
        self._clock.sleep(SHOW_RESULT_S)
        self.wait_for_leave()
        return scan

    def _settle(
        self, checkout: Checkout | None, outcome: str, why: list[str], capture_id: str | None, result: Any
    ) -> None:
        """The checkout's state for how the scan ended: the cloud's answer, a refusal, a failure; or
        armed again (the shopper was asked to try again, or took the hand away) until its deadline."""
        if checkout is None or checkout.final:
            return
        if outcome == "accepted":
            self._advance(checkout, "accepted", result=result)
        elif outcome == "not_accepted":
            self._advance(checkout, "not_accepted", reasons=why)
        elif capture_id is not None or outcome == "fault":  # sealed, and not delivered
            self._advance(checkout, "failed", reasons=why)
        else:
            self._advance(checkout, "armed", reasons=why)

    def abandon(self, reason: str) -> None:
        """The scan under way was cut short (the camera failed): its checkout has failed."""
        checkout, self._scan_checkout = self._scan_checkout, None
        if checkout is not None:
            self._advance(checkout, "failed", reasons=[reason])

    def _let_go(self, frames: list[Any]) -> None:
        """Zero these frames and stop holding them (a scan of many tries would pile them up)."""
        for f in frames:
            f.wipe()
        gone = {id(f) for f in frames}
        self._held = [f for f in self._held if id(f) not in gone]

    def wipe_held(self) -> None:
        """Zero every frame this loop still holds (on the way out of a scan, however it ends)."""
        for f in self._held:
            f.wipe()
        self._held.clear()

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded config (what the loop reads of it: LED levels, camera limits)."""
        self._cfg = config

    def wait_for_leave(self) -> None:
        self._watch_settings()
        start = self._clock.monotonic_ns()
        gone = 0
        while gone < 3 and self._waited_s(start) < LEAVE_TIMEOUT_S:
            p = self._watch()
            self._last = p
            gone = gone + 1 if not p.present else 0
        if gone < 3:
            # Still "something there" after all this time: the shop's light changed, or an
            # object was left on the scanner. Either way it is the new empty scene.
            self._background.reset()
        # The picture of the empty scene is kept: the glow and the camera are back at the idle
        # settings it was learned under. (Learning it afresh here would learn the next
        # shopper's hand if it is already on its way.)
        self._clock.sleep(0.3)
        self._show("idle")
