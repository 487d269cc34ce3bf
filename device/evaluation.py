"""Presentations on the simulated scanner, judged by the real pipeline: the ground of ``palm eval``.

Each presentation is a fresh scene (bona fide or an attack) held over the
simulated scanner: the exposure is metered on the presence stream, then up to a
few bursts are taken and the best by quality is kept, as the daemon does.
Liveness judges the kept burst whatever its quality, so an attack is never
counted as refused merely because its capture was poor.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from device.calibration.flatfield import PALM_DISTANCE_MM, FlatField
from device.capture import Settings, meter, take
from device.clock import FakeClock
from device.config import Config
from device.hardware import patterns
from device.sim.scanner import SimulatedScanner
from device.sim.scene import Reach, Scene, fixed, make_scene
from device.stats import Rate
from device.vision import liveness as L
from device.vision.pipeline import Verdict, analyse_burst

START = Settings(exposure_us=2000, gain=2.0)


#: BCM pins for up to eight ring sectors on a simulated rig (none is an indicator light's)
RIG_PINS = (17, 27, 22, 23, 24, 25, 16, 26)


def with_rig(config: Config, *, ring_mm: float, focal_px: float, card_mm: float, sectors: int) -> Config:
    """The config with the simulated scanner's optics changed: the ring's radius, the lens's
    focal length, the grey card's distance and the number of ring sectors."""
    return dataclasses.replace(
        config,
        sim=dataclasses.replace(config.sim, ring_radius_mm=ring_mm, focal_px=focal_px),
        leds=dataclasses.replace(config.leds, sector_pins=RIG_PINS[:sectors]),
        calibration=dataclasses.replace(config.calibration, card_distance_mm=card_mm),
    )


@dataclass(frozen=True)
class Rig:
    """A simulated rig: its ring, lens, ISP and sensor, and where people hold things over it.

    The world liveness must hold in (issue #14): ``beam_m`` the LEDs' beam (cos^m), ``led_power``
    relative to nominal, ``focus_mm`` the lens's focus, ``soften_px`` / ``denoise_px`` /
    ``temporal`` the ISP's softening, spatial denoise and temporal denoise, ``noise`` the sensor's
    noise over nominal, ``reach_mm`` the distances palms are held at and ``offset_sd`` how far off
    the axis they stray (a share of the distance)."""

    ring_mm: float = 30.0
    focal_px: float = 380.0
    card_mm: float = 125.0
    sectors: int = 4
    beam_m: float = 1.0
    led_power: float = 1.0
    focus_mm: float = 125.0
    soften_px: float = 0.7
    denoise_px: float = 0.0
    temporal: float = 0.0
    noise: float = 1.0
    reach_mm: tuple[float, float] = (100.0, 150.0)
    offset_sd: float = 0.05

    def apply(self, config: Config) -> Config:
        """``config`` with this rig's simulated optics, ring and card distance."""
        c = with_rig(
            config, ring_mm=self.ring_mm, focal_px=self.focal_px, card_mm=self.card_mm, sectors=self.sectors
        )
        sim = dataclasses.replace(
            c.sim,
            led_beam_exponent=self.beam_m,
            led_power=self.led_power,
            focus_distance_mm=self.focus_mm,
            isp_soften_px=self.soften_px,
            isp_denoise_px=self.denoise_px,
            temporal_denoise=self.temporal,
            noise_scale=self.noise,
        )
        return dataclasses.replace(c, sim=sim)

    @property
    def reach(self) -> Reach:
        return Reach(distance_mm=self.reach_mm, offset_sd=self.offset_sd)

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def sim_flat_field(config: Config) -> FlatField:
    """The simulated scanner's flat fields, from its calibration frames alone (issue #7): the grey
    card and dark frames `palm calibrate flat` takes (metered, averaged, 8-bit) and the rig's
    optics, read as a lab's folder is read."""
    from device.calibration.session import flat_from_given, sim_calibration_frames

    return flat_from_given(sim_calibration_frames(config), "the simulated scanner's frames", config)


@dataclass(frozen=True)
class Presentation:
    kind: str
    seed: int
    verdict: Verdict
    cues: dict[str, float] | None
    bursts: int
    #: what the simulator knows of the presentation: the object's distance and its surface's facts
    facts: dict[str, float] = dataclasses.field(default_factory=dict)
    #: the flood crop the scanner would seal (when asked for), for the reference matcher
    crop: np.ndarray | None = dataclasses.field(default=None, repr=False)


