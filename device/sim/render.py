"""Light transport of the simulated scanner: from a scene and the LED levels to radiance.

For each pixel the ray is intersected with every surface (a height field on a
posed plane), then each LED sector lights the point with inverse-square
fall-off, its beam profile and Lambertian shading. Ambient light and a
screen's own emission are added, the result is defocused for the object's
distance and smeared by its motion during the exposure.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from device.sim.optics import LED_INTENSITY, Optics
from device.sim.scene import FLOOD_SKIN_RADIANCE, Placed, Scene
from device.sim.surfaces import MM_PER_PX, Surface

#: the sharpest the lens and the ISP's scaling get, as a Gaussian sigma in pixels
LENS_BLUR_PX = 0.7


@dataclass(frozen=True, eq=False)
class Geometry:
    """What each pixel sees: a point, its normal and reflectance, or nothing.

    Vectors are kept as separate float32 planes (x, y, z), which numpy handles
    far faster than interleaved (H, W, 3) arrays.
    """

    points: tuple[np.ndarray, np.ndarray, np.ndarray]  # mm
    normal: tuple[np.ndarray, np.ndarray, np.ndarray]  # unit, camera frame
    albedo: np.ndarray  # (H, W)
    emission: np.ndarray  # (H, W) radiance
    cover: np.ndarray  # (H, W) 0..1: how much of the pixel an object fills
    distance_mm: float  # median depth of what is covered (inf if nothing)
    velocity_px_s: tuple[float, float]  # image motion of the nearest object
    anchor: tuple[float, float, float] | None = None  # nearest object's position (mm)


def _lookup(surface: Surface, u: np.ndarray, v: np.ndarray, maps: np.ndarray) -> np.ndarray:
    h, w = surface.mask.shape
    mx = u * (1 / MM_PER_PX) + (w - 1) / 2
    my = v * (-1 / MM_PER_PX) + (h - 1) / 2
    return cv2.remap(maps, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


#: rows ray-cast and shaded at a time: the temporaries of a whole 640 x 480 frame would be
#: some twenty float planes (30 MB) at once; a band's are a fifth of that
BAND_ROWS = 96


def _bands(height: int) -> list[tuple[int, int]]:
    return [(r, min(r + BAND_ROWS, height)) for r in range(0, height, BAND_ROWS)]


def _intersect(placed: Placed, t: float, rx: np.ndarray, ry: np.ndarray) -> tuple[np.ndarray, ...]:
    """Local (u, v) and ray distance s (= depth z) for one posed height field, along rays (rx, ry, 1)."""
    pose = placed.pose_at(t)
    rot = pose.rotation()
    tx, ty, tz = float(pose.x), float(pose.y), float(pose.z)
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = rot.tolist()
    denom = rx * r02 + ry * r12 + r22
    denom[np.abs(denom) < 1e-3] = 1e-3
    tn = tx * r02 + ty * r12 + tz * r22
    # local u = column 0 of rot . (s * ray - T); v likewise: linear in s.
    au, bu = rx * r00 + ry * r10 + r20, -(tx * r00 + ty * r10 + tz * r20)
    av, bv = rx * r01 + ry * r11 + r21, -(tx * r01 + ty * r11 + tz * r21)
    height = placed.surface.height
    s = tn / denom
    for _ in range(2):  # fixed point: the height where the ray meets the surface
        u, v = au * s + bu, av * s + bv
        s = (tn - _lookup(placed.surface, u, v, height)) / denom
    u, v = au * s + bu, av * s + bv
    return u, v, s, rot


def _halftone(surface: Surface, u: np.ndarray, v: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """Fraction of each pixel covered by printed dots (a 45-degree AM screen, 2x2 samples)."""
    p = surface.halftone_pitch_mm
    du_x, du_y = np.gradient(u, axis=1), np.gradient(u, axis=0)
    dv_x, dv_y = np.gradient(v, axis=1), np.gradient(v, axis=0)
    inked = np.zeros_like(u)
    k = 2 * math.pi / p / math.sqrt(2)
    threshold = 1 - coverage
    for ox, oy in ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)):
        uu = u + du_x * ox + du_y * oy
        vv = v + dv_x * ox + dv_y * oy
        screen = 0.25 * (2 + np.cos(k * (uu + vv)) + np.cos(k * (vv - uu)))
        inked += screen > threshold
    return inked * 0.25


def nearest(scene: Scene, t: float) -> Placed:
    """The object nearest the lens at time t (the first of equals): it sets focus and motion."""
    return min(scene.objects, key=lambda o: o.pose_at(t).z)


def geometry(scene: Scene, t: float, optics: Optics) -> Geometry:
    """Ray-cast every object of the scene at time t (seconds since the scene began)."""
    hw = (optics.height, optics.width)
    px, py, pz = (np.zeros(hw, np.float32) for _ in range(3))
    nx, ny = np.zeros(hw, np.float32), np.zeros(hw, np.float32)
    nz = np.full(hw, -1.0, np.float32)
    albedo = np.zeros(hw, np.float32)
    emission = np.zeros(hw, np.float32)
    cover = np.zeros(hw, np.float32)
    depth = np.full(hw, np.inf, np.float32)
    # Far to near, so nearer objects cover farther ones.
    order = sorted(scene.objects, key=lambda o: -o.pose_at(t).z)
    for r0, r1 in _bands(optics.height):
        # One row more on each side where there is one: the halftone's derivatives along the
        # columns are then the same central differences as over the whole frame.
        e0, e1 = max(r0 - 1, 0), min(r1 + 1, optics.height)
        rows = slice(r0 - e0, r0 - e0 + (r1 - r0))
        rx, ry = optics.rays[e0:e1, :, 0], optics.rays[e0:e1, :, 1]
        band = slice(r0, r1)
        for placed in order:
            surf = placed.surface
            u, v, s, rot = _intersect(placed, t, rx, ry)
            stack = [surf.mask, surf.albedo]
            if surf.emission is not None:
                stack.append(surf.emission)
            a = _lookup(surf, u, v, np.dstack(stack))
            alb = a[..., 1]
            if surf.halftone_tone is not None:
                f = _halftone(surf, u, v, _lookup(surf, u, v, surf.halftone_tone))
                alb = alb * (1 - f) + surf.ink_albedo * f
            ln = _lookup(surf, u[rows], v[rows], surf.normal)
            lx, ly, lz = ln[..., 0], ln[..., 1], ln[..., 2]
            s = s[rows]
            c = np.where(s > 1.0, a[rows, :, 0], 0).astype(np.float32)
            keep = 1 - c
            px[band] = px[band] * keep + rx[rows] * s * c
            py[band] = py[band] * keep + ry[rows] * s * c
            pz[band] = pz[band] * keep + s * c
            (q00, q01, q02), (q10, q11, q12), (q20, q21, q22) = rot.tolist()
            nx[band] = nx[band] * keep + (q00 * lx + q01 * ly + q02 * lz) * c
            ny[band] = ny[band] * keep + (q10 * lx + q11 * ly + q12 * lz) * c
            nz[band] = nz[band] * keep + (q20 * lx + q21 * ly + q22 * lz) * c
            albedo[band] = albedo[band] * keep + alb[rows] * c
            if surf.emission is not None:
                emission[band] = emission[band] * keep + a[rows, :, 2] * c
            depth[band] = np.where(c > 0.5, s, depth[band])
            cover[band] = cover[band] * keep + c
    lead = nearest(scene, t)
    pose, ahead = lead.pose_at(t), lead.pose_at(t + 0.005)
    velocity = (
        optics.focal_px * (ahead.x - pose.x) / pose.z / 0.005,
        optics.focal_px * (ahead.y - pose.y) / pose.z / 0.005,
    )
    anchor = (pose.x, pose.y, pose.z)
    norm = 1.0 / np.maximum(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-6)
    nx *= norm
    ny *= norm
    nz *= norm
    del norm
    covered = depth[np.isfinite(depth)]
    dist = float(np.median(covered)) if covered.size else math.inf
    return Geometry(
        points=(px, py, pz),
        normal=(nx, ny, nz),
        albedo=albedo,
        emission=emission,
        cover=cover,
        distance_mm=dist,
        velocity_px_s=velocity,
        anchor=anchor,
    )


def sector_radiance(geom: Geometry, optics: Optics, sector_gain: np.ndarray) -> np.ndarray:
    """(n_sectors, H, W): the radiance each sector alone gives at full power."""
    out = np.empty((optics.n_sectors, optics.height, optics.width), np.float32)
    px, py, pz = geom.points
    nx, ny, nz = geom.normal
    leds = optics.led_positions().tolist()
    m = optics.beam_exponent
    for r0, r1 in _bands(optics.height):
        b = slice(r0, r1)
        refl = geom.albedo[b] * geom.cover[b] * (1 / math.pi)
        for k, (lx, ly, lz) in enumerate(leds):
            dx, dy, dz = lx - px[b], ly - py[b], lz - pz[b]  # toward the LED
            r2 = np.maximum(dx * dx + dy * dy + dz * dz, 1.0)
            inv_r = 1.0 / np.sqrt(r2)
            cos_surface = np.maximum((nx[b] * dx + ny[b] * dy + nz[b] * dz) * inv_r, 0)
            cos_beam = np.maximum(-dz * inv_r, 0)
            if m != 1.0:
                cos_beam **= m
            out[k, b] = (
                (LED_INTENSITY * optics.led_power * float(sector_gain[k]))
                * cos_beam
                * cos_surface
                / r2
                * refl
            )
    return out


def ambient_radiance(geom: Geometry, scene: Scene) -> np.ndarray:
    """Light that is there whatever the ring does: the room on the object, the background, a screen."""
    on_object = geom.albedo * scene.ambient_radiance + geom.emission
    return (geom.cover * on_object + (1 - geom.cover) * scene.background).astype(np.float32)


def optical_blur(
    image: np.ndarray,
    geom: Geometry,
    optics: Optics,
    *,
    exposure_s: float,
    focus_shift_mm: float = 0.0,
    smudge: float = 0.0,
) -> np.ndarray:
    """Defocus for the object's distance, motion smear over the exposure, a smudged window."""
    dist = geom.distance_mm if math.isfinite(geom.distance_mm) else 1000.0
    zf = optics.focus_distance_mm + focus_shift_mm
    coc = optics.aperture_mm * optics.focal_px * abs(dist - zf) / (dist * zf)
    sigma = math.hypot(coc / 2.4, LENS_BLUR_PX)
    out = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    vx, vy = geom.velocity_px_s
    length = math.hypot(vx, vy) * exposure_s
    if length > 1.0:
        n = math.ceil(length) | 1
        kernel = np.zeros((n, n), np.float32)
        c = n // 2
        cv2.line(
            kernel,
            (round(c - vx / math.hypot(vx, vy) * c), round(c - vy / math.hypot(vx, vy) * c)),
            (round(c + vx / math.hypot(vx, vy) * c), round(c + vy / math.hypot(vx, vy) * c)),
            1.0,
            1,
        )
        out = cv2.filter2D(out, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REPLICATE)
    if smudge > 0:
        # A greasy window scatters light into a veil and softens detail.
        veil = cv2.GaussianBlur(out, (0, 0), 25, borderType=cv2.BORDER_REPLICATE)
        soft = cv2.GaussianBlur(out, (0, 0), 1 + 3 * smudge, borderType=cv2.BORDER_REPLICATE)
        out = (1 - smudge) * soft + smudge * 0.85 * veil + smudge * 0.15 * float(out.mean())
    return out


