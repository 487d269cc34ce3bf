"""LED patterns, named like the protocol's frame roles.

``ambient`` is the ring off, ``flood`` every sector on, ``sector-K`` sector K
alone. A pattern maps to one level (0..1) per sector.
"""

from __future__ import annotations

import re

AMBIENT = "ambient"
FLOOD = "flood"
_SECTOR_RE = re.compile(r"sector-([0-9])")


def sector(k: int) -> str:
    return f"sector-{k}"


def is_role(name: str) -> bool:
    """A frame role of the protocol: ``ambient``, ``flood`` or ``sector-0`` to ``sector-9``."""
    return name in (AMBIENT, FLOOD) or _SECTOR_RE.fullmatch(name) is not None


def all_patterns(n_sectors: int) -> tuple[str, ...]:
    """Every pattern of a ring of n sectors, in the order a burst takes them."""
    return (AMBIENT, FLOOD, *(sector(k) for k in range(n_sectors)))


def levels(pattern: str, n_sectors: int) -> tuple[float, ...]:
    """The level of each sector under ``pattern``; ValueError if it names no pattern."""
    if pattern == AMBIENT:
        return (0.0,) * n_sectors
    if pattern == FLOOD:
        return (1.0,) * n_sectors
    m = _SECTOR_RE.fullmatch(pattern)
    if m and int(m.group(1)) < n_sectors:
        k = int(m.group(1))
        return tuple(1.0 if i == k else 0.0 for i in range(n_sectors))
    raise ValueError(f"unknown LED pattern {pattern!r}: valid are " + ", ".join(all_patterns(n_sectors)))


def manifest_leds(pattern: str) -> str:
    """The protocol manifest's ``leds`` value for a pattern."""
    return {AMBIENT: "none", FLOOD: "all"}.get(pattern, pattern)