def present(
    config: Config,
    scene: Scene,
    flat: FlatField,
    model: L.Model | None,
    *,
    max_bursts: int = 3,
    crop: bool = False,
) -> Presentation:
    """One presentation through the real pipeline (metering, bursts until quality passes, the
    checks); ``crop``: also the flood crop the scanner would seal (kept in memory)."""
    clock = FakeClock()
    # The scene began a second ago: the hand has arrived and hovers.
    with SimulatedScanner(
        config=config,
        scenes=fixed(scene, clock.monotonic_ns() - 1_000_000_000),
        clock=clock,
        serial=scene.seed,
    ) as s:
        n = len(config.leds.sector_pins)
        settings = meter(s.camera, s.ring, START, config.camera)
        best: tuple[float, Verdict, dict[str, np.ndarray]] | None = None
        used = 0
        for _ in range(max_bursts):
            used += 1
            frames = {f.leds or "": f.pixels for f in take(s.camera, s.ring, settings, n)}
            s.ring.off()
            verdict = analyse_burst(
                frames, exposure_us=settings.exposure_us, gain=settings.gain, flat=flat, model=None
            )
            if best is None or verdict.quality.score > best[0]:
                best = (verdict.quality.score, verdict, frames)
            if verdict.quality.ok:
                break
            clock.advance(0.15)  # the shopper is guided, a moment passes
    assert best is not None
    _, verdict, frames = best
    cues = None
    if verdict.hand is not None:
        cues = L.cues(frames, verdict.hand, flat, exposure_us=settings.exposure_us, gain=settings.gain)
        live = L.assess(cues, model) if model is not None else None
        verdict = Verdict(verdict.hand, verdict.quality, live)
    facts: dict[str, float] = {}
    if scene.objects:
        held = scene.objects[0]
        facts = {"distance_mm": round(held.pose.z, 1), **held.surface.facts}
    kept = None
    if crop and verdict.hand is not None:
        kept = verdict.hand.crop(frames[patterns.FLOOD])
    return Presentation(scene.kind, scene.seed, verdict, cues, used, facts, kept)


def present_kind(
    config: Config, kind: str, seed: int, flat: FlatField, model: L.Model | None, reach: Reach | None = None
) -> Presentation:
    return present(config, make_scene(kind, seed, reach=reach), flat, model)


#: seeds the liveness combiner was fitted on; evaluation must use others
DEV_SEEDS = range(900_000, 901_000)
BONA_FIDE = "genuine"


def _job(args: tuple[Config, str, int, FlatField, L.Model | None, Reach | None]) -> Presentation:
    config, kind, seed, flat, model, reach = args
    return present_kind(config, kind, seed, flat, model, reach)


def collect(
    config: Config,
    kinds: tuple[str, ...],
    seeds: range,
    flat: FlatField,
    model: L.Model | None,
    *,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    reach: Reach | None = None,
) -> list[Presentation]:
    """Every kind at every seed, in ``jobs`` processes; presentations in a stable order."""
    work = [(config, kind, seed, flat, model, reach) for kind in kinds for seed in seeds]
    out: list[Presentation] = []
    if jobs <= 1:
        for i, w in enumerate(work):
            out.append(_job(w))
            if progress:
                progress(i + 1, len(work))
        return out
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for i, p in enumerate(pool.imap(_job, work, chunksize=4)):
            out.append(p)
            if progress:
                progress(i + 1, len(work))
    return out


