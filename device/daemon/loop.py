"""The scan loop: from a hand over the scanner to an answer for the shopper.

States: idle (ring glowing dim, watching the presence stream), guiding, capturing
(metering and bursts, best by quality), checking (liveness), sealing, uploading,
showing the result, waiting for the hand to leave. Every state has a time limit.
Parts come in through the constructor; time comes from the injected clock.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2

from device.calibration.flatfield import FlatField
from device.capture import Settings, meter, take
from device.clock import Clock
from device.config import Config
from device.errors import CameraError
from device.hardware import patterns
from device.hardware.camera import Camera
from device.hardware.indicator import Indicator
from device.hardware.ring import LedRing
from device.protocol.archive import CaptureFrame
from device.protocol.seal import Sealer
from device.uplink.uplink import Uplink
from device.vision import liveness as L
from device.vision import presence
from device.vision import reasons as R
from device.vision.pipeline import Verdict, analyse_burst
from device.vision.roi import CROP_PX

GUIDE_TIMEOUT_S = 8.0
LEAVE_TIMEOUT_S = 6.0
SHOW_RESULT_S = 1.2
UPLOAD_WAIT_S = 3.0
MAX_BURSTS = 3
#: quality reasons a shopper can fix while the scan goes on
GUIDANCE = frozenset(
    {R.TOO_FAR, R.TOO_CLOSE, R.OFF_CENTRE, R.PARTIAL_HAND, R.HOLD_STILL, R.OPEN_HAND, R.OUT_OF_FOCUS}
)
STEADY_FRAMES = 2
#: the presence stream's exposure: a hand 15 cm away in the dim glow stands out in a dark shop
IDLE = Settings(exposure_us=6000, gain=2.0)

#: what the three lights show: outcomes and guidance
LIGHTS: dict[str, dict[str, Any]] = {
    "idle": {},
    "working": {"green": "slow"},
    "accepted": {"green": "on"},
    "try_again": {"amber": "on"},
    "not_accepted": {"red": "on"},
    "fault": {"red": "fast"},
    R.HOLD_STILL: {"amber": "fast"},
    "guide": {"amber": "slow"},
}


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
    scans: list[Scan] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        for s in self.scans:
            outcomes[s.kind or "all"][s.outcome] += 1
        stages: dict[str, list[float]] = defaultdict(list)
        for s in self.scans:
            for k, v in s.stages_ms.items():
                stages[k].append(v)
            stages["end_to_end"].append(s.end_to_end_ms)

        def p95(v: list[float]) -> float:
            return statistics.quantiles(v, n=20)[-1] if len(v) > 1 else v[0]

        return {
            "scans": len(self.scans),
            "outcomes": {k: dict(v) for k, v in sorted(outcomes.items())},
            "timing_ms": {
                k: {"median": round(statistics.median(v), 1), "p95": round(p95(v), 1)}
                for k, v in stages.items()
            },
        }


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
        emit: Callable[[dict[str, Any]], None],
        kind_of_scene: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._cfg = config
        self._camera = camera
        self._ring = ring
        self._indicator = indicator
        self._clock = clock
        self._sealer = sealer
        self._uplink = uplink
        self._flat = flat
        self._model = model
        self._emit = emit
        self._kind = kind_of_scene
        self._background = presence.Background()
        self._settings = Settings(exposure_us=2000, gain=2.0)
        self._last: presence.Presence | None = None  # the previous presence frame, for movement

    def _ms_since(self, t_ns: int) -> float:
        return (self._clock.monotonic_ns() - t_ns) / 1e6

    def _show(self, what: str) -> None:
        self._indicator.show(**LIGHTS.get(what, LIGHTS["guide"]))

    def _watch(self) -> presence.Presence:
        frame = self._camera.preview()
        return presence.detect(frame.pixels, self._background, self._last)

    def wait_for_hand(self, *, give_up_s: float | None = None) -> bool:
        """Idle: the ring glows dim and the presence stream is watched until a hand is there."""
        self._ring.dim(self._cfg.leds.idle_level)
        self._camera.set_manual(exposure_us=IDLE.exposure_us, gain=IDLE.gain)
        self._show("idle")
        start = self._clock.monotonic_ns()
        self._last = None
        while give_up_s is None or self._ms_since(start) < give_up_s * 1000:
            p = self._watch()
            self._last = p
            if p.present:
                return True
        return False

    def scan(self) -> Scan:
        """One shopper, from the hand seen to the answer and the hand gone."""
        seen = self._clock.monotonic_ns()
        kind = self._kind()
        stages: dict[str, float] = {}
        self._emit({"event": "hand_seen"})
        deadline = seen + int(GUIDE_TIMEOUT_S * 1e9)
        stages["guiding"] = stages["capturing"] = 0.0
        while True:
            # Guiding: until the presence stream has nothing to ask of the hand for a moment.
            steady, last_reasons = 0, None
            t = self._clock.monotonic_ns()
            while steady < STEADY_FRAMES:
                if self._clock.monotonic_ns() > deadline:
                    return self._finish(seen, stages, "try_again", ["guidance_timeout"], kind)
                p = self._watch()
                self._last = p
                if not p.present:
                    return self._finish(seen, stages, "left", [], kind, quiet=True)
                if p.reasons != last_reasons:
                    if p.reasons:
                        self._emit({"event": "guidance", "reasons": p.reasons})
                        self._show(p.reasons[0] if p.reasons[0] == R.HOLD_STILL else "guide")
                    last_reasons = p.reasons
                steady = steady + 1 if not p.reasons else 0
            stages["guiding"] += self._ms_since(t)
            t = self._clock.monotonic_ns()
            verdict, frames = self._capture()
            stages["capturing"] += self._ms_since(t)
            if verdict.quality.ok and verdict.hand is not None:
                break
            for f in frames:
                f.wipe()
            guidable = set(verdict.quality.reasons) & GUIDANCE
            if guidable and self._clock.monotonic_ns() < deadline:
                self._emit({"event": "guidance", "reasons": R.ordered(guidable)})
                self._show("guide")
                self._ring.dim(self._cfg.leds.idle_level)
                self._camera.set_manual(exposure_us=IDLE.exposure_us, gain=IDLE.gain)
                continue
            self._emit(
                {
                    "event": "capture_rejected",
                    "reasons": verdict.quality.reasons,
                    "score": verdict.quality.score,
                }
            )
            return self._finish(seen, stages, "try_again", verdict.quality.reasons, kind)
        self._emit({"event": "capture_accepted", "quality": verdict.quality.score})
        live = verdict.liveness
        if live is None or not live.live:
            for f in frames:
                f.wipe()
            self._emit(
                {
                    "event": "not_live",
                    "score": live.score if live else None,
                    "reasons": live.reasons if live else [],
                }
            )
            return self._finish(seen, stages, "not_accepted", live.reasons if live else [], kind)
        # Sealing: the palm crops of every frame, then nothing but ciphertext.
        t = self._clock.monotonic_ns()
        hand = verdict.hand
        m = hand.crop_matrix(CROP_PX)
        crops = []
        for f in frames:
            pix = cv2.warpAffine(
                f.pixels, m, (CROP_PX, CROP_PX), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
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
            calibration=None,
        )
        stages["sealing"] = self._ms_since(t)
        t = self._clock.monotonic_ns()
        delivery = self._uplink.deliver(capture, wait_s=UPLOAD_WAIT_S)
        stages["uploading"] = self._ms_since(t)
        if delivery.delivered:
            self._emit(
                {
                    "event": "uploaded",
                    "capture_id": capture.capture_id,
                    "ms": round(stages["uploading"]),
                    "status": delivery.status,
                }
            )
            return self._finish(seen, stages, "accepted", [], kind, capture.capture_id)
        self._emit(
            {
                "event": "upload_failed",
                "capture_id": capture.capture_id,
                "outcome": delivery.outcome,
                "error": delivery.error,
            }
        )
        outcome = "try_again" if delivery.outcome in ("pending", "expired") else "fault"
        return self._finish(
            seen, stages, outcome, [delivery.error or delivery.outcome], kind, capture.capture_id
        )

    def _capture(self) -> tuple[Verdict, list[Any]]:
        """Meter the palm, then up to MAX_BURSTS bursts; the best by quality (the others wiped)."""
        self._show("working")
        n = len(self._cfg.leds.sector_pins)
        best: tuple[Verdict, list[Any]] | None = None
        remeter = True
        for _ in range(MAX_BURSTS):
            if remeter:
                self._settings = meter(self._camera, self._ring, self._settings, self._cfg.camera)
            frames = take(self._camera, self._ring, self._settings, n)
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
                    for f in best[1]:
                        f.wipe()
                best = (verdict, frames)
            else:
                for f in frames:
                    f.wipe()
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
    ) -> Scan:
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
        self._show(outcome if outcome in LIGHTS else "idle")
        self._clock.sleep(SHOW_RESULT_S)
        self.wait_for_leave()
        return scan

    def wait_for_leave(self) -> None:
        self._ring.dim(self._cfg.leds.idle_level)
        self._camera.set_manual(exposure_us=IDLE.exposure_us, gain=IDLE.gain)
        start = self._clock.monotonic_ns()
        gone = 0
        while gone < 3 and self._ms_since(start) < LEAVE_TIMEOUT_S * 1000:
            try:
                p = self._watch()
            except CameraError:
                break
            self._last = p
            gone = gone + 1 if not p.present else 0
        # The empty scene is learned again, now that the hand is gone and the glow is back.
        self._clock.sleep(0.3)
        self._background.reset()
        self._show("idle")
