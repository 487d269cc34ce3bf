"""Scenes: surfaces placed in front of the scanner, moving in time, under ambient light.

A scene is reproducible from its kind and seed. Poses are in the camera frame
(mm, degrees); a hand's local +v (toward the fingers) points up the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from device.sim import surfaces
from device.sim.surfaces import Surface

BONA_FIDE = "genuine"
ATTACKS = ("print_flat", "print_flat_veins", "print_curved", "screen", "fake_hand")
OTHERS = ("empty", "partial_hand", "two_hands", "closed_hand", "card")
SCENE_KINDS = (BONA_FIDE, *ATTACKS, *OTHERS)

#: nominal distance of a hand over the scanner, mm
NOMINAL_DISTANCE_MM = 125.0
#: ambient NIR on the scene, relative to the ring's flood on skin at the nominal distance:
#: a dark shop, a lit shop, a bright shop, a sunlit window
AMBIENT_RANGES = {"dark": (0.0, 0.02), "shop": (0.02, 0.12), "bright": (0.12, 0.4), "sunlit": (0.4, 1.2)}
#: radiance of skin (albedo 0.5) at the nominal distance under the full ring (radiance units)
FLOOD_SKIN_RADIANCE = 0.343


@dataclass(frozen=True)
class Pose:
    x: float = 0.0
    y: float = 0.0
    z: float = 100.0
    roll: float = 180.0  # about the optical axis; 180 puts the fingers up the image
    pitch: float = 0.0
    yaw: float = 0.0

    def rotation(self) -> np.ndarray:
        r, p, w = (math.radians(a) for a in (self.roll, self.pitch, self.yaw))
        rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
        ry = np.array([[math.cos(w), 0, math.sin(w)], [0, 1, 0], [-math.sin(w), 0, math.cos(w)]])
        return rz @ ry @ rx


@dataclass(frozen=True)
class Motion:
    """How a held object moves: hover tremor, an approach, a sweep, leaving."""

    sway_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sway_hz: tuple[float, float, float] = (1.0, 1.0, 1.0)
    phase: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tremor_mm: float = 0.0  # physiological tremor, 8-12 Hz
    approach_mm: float = 0.0  # starts this much farther away, settles in ~0.3 s
    sweep_mm_s: tuple[float, float] = (0.0, 0.0)
    leave_at_s: float | None = None

    @classmethod
    def hover(cls, rng: np.random.Generator, *, steady: float = 1.0) -> Motion:
        return cls(
            sway_mm=tuple(float(a) for a in rng.uniform(0.3, 1.2, 3) * steady),  # type: ignore[arg-type]
            sway_hz=tuple(float(f) for f in rng.uniform(0.4, 1.6, 3)),  # type: ignore[arg-type]
            phase=tuple(float(p) for p in rng.uniform(0, 2 * math.pi, 3)),  # type: ignore[arg-type]
            tremor_mm=float(rng.uniform(0.03, 0.12) * steady),
        )

    def offset(self, t: float) -> tuple[float, float, float]:
        d = [
            a * math.sin(2 * math.pi * f * t + p)
            for a, f, p in zip(self.sway_mm, self.sway_hz, self.phase, strict=True)
        ]
        if self.tremor_mm:
            d[0] += self.tremor_mm * math.sin(2 * math.pi * 9.3 * t + self.phase[1])
            d[1] += self.tremor_mm * math.sin(2 * math.pi * 10.7 * t + self.phase[2])
        if self.approach_mm:
            d[2] += self.approach_mm * math.exp(-max(t, 0) / 0.12)
        d[0] += self.sweep_mm_s[0] * t
        d[1] += self.sweep_mm_s[1] * t
        if self.leave_at_s is not None and t > self.leave_at_s:
            d[2] += 400.0 * (t - self.leave_at_s)
        return d[0], d[1], d[2]


@dataclass(frozen=True, eq=False)
class Placed:
    surface: Surface
    pose: Pose
    motion: Motion = field(default_factory=Motion)

    def pose_at(self, t: float) -> Pose:
        dx, dy, dz = self.motion.offset(t)
        return replace(self.pose, x=self.pose.x + dx, y=self.pose.y + dy, z=self.pose.z + dz)


@dataclass(frozen=True, eq=False)
class Scene:
    kind: str
    seed: int
    objects: tuple[Placed, ...]
    ambient: float  # relative NIR on the object (see AMBIENT_RANGES)
    background: float  # radiance of what lies beyond (ceiling, window), radiance units
    condition: str = "shop"

    @property
    def attack(self) -> bool:
        return self.kind in ATTACKS

    @property
    def ambient_radiance(self) -> float:
        """Irradiance-equivalent radiance units falling on an object's face from the room."""
        return self.ambient * FLOOD_SKIN_RADIANCE / 0.5