@dataclass(frozen=True)
class Rates:
    samples: int
    seed: int
    threshold: float
    #: bona fide presentations that passed quality and were called attacks
    bpcer_rate: Rate
    #: bona fide presentations that passed quality and were left at "can't tell" (try_again)
    try_again_rate: Rate
    #: per attack kind: presentations judged live, whatever their quality
    apcer_rate: dict[str, Rate]
    #: per attack kind: presentations left at "can't tell"
    attack_try_again: dict[str, Rate]
    quality_reject_rate: float
    attack_quality_reject_rate: dict[str, float]
    counts: dict[str, int]
    quality_reasons: dict[str, int]

    @property
    def bpcer(self) -> float:
        return self.bpcer_rate.value

    @property
    def apcer(self) -> dict[str, float]:
        return {k: r.value for k, r in self.apcer_rate.items()}

    def as_json(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "seed": self.seed,
            "threshold": self.threshold,
            "bpcer": self.bpcer,
            "apcer": self.apcer,
            "bpcer_detail": self.bpcer_rate.as_json(),
            "try_again": self.try_again_rate.as_json(),
            "apcer_detail": {k: r.as_json() for k, r in self.apcer_rate.items()},
            "attack_try_again": {k: r.as_json() for k, r in self.attack_try_again.items()},
            "quality_reject_rate": self.quality_reject_rate,
            "attack_quality_reject_rate": self.attack_quality_reject_rate,
            "counts": self.counts,
            "bona_fide_quality_reasons": self.quality_reasons,
        }

    def lines(self) -> list[str]:
        """The ISO/IEC 30107-3 table a person reads: each rate with its count and 95 % interval."""
        head = f"{'error (count; 95 % Clopper-Pearson)':>46s} {'try again':>10s} {'quality rejects':>16s}"
        out = [f"{'class':18s} {head}"]
        out.append(
            f"{BONA_FIDE:18s} {'BPCER ' + self.bpcer_rate.text():>46s} {self.try_again_rate.errors:>10d} "
            f"{_pct(self.quality_reject_rate):>16s}"
        )
        for kind, r in self.apcer_rate.items():
            out.append(
                f"{kind:18s} {'APCER ' + r.text():>46s} {self.attack_try_again[kind].errors:>10d} "
                f"{_pct(self.attack_quality_reject_rate[kind]):>16s}"
            )
        return out


def _pct(x: float) -> str:
    return f"{x * 100:.2f} %"


def score_of(p: Presentation) -> float:
    """Liveness score of a presentation; one whose hand was never found scores 0 (not live)."""
    return p.verdict.liveness.score if p.verdict.liveness is not None else 0.0


def verdict_of(p: Presentation, threshold: float | None = None) -> str:
    """LIVE, ATTACK or TRY_AGAIN; with ``threshold``, the score against it decides live or attack."""
    lv = p.verdict.liveness
    if lv is None:
        return L.ATTACK
    if lv.verdict == L.TRY_AGAIN:
        return L.TRY_AGAIN
    if threshold is None:
        return lv.verdict
    return L.LIVE if lv.score >= threshold else L.ATTACK


def rates(presentations: list[Presentation], *, threshold: float, samples: int, seed: int) -> Rates:
    """ISO/IEC 30107-3: BPCER over bona fide captures that passed quality (quality refusals apart),
    APCER per attack type over every attack presentation (quality or not), each with its count and
    a 95 % Clopper-Pearson interval; "can't tell" verdicts are counted apart from both."""
    bona = [p for p in presentations if p.kind == BONA_FIDE]
    usable = [verdict_of(p, threshold) for p in bona if p.verdict.quality.ok]
    apcer, attack_q, attack_t = {}, {}, {}
    for kind in sorted({p.kind for p in presentations} - {BONA_FIDE}):
        attacks = [p for p in presentations if p.kind == kind]
        said = [verdict_of(p, threshold) for p in attacks]
        apcer[kind] = Rate(said.count(L.LIVE), len(attacks))
        attack_t[kind] = Rate(said.count(L.TRY_AGAIN), len(attacks))
        attack_q[kind] = sum(not p.verdict.quality.ok for p in attacks) / len(attacks)
    counts = {
        kind: sum(p.kind == kind for p in presentations) for kind in sorted({p.kind for p in presentations})
    }
    reasons = Counter(r for p in bona if not p.verdict.quality.ok for r in p.verdict.quality.reasons)
    return Rates(
        quality_reasons=dict(reasons),
        samples=samples,
        seed=seed,
        threshold=threshold,
        bpcer_rate=Rate(usable.count(L.ATTACK), len(usable)),
        try_again_rate=Rate(usable.count(L.TRY_AGAIN), len(usable)),
        apcer_rate=apcer,
        attack_try_again=attack_t,
        quality_reject_rate=1 - len(usable) / max(len(bona), 1),
        attack_quality_reject_rate=attack_q,
        counts=counts,
    )


