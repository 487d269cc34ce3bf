"""Scenes: surfaces placed in front of the scanner, moving in time, under ambient light.

A scene is reproducible from its kind and seed. Poses are in the camera frame
(mm, degrees); a hand's local +v (toward the fingers) points up the image.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from device.sim import surfaces
from device.sim.surfaces import Surface

BONA_FIDE = "genuine"
ATTACKS = ("print_flat", "print_flat_veins", "print_curved", "screen", "fake_hand")
OTHERS = ("empty", "partial_hand", "two_hands", "closed_hand", "card")
#: what a technician holds over the scanner to calibrate it, besides the grey card
TARGETS = ("cap", "target")
SCENE_KINDS = (BONA_FIDE, *ATTACKS, *OTHERS, *TARGETS)

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
    #: moves the holder makes when guided: (start s, dx, dy, dz mm), each eased in over MOVE_S
    moves: tuple[tuple[float, float, float, float], ...] = ()

    MOVE_S = 0.5

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
        for t0, mx, my, mz in self.moves:
            if t > t0:
                k = min(1.0, (t - t0) / self.MOVE_S)
                k = k * k * (3 - 2 * k)  # smoothstep: a hand eases in and out of a move
                d[0] += mx * k
                d[1] += my * k
                d[2] += mz * k
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


@dataclass(frozen=True)
class Reach:
    """Where people hold things over a scanner: the distances (mm, drawn uniformly) and how far off
    the lens's axis they stray (a standard deviation, as a share of the distance)."""

    distance_mm: tuple[float, float] = (0.8 * NOMINAL_DISTANCE_MM, 1.2 * NOMINAL_DISTANCE_MM)
    offset_sd: float = 0.05


def _held_pose(rng: np.random.Generator, *, z: float | None = None, reach: Reach | None = None) -> Pose:
    reach = reach or Reach()
    z = float(rng.uniform(*reach.distance_mm)) if z is None else z
    return Pose(
        x=float(rng.normal(0, reach.offset_sd) * z),
        y=float(rng.normal(0, reach.offset_sd) * z),
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
    light_seed: int | None = None,
    reach: Reach | None = None,
    identity: int | None = None,
) -> Scene:
    """A scene of ``kind`` (see SCENE_KINDS) drawn from ``seed``.

    ``identity``: for a genuine palm, whose palm it is (the same identity is the same palm,
    presented as ``seed`` says: pose, distance, spread, motion, light, noise); without, the
    palm too is the seed's.

    ``reach``: where the object is held (Reach: distances and straying off the axis).

    ``light_seed``: draw the shop's light (ambient and background) from this seed instead,
    so that every scene of a scenario has the same light.

    ``motion``: ``hover`` (a hand held still, as steady as hands are), ``still``
    (on a stand), ``fast`` (sweeping past too fast), ``approach``.
    """
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene {kind!r}: valid are " + ", ".join(SCENE_KINDS))
    # Separate streams, so that changing the light or the motion keeps the same object and pose.
    rng = np.random.default_rng([seed, SCENE_KINDS.index(kind), 0])
    light = seed if light_seed is None else light_seed
    cond, ambient, background = _ambient(np.random.default_rng([light, 1]), condition)
    mot = replace(_motion(np.random.default_rng([seed, 2]), motion), leave_at_s=leave_after_s)
    pose = _held_pose(rng, z=distance_mm, reach=reach)
    sub = int(rng.integers(2**31))
    objects: tuple[Placed, ...]
    if kind == "empty":
        objects = ()
    elif kind == "card":
        objects = (Placed(surfaces.grey_card(), Pose(z=distance_mm or NOMINAL_DISTANCE_MM, roll=0.0)),)
    elif kind == "cap":
        objects = (Placed(surfaces.lens_cap(), Pose(z=4.0, roll=0.0)),)
    elif kind == "target":
        objects = (Placed(surfaces.focus_target(), Pose(z=distance_mm or NOMINAL_DISTANCE_MM, roll=0.0)),)
    elif kind == "genuine":
        objects = (Placed(surfaces.hand(sub, identity=identity), pose, mot),)
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