#: a greasy window scatters the ring's own light straight back into the lens, whatever is in
#: front: at smudge 1, the full ring's glow is this fraction of skin's radiance at the nominal
#: distance (a clean window: none)
WINDOW_GLOW = 0.4


def window_glow(optics: Optics, levels: np.ndarray, smudge: float) -> np.ndarray:
    """The glow of a smudged window under the ring at ``levels`` ((H, n) per row)."""
    return np.einsum("hk,khw->hw", levels, _glow_patterns(optics)) * np.float32(smudge)


@functools.lru_cache(maxsize=4)
def _glow_patterns(optics: Optics) -> np.ndarray:
    """(n, H, W): each sector's glow, broad and brightest on that sector's side of the frame."""

    xs = (np.arange(optics.width, dtype=np.float32) - optics.cx) / optics.width
    ys = (np.arange(optics.height, dtype=np.float32) - optics.cy) / optics.width
    gx, gy = np.meshgrid(xs, ys)
    out = np.empty((optics.n_sectors, optics.height, optics.width), np.float32)
    for k, (lx, ly, _) in enumerate(optics.led_positions()):
        d = math.hypot(lx, ly) or 1.0
        cx, cy = 0.4 * lx / d, 0.4 * ly / d
        out[k] = np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * 0.35**2))
    peak = float(out.sum(axis=0)[int(optics.cy), int(optics.cx)])
    return out * np.float32(WINDOW_GLOW * FLOOD_SKIN_RADIANCE / peak)


def rolling_skew(image: np.ndarray, geom: Geometry, optics: Optics) -> np.ndarray:
    """Rows read out later see a moving object later: shift each row by its delay."""
    vx, vy = geom.velocity_px_s
    line_s = optics.line_time_ns / 1e9
    if line_s == 0 or math.hypot(vx, vy) * line_s * optics.height < 0.5:
        return image
    rows = (np.arange(optics.height, dtype=np.float32) - optics.cy) * line_s
    xs, ys = np.meshgrid(np.arange(optics.width, dtype=np.float32), rows)
    mx = xs - vx * ys
    my = np.arange(optics.height, dtype=np.float32)[:, None] - vy * ys
    return cv2.remap(image, mx, my.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