#: ring spread per mm of ring radius, for a palm at flatfield.PALM_DISTANCE_MM (measured on the
#: simulated scanner's grey card: 0.0297 for a 15 mm ring, 0.0286 for 30 mm, 0.0268 for 45 mm)
SPREAD_PER_RING_MM = 0.0286
#: below this ring spread (sectors under 20 degrees apart at 125 mm, a ring under 22 mm) the
#: relief cue loses its grip on the palm (see RigNotes); the figures behind it are in issue #7
WEAK_RING_SPREAD = 0.63
#: the relief cue's median on bona fide palms over its median on prints: the margin the combiner
#: works with; the default 30 mm ring gives about 4.5
WEAK_RELIEF_MARGIN = 3.5
PRINTS = ("print_flat", "print_flat_veins", "print_curved")


@dataclass(frozen=True)
class RigNotes:
    """What the calibration says of the rig, and whether liveness can work on it."""

    sectors: int
    ring_spread: float | None
    focal_px: float | None
    relief_bona_fide: float | None  # median relief cue of bona fide palms that passed quality
    relief_prints: float | None  # median relief cue of the prints
    warnings: tuple[str, ...]

    def lines(self) -> list[str]:
        out = [f"rig: {self.sectors} sectors" + (f", focal {self.focal_px:.0f} px" if self.focal_px else "")]
        if self.ring_spread is not None:
            ring_mm = self.ring_spread / SPREAD_PER_RING_MM
            apart = 2 * math.degrees(math.atan(ring_mm / PALM_DISTANCE_MM))
            out.append(
                f"ring spread {self.ring_spread:.3f}: lights a palm like a {ring_mm:.0f} mm ring, sectors "
                f"{apart:.0f} degrees apart at {PALM_DISTANCE_MM:.0f} mm"
            )
        if self.relief_bona_fide is not None and self.relief_prints is not None:
            out.append(
                f"relief cue, median: bona fide {self.relief_bona_fide:.4f}, prints {self.relief_prints:.4f} "
                f"({self.relief_bona_fide / max(self.relief_prints, 1e-9):.1f} x)"
            )
        out += [f"WARNING: {w}" for w in self.warnings]
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "sectors": self.sectors,
            "ring_spread": self.ring_spread,
            "focal_px": self.focal_px,
            "relief_bona_fide": self.relief_bona_fide,
            "relief_prints": self.relief_prints,
            "warnings": list(self.warnings),
        }


def rig_notes(flat: FlatField, found: list[Presentation]) -> RigNotes:
    """The rig as its calibration describes it, and a warning where its geometry makes liveness
    physically weak: a ring so near the lens that its sectors light a palm from nearly one
    direction, so photometric stereo barely tells a palm's relief from a print's flatness."""

    def median_relief(kinds: tuple[str, ...], *, usable: bool) -> float | None:
        xs = [
            p.cues["relief"]
            for p in found
            if p.kind in kinds and p.cues is not None and (p.verdict.quality.ok or not usable)
        ]
        return float(np.median(xs)) if xs else None

    bona = median_relief((BONA_FIDE,), usable=True)
    prints = median_relief(PRINTS, usable=False)
    warnings = []
    if flat.ring_spread is not None and flat.ring_spread < WEAK_RING_SPREAD:
        ring_mm = flat.ring_spread / SPREAD_PER_RING_MM
        warnings.append(
            f"the ring is too near the lens for liveness: its spread {flat.ring_spread:.2f} (like a "
            f"{ring_mm:.0f} mm ring) is under {WEAK_RING_SPREAD:.2f}; the sectors light a palm from "
            "nearly one direction and the palm's relief barely shows. Place the LEDs at least "
            f"{WEAK_RING_SPREAD / SPREAD_PER_RING_MM:.0f} mm from the lens's axis"
        )
    if bona is not None and prints is not None and bona < WEAK_RELIEF_MARGIN * prints:
        warnings.append(
            f"the relief cue tells palms from prints by only {bona / max(prints, 1e-9):.1f} x (under "
            f"{WEAK_RELIEF_MARGIN:.1f} x): liveness leans on its other cues on this rig"
        )
    return RigNotes(
        sectors=len(flat.lit_roles()),
        ring_spread=flat.ring_spread,
        focal_px=flat.focal_px,
        relief_bona_fide=bona,
        relief_prints=prints,
        warnings=tuple(warnings),
    )
