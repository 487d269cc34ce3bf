"""Surfaces that can be held over the scanner: a hand, prints, screens, a fake hand, a grey card.

Each surface is a set of maps on a local grid (millimetres, origin at the
object's centre, +v toward the fingers): height toward the camera, the unit
normal (facing the camera), NIR albedo, emitted radiance and coverage. The
renderer places the grid in space with a pose. Everything is drawn from a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

MM_PER_PX = 0.5  # map resolution: 2 samples per millimetre
#: the random stream a person's palm is drawn from (with their identity number), apart from any
#: scene seed's
IDENTITY_STREAM = 0x1D


@dataclass(frozen=True, eq=False)
class Surface:
    kind: str
    height: np.ndarray  # mm toward the camera
    normal: np.ndarray  # (H, W, 3) unit, local frame, z toward the scene (so n_z < 0)
    albedo: np.ndarray  # NIR diffuse reflectance 0..1
    mask: np.ndarray  # coverage 0..1
    emission: np.ndarray | None = None  # radiance emitted by itself (a screen)
    halftone_pitch_mm: float = 0.0  # printed dots, rendered per pixel
    halftone_tone: np.ndarray | None = None  # ink coverage 0..1 where halftoned
    ink_albedo: float = 0.0
    facts: dict[str, float] = field(default_factory=dict)

    @property
    def extent_mm(self) -> tuple[float, float]:
        h, w = self.mask.shape
        return w * MM_PER_PX, h * MM_PER_PX


def _grid(width_mm: float, height_mm: float) -> tuple[np.ndarray, np.ndarray]:
    w, h = int(width_mm / MM_PER_PX), int(height_mm / MM_PER_PX)
    u = (np.arange(w, dtype=np.float32) - (w - 1) / 2) * MM_PER_PX
    v = ((h - 1) / 2 - np.arange(h, dtype=np.float32)) * MM_PER_PX  # +v is up the map
    return np.meshgrid(u, v)


def _to_px(u: float, v: float, shape: tuple[int, ...]) -> tuple[int, int]:
    h, w = shape[:2]
    # +v (toward the fingers) is drawn upward on the map: row index falls with v.
    return round(u / MM_PER_PX + (w - 1) / 2), round(-v / MM_PER_PX + (h - 1) / 2)


def normals_from_height(height: np.ndarray) -> np.ndarray:
    """Unit normals facing the camera for a height field on the map grid."""
    # Map rows run against +v, hence the sign on the row derivative.
    dh_du = np.gradient(height, axis=1) / MM_PER_PX
    dh_dv = -np.gradient(height, axis=0) / MM_PER_PX
    # The surface is (u, v, -h); its normal toward the camera is (-dh/du, -dh/dv, -1).
    n = np.stack([-dh_du, -dh_dv, -np.ones_like(height)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return n.astype(np.float32)


def _blur_mm(img: np.ndarray, sigma_mm: float) -> np.ndarray:
    if sigma_mm <= 0:
        return img
    s = sigma_mm / MM_PER_PX
    return cv2.GaussianBlur(img, (0, 0), s, borderType=cv2.BORDER_REFLECT)


def _curve(
    rng: np.random.Generator, p0: tuple[float, float], p1: tuple[float, float], bend: float, n: int = 24
) -> np.ndarray:
    """A smooth curve from p0 to p1 bowed sideways by ``bend`` mm (quadratic Bezier)."""
    a, b = np.array(p0), np.array(p1)
    mid = (a + b) / 2
    d = b - a
    perp = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
    c = mid + perp * bend + rng.normal(0, 1.5, 2)
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t**2 * b


def _polyline(img: np.ndarray, pts_mm: np.ndarray, width_mm: float, value: float = 1.0) -> None:
    px = np.array([_to_px(float(u), float(v), img.shape) for u, v in pts_mm], dtype=np.int32)
    thick = max(1, round(width_mm / MM_PER_PX))
    cv2.polylines(img, [px], False, value, thick, cv2.LINE_AA)


@dataclass(frozen=True)
class HandShape:
    """The parameters of one hand, drawn from a seed."""

    palm_w: float
    palm_l: float
    finger_len: float
    finger_w: float
    spread_deg: float
    openness: float  # 1 = flat open hand, toward 0 = fingers curled
    left: bool
    albedo: float
    vein_depth: float
    vein_sigma_mm: float
    crease_depth: float
    #: how far 940 nm light spreads in the dermis before it leaves the skin (a Gaussian sigma)
    scatter_mm: float = 0.8

    @classmethod
    def random(cls, rng: np.random.Generator, *, openness: float | None = None) -> HandShape:
        return cls(
            palm_w=float(rng.uniform(72, 94)),
            palm_l=float(rng.uniform(86, 108)),
            finger_len=float(rng.uniform(70, 88)),
            finger_w=float(rng.uniform(14, 17.5)),
            spread_deg=float(rng.uniform(5, 16)),
            openness=float(rng.uniform(0.9, 1.0)) if openness is None else openness,
            left=bool(rng.random() < 0.5),
            # Skin's NIR albedo runs from about 0.35 (dark skin, 850 nm) to 0.7 (light skin, 940 nm);
            # the veins' contrast with their depth under the skin and the blood's absorption.
            albedo=float(rng.uniform(0.35, 0.7)),
            vein_depth=float(rng.uniform(0.06, 0.22)),
            vein_sigma_mm=float(rng.uniform(1.0, 2.0)),
            crease_depth=float(rng.uniform(0.08, 0.16)),
            scatter_mm=float(rng.uniform(0.5, 1.3)),
        )


def _hand_geometry(
    shape: HandShape,
    rng: np.random.Generator,
    u: np.ndarray,
    v: np.ndarray,
    pose_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, tuple[float, float]]]:
    """Masks and height of palm, wrist, thumb and fingers; returns (mask, height, palm_mask, marks).
    ``rng`` draws what belongs to the hand (its relief), ``pose_rng`` (default ``rng``) how it is
    held this time (the thumb's angle, each finger's)."""
    pose_rng = rng if pose_rng is None else pose_rng
    a, b = shape.palm_w / 2, shape.palm_l / 2
    side = -1.0 if shape.left else 1.0  # the thumb is on +u for a right palm seen from below
    palm = ((np.abs(u) / a) ** 3 + (np.abs(v) / b) ** 3 <= 1.0).astype(np.float32)
    body = palm.copy()
    # Wrist: a band running off the map below the palm.
    wrist = ((np.abs(u) < a * 0.82) & (v < -b * 0.5)).astype(np.float32)
    body = np.maximum(body, wrist)
    thumb = np.zeros_like(body)
    t_base = (side * a * 0.72, -b * 0.35)
    t_ang = math.radians(pose_rng.uniform(40, 62))
    t_len = shape.finger_len * rng.uniform(0.7, 0.8) * (0.55 + 0.45 * shape.openness)
    t_tip = (t_base[0] + side * math.sin(t_ang) * t_len, t_base[1] + math.cos(t_ang) * t_len)
    _polyline(thumb, np.array([t_base, t_tip]), shape.finger_w * 1.25)
    fingers = np.zeros_like(body)
    finger_h = np.zeros_like(body)
    rel_len = (0.86, 1.0, 0.93, 0.74)
    marks: dict[str, tuple[float, float]] = {"thumb_base": t_base}
    for i in range(4):
        x0 = side * a * (0.72 - 0.48 * i)  # index finger next to the thumb
        base = (x0, b * 0.88)
        ang = math.radians(shape.spread_deg * (1.5 - i) * side * -1 + pose_rng.normal(0, 1.5))
        length = shape.finger_len * rel_len[i] * shape.openness
        tip = (base[0] + math.sin(ang) * length, base[1] + math.cos(ang) * length)
        width = shape.finger_w * (0.85 if i == 3 else 1.0)
        one = np.zeros_like(body)
        _polyline(one, np.array([base, tip]), width)
        fingers = np.maximum(fingers, one)
        # Curled fingers rise toward the lens along their length.
        along = (u - base[0]) * math.sin(ang) + (v - base[1]) * math.cos(ang)
        along = np.clip(along / max(length, 1), 0, 1)
        finger_h = np.maximum(finger_h, one * along * (1 - shape.openness) * 60)
        marks[f"finger{i}_base"] = base
        marks[f"finger{i}_tip"] = tip
    mask_body = np.maximum(body, thumb)

    # Height: a rounded rim (circular profile) of radius r from the outline inward.
    def rounded(m: np.ndarray, r_mm: float) -> np.ndarray:
        d = cv2.distanceTransform((m > 0.5).astype(np.uint8), cv2.DIST_L2, 5) * MM_PER_PX
        x = np.clip(d / r_mm, 0, 1)
        return (r_mm * np.sqrt(1 - (1 - x) ** 2)).astype(np.float32)

    h_body = rounded(mask_body, 13.0)
    # Fingers lie level with the palm (a hand is about as thick at the knuckles), curled ones rise.
    h_fing = (
        rounded(fingers, shape.finger_w / 2)
        + (13.0 - shape.finger_w / 2) * (fingers > 0.5)
        + finger_h * (fingers > 0.5)
    )

    # Relief of the palm: thenar and hypothenar eminences, the hollow, the finger pads.
    def bump(cu: float, cv: float, s: float, amp: float) -> np.ndarray:
        return (amp * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * s * s))).astype(np.float32)

    relief = (
        bump(side * a * 0.5, -b * 0.35, 16, rng.uniform(4, 7))
        + bump(-side * a * 0.55, -b * 0.3, 14, rng.uniform(2.5, 4.5))
        + bump(0, b * 0.1, 18, -rng.uniform(2, 4))
        + sum(
            (bump(side * a * (0.72 - 0.48 * i), b * 0.78, 7, rng.uniform(1.5, 2.5)) for i in range(4)),
            np.zeros_like(u),
        )
    )
    height = np.maximum(h_body + relief * (h_body > 3), h_fing)
    mask = np.maximum(mask_body, fingers)
    return mask, height.astype(np.float32), palm, marks


def _veins(rng: np.random.Generator, shape: HandShape, grid_shape: tuple[int, ...]) -> np.ndarray:
    """A branching vein network, growing from the wrist toward the fingers."""
    img = np.zeros(grid_shape, np.float32)
    a, b = shape.palm_w / 2, shape.palm_l / 2
    stack = []
    for _ in range(rng.integers(2, 4)):
        stack.append(
            (
                float(rng.uniform(-a * 0.6, a * 0.6)),
                -b * 1.4,
                math.radians(rng.normal(0, 12)),
                float(rng.uniform(2.4, 3.4)),
                0,
            )
        )
    segments = 0
    while stack and segments < 400:
        x, y, ang, w, depth = stack.pop()
        pts = [(x, y)]
        for _ in range(int(rng.integers(6, 14))):
            ang += rng.normal(0, 0.22)
            step = rng.uniform(3.5, 6.0)
            x, y = x + math.sin(ang) * step, y + math.cos(ang) * step
            pts.append((x, y))
            if abs(x) > a * 1.05 or y > b * 1.15:
                break
        segments += 1
        _polyline(img, np.array(pts), w, 1.0)
        if y < b * 1.1 and abs(x) < a and w > 1.0 and depth < 6:
            for _ in range(1 if rng.random() < 0.45 else 2):
                stack.append((x, y, ang + rng.normal(0, 0.55), w * rng.uniform(0.62, 0.85), depth + 1))
    return img


def _creases(
    rng: np.random.Generator,
    shape: HandShape,
    marks: dict[str, tuple[float, float]],
    grid_shape: tuple[int, ...],
) -> np.ndarray:
    """Principal palm lines, minor creases and finger joints (1 on a crease)."""
    img = np.zeros(grid_shape, np.float32)
    a, b = shape.palm_w / 2, shape.palm_l / 2
    s = -1.0 if shape.left else 1.0

    def j(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    lines = [
        # heart line: from the little-finger edge toward the index finger
        ((-s * a * 0.95, b * j(0.35, 0.5)), (s * a * j(0.2, 0.5), b * j(0.6, 0.8)), j(4, 10)),
        # head line: from the thumb-index gap across the palm
        ((s * a * 0.8, b * j(0.3, 0.45)), (-s * a * j(0.5, 0.9), b * j(-0.1, 0.15)), j(-6, 6)),
        # life line: around the thenar eminence
        ((s * a * 0.78, b * j(0.25, 0.4)), (s * a * j(0.05, 0.3), -b * 0.95), s * j(10, 18)),
    ]
    for p0, p1, bend in lines:
        _polyline(img, _curve(rng, p0, p1, bend), j(0.7, 1.1), 1.0)
    for _ in range(int(rng.integers(8, 18))):
        p0 = (j(-a * 0.8, a * 0.8), j(-b * 0.8, b * 0.8))
        ang, ln = j(0, math.pi), j(6, 22)
        p1 = (p0[0] + math.cos(ang) * ln, p0[1] + math.sin(ang) * ln)
        _polyline(img, _curve(rng, p0, p1, j(-3, 3), 10), j(0.4, 0.6), j(0.3, 0.6))
    for i in range(4):
        bx, by = marks[f"finger{i}_base"]
        tx, ty = marks[f"finger{i}_tip"]
        for frac in (0.08, 0.42, 0.72):
            cxp, cyp = bx + (tx - bx) * frac, by + (ty - by) * frac
            dx, dy = ty - by, -(tx - bx)
            n = math.hypot(dx, dy) + 1e-9
            hw = shape.finger_w * 0.45
            _polyline(
                img,
                np.array([(cxp - dx / n * hw, cyp - dy / n * hw), (cxp + dx / n * hw, cyp + dy / n * hw)]),
                0.8,
                0.8,
            )
    return img


def _skin_texture(
    rng: np.random.Generator, grid_shape: tuple[int, ...], fine: float, coarse: float
) -> np.ndarray:
    n1 = _blur_mm(rng.normal(0, 1, grid_shape).astype(np.float32), 0.5)
    n2 = _blur_mm(rng.normal(0, 1, grid_shape).astype(np.float32), 5.0)
    n1 *= fine / (n1.std() + 1e-9)
    n2 *= coarse / (n2.std() + 1e-9)
    return (1 + n1 + n2).astype(np.float32)


def hand(
    seed: int,
    *,
    openness: float | None = None,
    veins: bool = True,
    fake: bool = False,
    shape: HandShape | None = None,
    identity: int | None = None,
) -> Surface:
    """A live palm (or, with ``fake``, a vein-less silicone cast of one).

    With ``identity``, the palm is that person's: its outline's proportions, relief, vein
    networks, creases and skin come from the identity's own streams, and only how it is held
    this time (finger spread, openness, the thumb's and fingers' angles) from ``seed``. Without,
    everything comes from ``seed`` as it always has (a new person each seed)."""
    rng = np.random.default_rng(seed)
    pose_rng = rng
    vein_seed: int | list[int] = [seed, 31]
    if identity is not None:
        rng = np.random.default_rng([identity, IDENTITY_STREAM])
        vein_seed = [identity, IDENTITY_STREAM, 31]
    shape = shape or HandShape.random(rng, openness=openness)
    if identity is not None:
        # a hand is spread and opened a little differently each time it is held out
        shape = replace(
            shape,
            spread_deg=float(np.clip(shape.spread_deg + pose_rng.normal(0, 2.0), 4, 18)),
            openness=float(pose_rng.uniform(0.9, 1.0)) if openness is None else openness,
        )
    u, v = _grid(260, 300)
    mask, height, _palm, marks = _hand_geometry(shape, rng, u, v, pose_rng)
    creases = _creases(rng, shape, marks, mask.shape)
    if fake:
        # Silicone: brighter, uniform, light spreads far in it; creases survive the mould faintly.
        base = float(rng.uniform(0.62, 0.8))
        albedo = base * _skin_texture(rng, mask.shape, 0.01, 0.015)
        albedo *= 1 - 0.5 * shape.crease_depth * _blur_mm(creases, 0.6)
        albedo = _blur_mm(albedo, float(rng.uniform(1.5, 2.5)))
        kind = "fake_hand"
    else:
        albedo = shape.albedo * _skin_texture(rng, mask.shape, 0.02, 0.04)
        if veins:
            # Two networks: one drawn with the hand, one from a stream of its own (so that adding
            # it changed no other draw), because one alone left some palms' middles bare.
            net = np.maximum(
                _veins(rng, shape, mask.shape), _veins(np.random.default_rng(vein_seed), shape, mask.shape)
            )
            vmap = _blur_mm(net, shape.vein_sigma_mm)
            albedo *= 1 - shape.vein_depth * vmap
        # 940 nm light scatters up to a millimetre or more in the dermis before it leaves the skin.
        albedo = _blur_mm(albedo, shape.scatter_mm)
        albedo *= 1 - shape.crease_depth * _blur_mm(creases, 0.3)
        kind = "hand"
    height = height - 0.4 * _blur_mm(creases, 0.4)  # creases are grooves
    height = _blur_mm(height, 0.6)
    soft = _blur_mm(mask, 0.4)
    return Surface(
        kind=kind,
        height=height,
        normal=normals_from_height(height),
        albedo=np.clip(albedo, 0.01, 0.95).astype(np.float32),
        mask=soft,
        facts={
            "palm_w": shape.palm_w,
            "palm_l": shape.palm_l,
            "left": float(shape.left),
            "openness": shape.openness,
            "skin_albedo": shape.albedo,
            "vein_depth": shape.vein_depth if veins and not fake else 0.0,
            "scatter_mm": shape.scatter_mm,
        },
    )


def _photo_of(seed: int, veins: bool) -> tuple[Surface, np.ndarray]:
    """A palm photograph as an attacker would print it: reflectance with shading baked in."""
    src = hand(seed, veins=veins)
    shade = np.clip(-src.normal[..., 2], 0, 1) ** 1.5  # frontal light
    tone = src.albedo * shade * src.mask
    tone = tone / (np.percentile(tone[src.mask > 0.5], 99) + 1e-6)
    return src, np.clip(tone, 0, 1).astype(np.float32)


def flat_print(seed: int, *, veins: bool, curvature_mm: float = 0.0) -> Surface:
    """A palm printed on paper, cut out or on a sheet; bent into a cylinder if curvature_mm."""
    rng = np.random.default_rng(seed)
    src, tone = _photo_of(seed + 7919, veins)
    h, w = tone.shape
    cut_out = rng.random() < 0.5
    if cut_out:
        mask = (src.mask > 0.5).astype(np.float32)
    else:
        mask = np.zeros_like(tone)
        ph, pw = int(min(h, 297 / MM_PER_PX)), int(min(w, 210 / MM_PER_PX))
        y0, x0 = (h - ph) // 2, (w - pw) // 2
        mask[y0 : y0 + ph, x0 : x0 + pw] = 1.0
    paper = float(rng.uniform(0.72, 0.86))
    # Carbon toner absorbs NIR; many dye inks barely do.
    ink = float(rng.uniform(0.06, 0.12) if rng.random() < 0.7 else rng.uniform(0.35, 0.55))
    # Coverage follows the photo; the paper shows through white.
    coverage = np.clip(1 - tone, 0, 1)
    coverage = np.where(mask > 0, coverage, 0.0).astype(np.float32)
    fibre = _skin_texture(rng, tone.shape, 0.015, 0.01)
    albedo = paper * fibre
    u, v = _grid(w * MM_PER_PX, h * MM_PER_PX)
    if curvature_mm:
        ang = rng.uniform(0, math.pi)
        x = u * math.cos(ang) + v * math.sin(ang)
        r = curvature_mm
        sign = 1.0 if rng.random() < 0.6 else -1.0  # bowed toward the lens or away
        height = sign * (np.sqrt(np.maximum(r * r - x * x, 0)) - r)
        height = np.where(np.abs(x) < r, height, -sign * r).astype(np.float32)
        kind = "print_curved"
    else:
        height = np.zeros_like(tone)
        kind = "print_flat_veins" if veins else "print_flat"
    return Surface(
        kind=kind,
        height=height,
        normal=normals_from_height(height),
        albedo=albedo.astype(np.float32),
        mask=_blur_mm(mask, 0.2),
        halftone_pitch_mm=float(rng.uniform(0.17, 0.42)),
        halftone_tone=coverage,
        ink_albedo=ink,
        facts={"paper": paper, "ink": ink, "cut_out": float(cut_out)},
    )


def screen(seed: int) -> Surface:
    """A phone or tablet replaying a palm: dark glass that emits almost no NIR."""
    rng = np.random.default_rng(seed)
    _src, tone = _photo_of(seed + 104729, True)
    h, w = tone.shape
    tablet = rng.random() < 0.4
    sw, sh = (150.0, 220.0) if tablet else (72.0, 150.0)
    bezel = 4.0
    u, v = _grid(w * MM_PER_PX, h * MM_PER_PX)
    body = ((np.abs(u) <= sw / 2 + bezel) & (np.abs(v) <= sh / 2 + bezel)).astype(np.float32)
    active = ((np.abs(u) <= sw / 2) & (np.abs(v) <= sh / 2)).astype(np.float32)
    # The picture on the screen: the palm photo scaled to fit the display.
    scale = min(sw / (w * MM_PER_PX * 0.7), sh / (h * MM_PER_PX * 0.7), 1.0)
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0, scale)
    shown = cv2.warpAffine(tone, m, (w, h), flags=cv2.INTER_LINEAR) * active
    leak = float(rng.uniform(0.003, 0.015))  # backlight NIR leak: under 3 % of lit skin
    emission = (shown * leak).astype(np.float32)
    # A display's black matrix and anti-reflection coating return 1-3 % of NIR, diffusely.
    glass = float(rng.uniform(0.01, 0.03))
    albedo = np.where(active > 0, glass, 0.04).astype(np.float32)
    height = np.zeros_like(tone)
    return Surface(
        kind="screen",
        height=height,
        normal=normals_from_height(height),
        albedo=albedo,
        mask=body,
        emission=emission,
        facts={"tablet": float(tablet), "glass": glass, "leak": leak},
    )


def grey_card(albedo: float = 0.5, size_mm: float = 400.0) -> Surface:
    """A matte grey card, large enough to fill the view at calibration distance."""
    u, _ = _grid(size_mm, size_mm)
    height = np.zeros_like(u)
    return Surface(
        kind="card",
        height=height,
        normal=normals_from_height(height),
        albedo=np.full_like(u, albedo),
        mask=np.ones_like(u),
        facts={"albedo": albedo},
    )


def lens_cap(size_mm: float = 200.0) -> Surface:
    """A cap or dark cloth over the window: nothing reaches the lens."""
    return replace(grey_card(0.0, size_mm), kind="cap", facts={})


#: the focus and scale target: a matte white card with a black square of this side at its centre
TARGET_SQUARE_MM = 60.0
TARGET_WHITE, TARGET_BLACK = 0.85, 0.04


def focus_target(size_mm: float = 400.0, square_mm: float = TARGET_SQUARE_MM) -> Surface:
    """The focus and scale target: sharp edges to focus on, a square of known size to measure."""
    u, v = _grid(size_mm, size_mm)
    height = np.zeros_like(u)
    half = square_mm / 2
    inside = (np.abs(u) <= half) & (np.abs(v) <= half)
    return Surface(
        kind="target",
        height=height,
        normal=normals_from_height(height),
        albedo=np.where(inside, TARGET_BLACK, TARGET_WHITE).astype(np.float32),
        mask=np.ones_like(u),
        facts={"square_mm": square_mm},
    )