def _ambient(rng: np.random.Generator, condition: str | None) -> tuple[str, float, float]:
    if condition is None:
        condition = str(rng.choice(list(AMBIENT_RANGES), p=[0.25, 0.4, 0.2, 0.15]))
    lo, hi = AMBIENT_RANGES[condition]
    a = float(rng.uniform(lo, hi))
    # What the camera sees past the hand: a ceiling, lights, a window: brighter than the palm side.
    bg = a * FLOOD_SKIN_RADIANCE * float(rng.uniform(0.5, 3.0))
    return condition, a, bg


def _held_pose(rng: np.random.Generator, *, z: float | None = None) -> Pose:
    z = float(rng.uniform(0.8, 1.2) * NOMINAL_DISTANCE_MM) if z is None else z
    return Pose(
        x=float(rng.normal(0, 0.05) * z),
        y=float(rng.normal(0, 0.05) * z),
        z=z,
        roll=180.0 + float(rng.uniform(-20, 20)),
        pitch=float(rng.normal(0, 5)),
        yaw=float(rng.normal(0, 5)),
    )


def make_scene(
    kind: str,
    seed: int,
    *,
    condition: str | None = None,
    distance_mm: float | None = None,
    motion: str = "hover",
    leave_after_s: float | None = None,
) -> Scene:
    """A scene of ``kind`` (see SCENE_KINDS) drawn from ``seed``.

    ``motion``: ``hover`` (a hand held still, as steady as hands are), ``still``
    (on a stand), ``fast`` (sweeping past too fast), ``approach``.
    """
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene {kind!r}: valid are " + ", ".join(SCENE_KINDS))
    # Separate streams, so that changing the light or the motion keeps the same object and pose.
    rng = np.random.default_rng([seed, SCENE_KINDS.index(kind), 0])
    cond, ambient, background = _ambient(np.random.default_rng([seed, 1]), condition)
    mot = replace(_motion(np.random.default_rng([seed, 2]), motion), leave_at_s=leave_after_s)
    pose = _held_pose(rng, z=distance_mm)
    sub = int(rng.integers(2**31))
    objects: tuple[Placed, ...]
    if kind == "empty":
        objects = ()
    elif kind == "card":
        objects = (Placed(surfaces.grey_card(), Pose(z=distance_mm or NOMINAL_DISTANCE_MM, roll=0.0)),)
    elif kind == "genuine":
        objects = (Placed(surfaces.hand(sub), pose, mot),)
    elif kind == "closed_hand":
        objects = (Placed(surfaces.hand(sub, openness=float(rng.uniform(0.25, 0.5))), pose, mot),)
    elif kind == "partial_hand":
        side = rng.choice([-1.0, 1.0])
        shifted = replace(pose, x=float(side * pose.z * rng.uniform(0.55, 0.75)))
        objects = (Placed(surfaces.hand(sub), shifted, mot),)
    elif kind == "two_hands":
        a = replace(pose, x=-0.38 * pose.z, roll=pose.roll - 10)
        b = replace(pose, x=0.38 * pose.z, roll=pose.roll + 10)
        objects = (Placed(surfaces.hand(sub), a, mot), Placed(surfaces.hand(sub + 1), b, mot))
    elif kind == "fake_hand":
        objects = (Placed(surfaces.hand(sub, fake=True), pose, mot),)
    elif kind == "screen":
        objects = (Placed(surfaces.screen(sub), pose, mot),)
    elif kind in ("print_flat", "print_flat_veins"):
        objects = (Placed(surfaces.flat_print(sub, veins=kind.endswith("veins")), pose, mot),)
    else:  # print_curved
        objects = (
            Placed(
                surfaces.flat_print(
                    sub, veins=bool(rng.random() < 0.5), curvature_mm=float(rng.uniform(45, 110))
                ),
                pose,
                mot,
            ),
        )
    return Scene(
        kind=kind, seed=seed, objects=objects, ambient=ambient, background=background, condition=cond
    )


