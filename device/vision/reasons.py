"""One vocabulary for guidance and quality: what the shopper (or a technician) should do."""

from __future__ import annotations

NO_HAND = "no_hand"
TOO_FAR = "too_far"
TOO_CLOSE = "too_close"
OFF_CENTRE = "off_centre"
PARTIAL_HAND = "partial_hand"
HOLD_STILL = "hold_still"
OPEN_HAND = "open_hand"
OUT_OF_FOCUS = "out_of_focus"
TOO_DARK = "too_dark"
TOO_BRIGHT = "too_bright"
NO_VEINS = "no_veins"
TWO_HANDS = "two_hands"

#: in the order a shopper should fix them: first get the hand there, then still, then sharp
ALL = (
    NO_HAND,
    TWO_HANDS,
    PARTIAL_HAND,
    TOO_FAR,
    TOO_CLOSE,
    OFF_CENTRE,
    OPEN_HAND,
    HOLD_STILL,
    TOO_DARK,
    TOO_BRIGHT,
    OUT_OF_FOCUS,
    NO_VEINS,
)

TEXT = {
    NO_HAND: "hold your palm over the scanner",
    TWO_HANDS: "one hand at a time",
    PARTIAL_HAND: "move your whole palm over the scanner",
    TOO_FAR: "come closer",
    TOO_CLOSE: "move your hand back a little",
    OFF_CENTRE: "centre your palm over the scanner",
    OPEN_HAND: "open your hand, fingers apart",
    HOLD_STILL: "hold still",
    TOO_DARK: "too dark: the scanner's light may be blocked",
    TOO_BRIGHT: "too bright: shade the scanner from direct light",
    OUT_OF_FOCUS: "hold your hand at the marked height",
    NO_VEINS: "palm not recognisable",
}


def ordered(reasons: set[str] | list[str]) -> list[str]:
    return [r for r in ALL if r in reasons]