class Event:
    """One presentation: the scene arrives at ``start_s``, stays ``dwell_s``, then leaves.

    The scene may be given as a function that builds it: it is then built when first
    looked at, so a long scenario holds only the scenes near its present.
    """

    __slots__ = ("_build", "_scene", "dwell_s", "start_s")

    LEAVING_S = 0.6  # the object is out of view this long after it starts to leave

    def __init__(self, start_s: float, dwell_s: float, scene: Scene | Callable[[], Scene]) -> None:
        self.start_s = start_s
        self.dwell_s = dwell_s
        self._scene: Scene | None = scene if isinstance(scene, Scene) else None
        self._build: Callable[[], Scene] | None = None if isinstance(scene, Scene) else scene

    @property
    def scene(self) -> Scene:
        if self._scene is None:
            assert self._build is not None
            self._scene, self._build = self._build(), None
        return self._scene

    def later(self, shift_s: float) -> Event:
        """The same presentation ``shift_s`` later (its scene still unbuilt if it was)."""
        return Event(self.start_s + shift_s, self.dwell_s, self._scene or self._build)  # type: ignore[arg-type]

    @property
    def end_s(self) -> float:
        return self.start_s + self.dwell_s + self.LEAVING_S


class Scenario:
    """A timed sequence of presentations: a SceneSource for the simulated camera.

    Between presentations the camera sees the empty scene under the light of the
    next (or, after the last, the previous) presentation.
    """

    #: presentations that ended longer ago than this are forgotten, s
    KEEP_PAST_S = 5.0

    #: on call, presentations not called yet wait this far ahead (s), one after another
    ON_CALL_S = 1e7

    def __init__(self, events: list[Event], *, start_ns: int, on_call: bool = False) -> None:
        events = sorted(events, key=lambda e: e.start_s)
        if on_call:  # nobody comes until called (Scenario.call): a till asks, a shopper steps up
            events = [e.later(self.ON_CALL_S + 100.0 * i - e.start_s) for i, e in enumerate(events)]
        self.events = events
        self.start_ns = start_ns
        #: presentations that have arrived so far, by scene kind (answered or not)
        self.presented: Counter[str] = Counter()
        self._arrived: set[int] = set()
        self._lock = threading.RLock()  # a till's thread calls shoppers while the camera looks

    def call(self, t_ns: int, after_s: float) -> bool:
        """Bring the next presentation that has not begun to the scanner ``after_s`` from ``t_ns``
        (and after whoever is still there has gone); False when none is left."""
        t = (t_ns - self.start_ns) / 1e9
        with self._lock:
            busy_until = max((e.end_s for e in self.events if e.start_s <= t), default=t)
            for i, e in enumerate(self.events):
                if e.start_s > t:
                    start = max(t + after_s, busy_until + 0.5)
                    if start < e.start_s:
                        self.events[i] = e.later(start - e.start_s)
                    return True
        return False

    def __call__(self, t_ns: int) -> tuple[Scene | None, float]:
        with self._lock:
            return self._at(t_ns)

    def _at(self, t_ns: int) -> tuple[Scene | None, float]:
        t = (t_ns - self.start_ns) / 1e9
        # Presentations long over are let go (time runs forward); the last stays for its light.
        while len(self.events) > 1 and self.events[0].end_s < t - self.KEEP_PAST_S:
            del self.events[0]
        lit_by: Scene | None = None
        for i, event in enumerate(self.events):
            if t < event.start_s:
                lit_by = lit_by or event.scene
                break
            if t < event.end_s:
                if event.scene.seed not in self._arrived:  # guided or answered, still one shopper
                    self._arrived.add(event.scene.seed)
                    self.presented[event.scene.kind] += 1
                return event.scene, t - event.start_s
            if event.scene.objects:  # over: only its light is still needed, not its surfaces
                self.events[i] = Event(event.start_s, event.dwell_s, _light_of(event.scene))
            lit_by = self.events[i].scene
        if lit_by is None:
            return None, t
        return _light_of(lit_by), t

    @property
    def duration_s(self) -> float:
        return max((e.end_s for e in self.events), default=0.0)

    #: a shopper sees the light and starts to take the hand away this long after the answer
    REACTION_S = 0.4

    def answered(self, t_ns: int) -> None:
        with self._lock:
            self._answered(t_ns)

    def _answered(self, t_ns: int) -> None:
        """The scanner answered at ``t_ns``: whoever is presenting leaves now, not at the end of their
        patience (shoppers hold their hand out until the light says they are done). Later
        presentations move by the same amount, keeping the gaps between shoppers."""
        t = (t_ns - self.start_ns) / 1e9
        for i, event in enumerate(self.events):
            if event.start_s <= t < event.start_s + event.dwell_s:
                dwell = t - event.start_s + self.REACTION_S
                shift = dwell - event.dwell_s
                self.events[i] = Event(event.start_s, dwell, _leaving_at(event.scene, dwell))
                for j in range(i + 1, len(self.events)):
                    e = self.events[j]
                    self.events[j] = e.later(shift)
                return

    #: how far a shopper moves the hand when the light says too close or too far, mm
    GUIDED_STEP_MM = 35.0
    #: a shopper takes this long to see the light and start moving, s
    GUIDED_DELAY_S = 0.5
    #: where a guided hand ends up at most: not nearer than this, not farther, mm
    GUIDED_RANGE_MM = (70.0, 220.0)

    def guided(self, t_ns: int, reasons: list[str]) -> None:
        with self._lock:
            self._guided(t_ns, reasons)

    def _guided(self, t_ns: int, reasons: list[str]) -> None:
        """The scanner asked the presenting shopper to move: nearer or farther, as the light said.

        One move at a time: a shopper does not start another before the last has settled.
        Attackers comply just the same (a print is held by a hand too).
        """
        dz = (self.GUIDED_STEP_MM if "too_close" in reasons else 0.0) - (
            self.GUIDED_STEP_MM if "too_far" in reasons else 0.0
        )
        if not dz:
            return
        t = (t_ns - self.start_ns) / 1e9
        for i, event in enumerate(self.events):
            if event.start_s <= t < event.start_s + event.dwell_s:
                local = t - event.start_s + self.GUIDED_DELAY_S
                objects = []
                for o in event.scene.objects:
                    last = o.motion.moves[-1][0] if o.motion.moves else -1e9
                    if local - last < Motion.MOVE_S + self.GUIDED_DELAY_S:
                        return
                    # Nobody puts a hand on the glass or walks away from the till.
                    z = o.pose_at(local).z
                    step = min(max(z + dz, self.GUIDED_RANGE_MM[0]), self.GUIDED_RANGE_MM[1]) - z
                    if abs(step) < 5.0:
                        return
                    moves = (*o.motion.moves, (local, 0.0, 0.0, step))
                    objects.append(replace(o, motion=replace(o.motion, moves=moves)))
                self.events[i] = Event(
                    event.start_s, event.dwell_s, replace(event.scene, objects=tuple(objects))
                )
                return


