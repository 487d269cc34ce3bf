"""The palm region: segment the hand, find the palm's centre, width and orientation, crop it.

The crop is a square turned so the fingers point up: where the outline shows the valleys
between the fingers, square to the line through them and scaled by their spacing (the
palmprint literature's region of interest, repeatable enough for a matcher); else around the
palm centre, turned by the wrist and scaled so the palm's inscribed circle always has the
same size. The crop, not the frame, is what gets checked and sealed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

CROP_PX = 320
#: the crop's side in units of the palm's inscribed radius
CROP_SIDE_R = 1.5


#: crop pixels per frame pixel (Hand.zoom) of the median palm through the nominal lens at the
#: nominal distance. The finest detail a frame holds is one frame pixel, whatever the lens and the
#: distance: a palm small in the frame is enlarged more in the crop, and its finest detail spreads
#: over more crop pixels (the texture cues and quality's focus widen their bands with it).
NOMINAL_ZOOM = 1.75


@dataclass(frozen=True)
class Hand:
    """Where the hand is in a frame (pixel units of that frame)."""

    small_mask: np.ndarray  # uint8 0/1, the largest blob, at half the frame's resolution
    centre: tuple[float, float]  # palm centre x, y
    radius: float  # palm's inscribed radius
    angle_deg: float  # rotation that puts the fingers up
    fingers: int  # deep notches between spread fingers in the outline
    blobs: int  # large blobs in view (two hands: 2)
    touches_border: bool  # the palm square leaves the frame
    area_fraction: float
    outline_in_view: bool = True  # only the arm leaves the frame, so fingers can be counted
    #: the crop's centre and side (frame pixels) where they differ from the palm circle's: set from
    #: the valleys between the fingers when the outline shows them (see `finger_valleys`)
    crop_centre: tuple[float, float] | None = None
    crop_side: float | None = None

    @cached_property
    def mask(self) -> np.ndarray:
        """The hand's blob at the frame's resolution (uint8 0/1)."""
        h, w = self.small_mask.shape
        return cv2.resize(self.small_mask, (w * 2, h * 2), interpolation=cv2.INTER_NEAREST)

    @property
    def side(self) -> float:
        """The crop's side in frame pixels."""
        return self.crop_side or CROP_SIDE_R * self.radius

    @property
    def zoom(self) -> float:
        """Crop pixels per frame pixel in the normalised crop (CROP_PX wide): over 1, the crop
        is the frame's pixels enlarged, and holds no detail finer than a frame pixel."""
        return CROP_PX / self.side

    def crop_matrix(self, size: int = CROP_PX) -> np.ndarray:
        """Affine map from the frame to the normalised crop (size x size)."""
        centre = self.crop_centre or self.centre
        m = cv2.getRotationMatrix2D(centre, self.angle_deg, size / self.side)
        m[0, 2] += size / 2 - centre[0]
        m[1, 2] += size / 2 - centre[1]
        return m

    def crop(self, frame: np.ndarray, size: int = CROP_PX) -> np.ndarray:
        """The normalised crop of ``frame`` (any frame of the burst): what the scanner seals."""
        m = self.crop_matrix(size)
        return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    #: how far toward the fingers (in palm radii) the frame must hold the hand for its fingers to be
    #: counted: the notches between them, and the circles of 1.5 to 1.9 radii that cross them
    FINGER_REACH_R = 2.0

    def fingers_in_view(self, width: int, height: int) -> bool:
        """Whether the frame holds the hand as far toward its fingers as they are counted: where
        it does not, a count of none says nothing of a closed hand (the fingers left the frame)."""
        # the crop turns the fingers up: in the frame they point the other way by angle_deg
        a = math.radians(self.angle_deg)
        x = self.centre[0] + math.sin(a) * self.FINGER_REACH_R * self.radius
        y = self.centre[1] - math.cos(a) * self.FINGER_REACH_R * self.radius
        return bool(0 <= x < width and 0 <= y < height)

    def roi(self, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The crop's bounding box in frame pixels, [x, y, w, h], clipped to the frame."""
        cx, cy = self.crop_centre or self.centre
        half = self.side / 2 * math.sqrt(2)
        x0 = max(0, int(cx - half))
        y0 = max(0, int(cy - half))
        x1 = min(frame_shape[1], math.ceil(cx + half))
        y1 = min(frame_shape[0], math.ceil(cy + half))
        return x0, y0, x1 - x0, y1 - y0


def segment(lit: np.ndarray, *, min_area_fraction: float = 0.02) -> Hand | None:
    """Find the hand in an image where it is brighter than what lies beyond (the ring's light).

    ``lit`` is 8-bit or float; flood minus ambient is best, a plain NIR frame works.
    """
    # 8-bit frames are reduced as they are (faster); anything else as float.
    img = lit if lit.dtype == np.uint8 else lit.astype(np.float32, copy=False)
    h, w = img.shape
    small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 2).astype(np.float32, copy=False)
    top = _percentile(small[::2, ::2], 99.5)  # a quarter of the pixels: the same level
    if top <= 4:
        return None
    u8 = cv2.convertScaleAbs(small, alpha=255.0 / top)  # scaled, rounded and saturated to 8 bits
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    t = max(t, 40.0)  # a flat, dark scene must not split into "hand" and "background"
    mask = (u8 > t).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    biggest = 1 + int(np.argmax(areas))
    total = small.shape[0] * small.shape[1]
    if areas.max() < min_area_fraction * total:
        return None
    blobs = int(np.sum(areas > 0.25 * areas.max()))
    hand = (labels == biggest).astype(np.uint8)
    hand = cv2.morphologyEx(hand, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    dist = cv2.distanceTransform(hand, cv2.DIST_L2, 5)
    # The palm is the widest part; its centre, where the inscribed circle is largest.
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    r = float(dist[cy, cx])
    if r < 6:
        return None
    angle, _, _ = _orientation(hand, (float(cx), float(cy)), r)
    if digits_point(hand, (float(cx), float(cy)), r, angle) < 0:
        angle = (angle + 360.0) % 360.0 - 180.0  # the wrist's arc was the fingers running off the frame
    # Two hands that touch make one blob with two palms: where the blob is wider than 0.6 of the
    # palm's inscribed circle, it falls apart into one place per palm (fingers, thumbs and the
    # contact between hands are narrower), each widening to over 0.8 of it. (These are the parts
    # an opening by a disk of 0.6 r would keep.) Simulated: 24 of 30 touching pairs found, none
    # of 140 single hands, prints and fakes split; side by side along the whole palm stays one.
    n_wide, parts = cv2.connectedComponents((dist > 0.6 * r).view(np.uint8))
    if n_wide > 2:
        palms = sum(float(dist[parts == i].max()) > 0.8 * r for i in range(1, n_wide))
        blobs += max(palms - 1, 0)
    traced = outline(hand)
    fingers = _finger_gaps(traced, r)
    crop_centre, crop_side = None, None
    valleys = finger_valleys(hand, (float(cx), float(cy)), r, traced)
    if valleys is not None:
        angle, crop_centre, crop_side = _aligned(valleys, (float(cx), float(cy)))
    # The whole outline is in view when only the arm crosses the frame's edge: one stretch of it.
    edge = np.concatenate([hand[0, :], hand[:, -1], hand[-1, ::-1], hand[::-1, 0]]).astype(np.int8)
    runs = int(np.sum(np.diff(np.concatenate([edge, edge[:1]])) == 1))
    outline_in_view = runs <= 1 and float(edge.sum()) <= 2.2 * r
    centre = (cx * 2.0 + 0.5, cy * 2.0 + 0.5)
    radius = r * 2.0
    half = CROP_SIDE_R * radius / 2
    touches = bool(
        centre[0] - half < 0 or centre[1] - half < 0 or centre[0] + half > w or centre[1] + half > h
    )
    return Hand(
        small_mask=hand,
        centre=centre,
        radius=radius,
        angle_deg=angle,
        fingers=fingers,
        blobs=blobs,
        touches_border=touches,
        area_fraction=float(areas.max()) / total,
        outline_in_view=outline_in_view,
        crop_centre=crop_centre,
        crop_side=crop_side,
    )


def _percentile(img: np.ndarray, q: float) -> float:
    """numpy's default (linear) percentile, by partial sorting: a fraction of the time."""
    v = img.ravel()
    pos = q / 100 * (v.size - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, v.size - 1)
    part = np.partition(v, [lo, hi])
    return float(part[lo] + (pos - lo) * (part[hi] - part[lo]))


_CIRCLE_N = 180
_CIRCLE_ANGLES = np.linspace(0, 2 * np.pi, _CIRCLE_N, endpoint=False)
_CIRCLE_K = np.array([[1.5], [1.7], [1.9]])  # radii of the circles, in palm radii
#: where a palm near the lens leaves less than NEAR_SEEN of those circles in the frame (what lies
#: beyond counts as hand, so the arc the frame's edge cuts is the widest, turned toward that edge):
#: circles just past the palm's sides, which cross the palm's far end, the wrist and the thumb. On
#: 200 simulated presentations (identities 1..50), the axis was over 8 degrees off on 11 (22 with
#: the outer circles alone), 90 % within 4.8 degrees (8.3).
_NEAR_K = np.array([[1.15], [1.25]])
NEAR_SEEN = 0.9
_CIRCLE_COS, _CIRCLE_SIN = np.cos(_CIRCLE_ANGLES), np.sin(_CIRCLE_ANGLES)


def _orientation(
    mask: np.ndarray, centre: tuple[float, float], r: float, ks: np.ndarray = _CIRCLE_K
) -> tuple[float, int, float]:
    """Angle that turns the fingers up, how many fingers stand out, and how much of the ring was seen.

    On circles of 1.5 to 1.9 r around the palm the fingers cross as several narrow
    arcs and the wrist (or the arm running off the frame) as the widest one; the
    fingers lie opposite the wrist.
    """
    n, angles = _CIRCLE_N, _CIRCLE_ANGLES
    best: tuple[float, int, float] = (0.0, 0, 0.0)
    # The three circles sampled at once: (3, n) points.
    fx = centre[0] + r * ks * _CIRCLE_COS
    fy = centre[1] + r * ks * _CIRCLE_SIN
    seen_all = (fx >= 0) & (fx < mask.shape[1]) & (fy >= 0) & (fy < mask.shape[0])
    xs = np.clip(fx.astype(int), 0, mask.shape[1] - 1)
    ys = np.clip(fy.astype(int), 0, mask.shape[0] - 1)
    # Off the frame counts as hand for finding the wrist (the arm runs on), not for fingers.
    inside_all = (mask[ys, xs] > 0) | ~seen_all
    # 180 samples a circle: plain lists walk them faster than numpy calls would.
    for seen, inside in zip(seen_all.tolist(), inside_all.tolist(), strict=True):
        if all(inside) or not any(inside):
            continue
        start = inside.index(False)  # begin at a gap, so arcs do not wrap
        # (start, length, wholly in the frame) of each run of hand along the circle
        arcs: list[tuple[int, int, bool]] = []
        run_start, run_seen = -1, True
        for i in range(n + 1):
            k = (start + i) % n
            if i < n and inside[k]:
                if run_start < 0:
                    run_start, run_seen = i, True
                run_seen = run_seen and seen[k]
            elif run_start >= 0:
                arcs.append((run_start, i - run_start, run_seen))
                run_start = -1
        wrist = max(arcs, key=lambda a: a[1])
        mid = (start + wrist[0] + wrist[1] / 2) % n
        wrist_angle = float(angles[int(mid) % n])
        fingers = sum(1 for a in arcs if a is not wrist and a[2] and 2 <= a[1] <= n // 5)
        visible = sum(seen) / n
        if fingers > best[1] or best[2] == 0.0:
            rot = math.degrees(wrist_angle) - 90.0  # wrist down (+y), fingers up
            best = (rot, fingers, visible)
    if ks is _CIRCLE_K and best[2] < NEAR_SEEN:
        return _orientation(mask, centre, r, _NEAR_K)
    return best


#: past this many inscribed radii from the palm's centre the hand is digits, wrist or arm
DIGIT_FROM_R = 1.3
#: a digit's half-width is under this many inscribed radii (a finger's is about 0.2, a thumb's 0.25;
#: the wrist's, where a sleeve ends the blob in view, about 0.6)
DIGIT_HALF_R = 0.3


def digits_point(mask: np.ndarray, centre: tuple[float, float], r: float, angle_deg: float) -> float:
    """How far the digits that end in view point the way ``angle_deg`` says the fingers do: over 0
    they agree, under 0 the fingers point the other way, 0 where no digit ends in view.

    A finger or a thumb ends at its tip, in view or not; the forearm runs on to the elbow, past any
    frame, or ends at a sleeve as wide as the wrist. Every narrow part of the hand beyond
    DIGIT_FROM_R radii that lies wholly inside the frame is a digit, and each points from its root
    to its tip away from the wrist: the thumb up and out, a finger up. Each votes by the cosine
    between its root-to-tip line and the fingers' way, weighted by its length. Where the fingers
    and the arm both run off the frame, the wrist's arc alone cannot tell them apart, the thumb can.
    """
    h, w = mask.shape
    beyond = mask.copy()
    cv2.circle(beyond, (round(centre[0]), round(centre[1])), round(DIGIT_FROM_R * r), 0, -1)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(beyond)
    if n < 2:
        return 0.0
    half = cv2.distanceTransform(beyond, cv2.DIST_L2, 3)
    a = math.radians(angle_deg)
    fx, fy = math.sin(a), -math.cos(a)  # the way the fingers point in the frame
    vote = 0.0
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if x <= 0 or y <= 0 or x + bw >= w or y + bh >= h or area < 0.05 * r * r:
            continue  # runs off the frame (the arm, digits cut by it), or a speck
        box = (slice(y, y + bh), slice(x, x + bw))
        mine = labels[box] == i
        if float(half[box][mine].max()) > DIGIT_HALF_R * r:
            continue  # as wide as a wrist: the arm, ended by a sleeve
        ys, xs = np.nonzero(mine)
        xs, ys = xs + x, ys + y
        dist = np.hypot(xs - centre[0], ys - centre[1])
        tip = int(np.argmax(dist))
        root = dist < (DIGIT_FROM_R + 0.2) * r
        if not root.any():
            continue
        vx, vy = xs[tip] - xs[root].mean(), ys[tip] - ys[root].mean()
        length = math.hypot(vx, vy)
        if length > 0:
            vote += (vx * fx + vy * fy) / length * (float(dist[tip]) - DIGIT_FROM_R * r)
    return vote / r


@dataclass(frozen=True)
class Outline:
    """The hand blob's outline (every pixel of it) and its notches: the far points of the convexity
    defects, with their depth in pixels, leaving out those the frame's edge makes."""

    contour: np.ndarray  # (n, 2) x, y
    notches: list[tuple[float, float, float]]


def outline(mask: np.ndarray) -> Outline | None:
    """The outline of ``mask``'s largest blob, once for every reader of it; None where it has none."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    if len(c) < 5:
        return None
    try:
        defects = cv2.convexityDefects(c, cv2.convexHull(c, returnPoints=False))
    except cv2.error:  # a self-touching outline: no notches rather than a guess
        defects = None
    h, w = mask.shape
    notches = []
    # OpenCV gives None when the outline is convex
    for _start, _end, far, depth in () if defects is None else defects.reshape(-1, 4):
        x, y = (float(v) for v in c[far][0])
        if 1 < x < w - 2 and 1 < y < h - 2:  # a notch made by the frame's edge is not the hand's
            notches.append((x, y, depth / 256.0))
    return Outline(c.reshape(-1, 2), notches)


def _finger_gaps(found: Outline | None, r: float) -> int:
    """Deep notches in the hand's outline: the gaps between spread fingers (0 for a fist)."""
    return 0 if found is None else sum(1 for _x, _y, depth in found.notches if depth > 0.45 * r)


#: the aligned crop, in units of the distance D between the two outer finger valleys (index-middle
#: and ring-little): its side, and how far its centre lies from the valleys' midpoint toward the
#: wrist. As the palmprint literature's ROI (Zhang et al. 2003, IEEE TPAMI 25(9)), the square hangs
#: below the line through the valleys, turned square to it. On CASIA's hands D is about 1.1 palm
#: radii, so the square is about the palm circle's crop; the two figures were chosen on the 120
#: CASIA 940 nm images in ../shared/data/real-palms (no held-out set: see the README).
VALLEY_SIDE_D = 1.3
VALLEY_OFFSET_D = 0.85
#: the outline this far from the palm's centre (in inscribed radii) is fingers
FINGERTIP_R = 2.0


def finger_valleys(
    mask: np.ndarray, centre: tuple[float, float], r: float, found: Outline | None = None
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The valleys between the index and middle finger and between the ring and little finger (in
    ``mask``'s pixels), or None where the outline does not show them; ``found``: the mask's
    `outline`, where it was already traced.

    Between four spread fingers the outline has three deep notches (deeper than half the palm's
    inscribed radius ``r``), about a finger's width apart (0.25 to 0.9 r) and nearly in a line;
    the thumb's notch, and the arm's or a lit wall's, lie well apart from them. Of every three deep
    notches, the three whose spacing is most even and whose middle one lies nearest the line
    through the outer two are taken, on the side the fingers point to where that is known (the
    outline past FINGERTIP_R radii from the centre, away from the frame's edge: the fingertips);
    a lit wall beside the arm can reach as far, and then only the notches' shape decides.
    """
    found = outline(mask) if found is None else found
    if found is None:
        return None
    h, w = mask.shape
    pts = found.contour.astype(np.float64)
    off = pts - np.array(centre)
    dist = np.hypot(off[:, 0], off[:, 1])
    inside = (pts[:, 0] > 1) & (pts[:, 0] < w - 2) & (pts[:, 1] > 1) & (pts[:, 1] < h - 2)
    tips = inside & (dist > FINGERTIP_R * r)
    # where far points lie on every side (a lit wall beside the arm), no one way the fingers point
    f = (off[tips] / dist[tips, None]).mean(axis=0) if tips.sum() >= 3 else np.zeros(2)
    norm = float(np.hypot(*f))
    toward = f / norm if norm >= 0.5 else None
    notches = [np.array([x, y]) for x, y, depth in found.notches if depth > 0.5 * r]
    best: tuple[float, tuple[tuple[float, float], tuple[float, float]]] | None = None
    for i, j, k in itertools.permutations(range(len(notches)), 3):
        if i > j:
            continue
        a, b, m = notches[i], notches[j], notches[k]
        d = float(np.linalg.norm(b - a))
        mid = (a + b) / 2 - np.array(centre)
        ahead = 1.0 if toward is None else float(mid @ toward) / (float(np.linalg.norm(mid)) + 1e-9)
        if not 0.5 * r <= d <= 1.8 * r or ahead < 0.7:  # a finger's width apart, on the fingers' side
            continue
        gaps = float(np.linalg.norm(m - a)), float(np.linalg.norm(b - m))
        if min(gaps) < 0.25 * r or max(gaps) > 0.9 * r:
            continue
        (ux, uy), (vx, vy) = b - a, m - a
        off_line = abs(float(ux * vy - uy * vx)) / d  # the middle one's distance to the line a-b
        cost = off_line / d + abs(gaps[0] - gaps[1]) / d
        if cost < 0.45 and (best is None or cost < best[0]):
            best = (cost, ((float(a[0]), float(a[1])), (float(b[0]), float(b[1]))))
    return best[1] if best else None


def _aligned(
    valleys: tuple[tuple[float, float], tuple[float, float]], centre: tuple[float, float]
) -> tuple[float, tuple[float, float], float]:
    """The rotation that turns the line through the valleys level with the fingers up, and the
    crop square below it: its centre and side in frame pixels (the valleys and ``centre`` are in
    the half-resolution mask's)."""
    (ax, ay), (bx, by) = valleys
    d = math.hypot(bx - ax, by - ay)
    mx, my = (ax + bx) / 2, (ay + by) / 2
    nx, ny = -(by - ay) / d, (bx - ax) / d  # a normal of the line
    if nx * (mx - centre[0]) + ny * (my - centre[1]) < 0:
        nx, ny = -nx, -ny  # toward the fingers
    angle = (math.degrees(math.atan2(ny, nx)) + 90.0 + 180.0) % 360.0 - 180.0
    off = VALLEY_OFFSET_D * d
    crop_centre = ((mx - nx * off) * 2.0 + 0.5, (my - ny * off) * 2.0 + 0.5)
    return angle, crop_centre, VALLEY_SIDE_D * d * 2.0