def _motion(rng: np.random.Generator, motion: str) -> Motion:
    if motion == "still":
        return Motion()
    if motion == "hover":
        return Motion.hover(rng)
    if motion == "approach":
        return replace(Motion.hover(rng), approach_mm=float(rng.uniform(80, 150)))
    if motion == "fast":
        ang = rng.uniform(0, 2 * math.pi)
        speed = float(rng.uniform(150, 300))
        return replace(Motion.hover(rng), sweep_mm_s=(speed * math.cos(ang), speed * math.sin(ang)))
    raise ValueError(f"unknown motion {motion!r}: valid are still, hover, approach, fast")


SceneSource = Callable[[int], tuple[Scene | None, float]]
"""Given a monotonic time in ns: the scene in front of the camera, and seconds since it began."""


def fixed(scene: Scene | None, start_ns: int = 0) -> SceneSource:
    """A scene that is always there (time counted from ``start_ns``)."""
    return lambda t_ns: (scene, (t_ns - start_ns) / 1e9)


@dataclass(frozen=True, eq=False)
class Event:
    """One presentation: the scene arrives at ``start_s``, stays ``dwell_s``, then leaves."""

    start_s: float
    dwell_s: float
    scene: Scene

    LEAVING_S = 0.6  # the object is out of view this long after it starts to leave

    @property
    def end_s(self) -> float:
        return self.start_s + self.dwell_s + self.LEAVING_S


class Scenario:
    """A timed sequence of presentations: a SceneSource for the simulated camera.

    Between presentations the camera sees the empty scene under the light of the
    next (or, after the last, the previous) presentation.
    """

    def __init__(self, events: list[Event], *, start_ns: int) -> None:
        self.events = sorted(events, key=lambda e: e.start_s)
        self.start_ns = start_ns

    def __call__(self, t_ns: int) -> tuple[Scene | None, float]:
        t = (t_ns - self.start_ns) / 1e9
        lit_by: Scene | None = None
        for event in self.events:
            if t < event.start_s:
                lit_by = lit_by or event.scene
                break
            if t < event.end_s:
                return event.scene, t - event.start_s
            lit_by = event.scene
        if lit_by is None:
            return None, t
        empty = Scene(
            kind="empty",
            seed=lit_by.seed,
            objects=(),
            ambient=lit_by.ambient,
            background=lit_by.background,
            condition=lit_by.condition,
        )
        return empty, t

    @property
    def duration_s(self) -> float:
        return max((e.end_s for e in self.events), default=0.0)


def shoppers(
    seed: int,
    count: int,
    *,
    attack_share: float = 0.25,
    kinds: tuple[str, ...] | None = None,
    first_at_s: float = 1.0,
    condition: str | None = None,
) -> list[Event]:
    """``count`` presentations: mostly shoppers' palms, some attacks, with gaps between."""
    rng = np.random.default_rng([seed, 77])
    if condition is None:  # one shop, one light, for the whole scenario
        condition = str(rng.choice(list(AMBIENT_RANGES), p=[0.3, 0.45, 0.15, 0.1]))
    events = []
    t = first_at_s
    for i in range(count):
        if kinds is not None:
            kind = kinds[i % len(kinds)]
        else:
            kind = BONA_FIDE if rng.random() >= attack_share else str(rng.choice(ATTACKS))
        dwell = float(rng.uniform(2.0, 4.0))
        scene = make_scene(
            kind, seed * 100_003 + i, motion="approach", leave_after_s=dwell, condition=condition
        )
        events.append(Event(start_s=t, dwell_s=dwell, scene=scene))
        t += dwell + Event.LEAVING_S + float(rng.uniform(0.8, 2.5))
    return events