def _light_of(scene: Scene) -> Scene:
    """The empty scene under a presentation's light."""
    return Scene(
        kind="empty",
        seed=scene.seed,
        objects=(),
        ambient=scene.ambient,
        background=scene.background,
        condition=scene.condition,
    )


def _leaving_at(scene: Scene, t_s: float) -> Scene:
    objects = tuple(replace(o, motion=replace(o.motion, leave_at_s=t_s)) for o in scene.objects)
    return replace(scene, objects=objects)


def shoppers(
    seed: int,
    count: int,
    *,
    attack_share: float = 0.25,
    kinds: tuple[str, ...] | None = None,
    first_at_s: float = 1.0,
    condition: str | None = None,
    interactive: bool = False,
) -> list[Event]:
    """``count`` presentations: mostly shoppers' palms, some attacks, with gaps between.

    ``interactive``: shoppers hold their hand out until the scanner answers (up to their
    patience, 8 to 12 s); the caller tells the scenario when it answered.
    """
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
        # Patience: how long this shopper holds the hand out at most; an answer sends it away sooner
        # (Scenario.answered).
        dwell = float(rng.uniform(8.0, 12.0)) if interactive else float(rng.uniform(2.0, 4.0))
        scene = functools.partial(
            make_scene,
            kind,
            seed * 100_003 + i,
            motion="approach",
            leave_after_s=dwell,
            condition=condition,
            light_seed=seed,
        )
        events.append(Event(t, dwell, scene))  # built when the scenario reaches it
        t += dwell + Event.LEAVING_S + float(rng.uniform(0.8, 2.5))
    return events
