"""Utility: does the crop the scanner would seal identify its palm? Mated and non-mated scores of
the reference matcher (device/ingest/matcher.py), EER, FNMR at a fixed FMR, and the error-versus-
reject curve of the quality score (ISO/IEC 29794-1: a better score predicts a better match).

On the simulator (`measure_simulated`): N identities presented K times each through the real
pipeline (metering, bursts until quality passes), the template made of the flood crop the scanner
would seal. For images a person hands over (an offline tool): a folder of labelled palm images, named
``SUBJECT_HAND_..._N`` as the CASIA multispectral set is (``001_l_940_04.jpg``: subject 001, left
hand, shot 4). One identity is a subject's hand; shots ``1..session`` are a first session and the
next ``session`` a second, as CASIA's two sessions a month apart.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device import inputs
from device.config import Config
from device.ingest import matcher
from device.vision.pipeline import analyse_frame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_NAME = re.compile(r"^(?P<subject>[^_]+)_(?P<hand>[^_]+)_(?:.*_)?(?P<shot>\d+)$")
#: the false-match rates FNMR is reported at
FMRS = (0.01, 0.001)
#: the shares of lowest-quality captures refused for the error-versus-reject curve
REJECTS = (0.0, 0.05, 0.10, 0.20)


class UtilityError(ValueError):
    """A folder that cannot be measured: the message says what would be valid."""


@dataclass(frozen=True)
class Sample:
    path: Path
    identity: str  # SUBJECT_HAND
    shot: int
    quality: float
    reasons: tuple[str, ...]
    template: matcher.Template


@dataclass
class Utility:
    samples: list[Sample]
    unusable: list[str]  # one line per image no crop was made of (failure to acquire)
    session: int
    mated: list[tuple[int, int, float]] = field(default_factory=list)  # (i, j, score)
    non_mated: list[float] = field(default_factory=list)
    #: how each mated pair lay on each other, in the order of ``mated``
    alignments: list[matcher.Alignment] = field(default_factory=list)

    def repeatability(self) -> dict[str, float]:
        """How far one palm's crops lie from each other after the matcher's alignment: the shift
        (fractions of the crop's side) at the median and the 90th percentile, the share of pairs
        that needed a turn, and the share whose best shift or turn was the largest searched."""
        if not self.alignments:
            return {}
        shift = [math.hypot(*a.shift) for a in self.alignments]
        return {
            "shift_median": float(np.median(shift)),
            "shift_p90": float(np.percentile(shift, 90)),
            "turned": float(np.mean([a.turn != 0 for a in self.alignments])),
            "at_limit": float(np.mean([a.at_limit for a in self.alignments])),
        }

    def mated_scores(self, across: bool | None = None) -> list[float]:
        """Every mated score, or those across sessions (``across``) or within one (not)."""
        out = []
        for i, j, s in self.mated:
            crosses = self._session(i) != self._session(j)
            if across is None or crosses == across:
                out.append(s)
        return out

    def _session(self, i: int) -> int:
        return (self.samples[i].shot - 1) // self.session

    def reject_curve(self, fmr: float = FMRS[0]) -> list[tuple[float, float, int]]:
        """(share refused, FNMR, mated pairs left) after refusing the lowest-quality captures, at
        the threshold that gives ``fmr`` over all non-mated pairs."""
        t = threshold_at(self.non_mated, fmr)
        order = sorted(range(len(self.samples)), key=lambda i: self.samples[i].quality)
        out = []
        for share in REJECTS:
            gone = set(order[: round(share * len(order))])
            left = [s for i, j, s in self.mated if i not in gone and j not in gone]
            out.append((share, fnmr(left, t), len(left)))
        return out

    def lines(self) -> list[str]:
        m_all, m_in, m_x = self.mated_scores(), self.mated_scores(False), self.mated_scores(True)
        ids = len({s.identity for s in self.samples})
        out = [
            f"  {len(self.samples)} crops of {ids} palms; no crop made of {len(self.unusable)} image(s)",
            f"  mated pairs {len(m_all)} (within a session {len(m_in)}, across {len(m_x)}), "
            f"non-mated {len(self.non_mated)}",
            f"  scores: mated median {_median(m_all):.3f}, non-mated median {_median(self.non_mated):.3f}",
            f"  EER {_pct(eer(m_all, self.non_mated))}  (within a session {_pct(eer(m_in, self.non_mated))}, "
            f"across sessions {_pct(eer(m_x, self.non_mated))})",
        ]
        for f in FMRS:
            t = threshold_at(self.non_mated, f)
            if len(self.non_mated) * f < 1:
                out.append(
                    f"  FNMR at FMR {100 * f:g} %: not measurable with {len(self.non_mated)} non-mated pairs"
                )
                continue
            out.append(f"  FNMR at FMR {100 * f:g} %: {_pct(fnmr(m_all, t))} (threshold {t:.3f})")
        out.append(f"  error versus reject (FNMR at FMR {100 * FMRS[0]:g} %, lowest quality refused first):")
        for share, rate, n in self.reject_curve():
            out.append(f"    refuse {100 * share:4.0f} %: FNMR {_pct(rate)} of {n} mated pairs")
        rep = self.repeatability()
        if rep:
            out.append(
                "  crop repeatability (one palm's crops against each other, as the matcher aligned "
                f"them): shift median {100 * rep['shift_median']:.1f} %, 90th percentile "
                f"{100 * rep['shift_p90']:.1f} % of the crop's side; turned {max(matcher.ROTATIONS):g} "
                f"degrees: {100 * rep['turned']:.0f} % of "
                f"pairs; at the search's limit: {100 * rep['at_limit']:.0f} %"
            )
        for line in self.unusable:
            out.append(f"  no crop: {line}")
        return out

    def as_json(self) -> dict[str, object]:
        m_all = self.mated_scores()
        return {
            "crops": len(self.samples),
            "identities": len({s.identity for s in self.samples}),
            "unusable": self.unusable,
            "mated": len(m_all),
            "non_mated": len(self.non_mated),
            "eer": eer(m_all, self.non_mated),
            "eer_within_session": eer(self.mated_scores(False), self.non_mated),
            "eer_across_sessions": eer(self.mated_scores(True), self.non_mated),
            "fnmr_at_fmr": {str(f): fnmr(m_all, threshold_at(self.non_mated, f)) for f in FMRS},
            "reject_curve": [{"refused": s, "fnmr": r, "mated": n} for s, r, n in self.reject_curve()],
            "repeatability": self.repeatability(),
        }


def _pct(x: float) -> str:
    return "none (no pairs)" if math.isnan(x) else f"{100 * x:.2f} %"


def _median(v: Sequence[float]) -> float:
    return float(np.median(v)) if len(v) else float("nan")


def eer(mated: Sequence[float], non_mated: Sequence[float]) -> float:
    """The equal error rate: where FNMR (mated below the threshold) meets FMR (non-mated at or
    above it), the mean of the two at the threshold where they are closest; NaN without pairs."""
    if not len(mated) or not len(non_mated):
        return float("nan")
    m, n = np.sort(np.asarray(mated, float)), np.sort(np.asarray(non_mated, float))
    best = (2.0, float("nan"))
    for t in np.unique(np.concatenate([m, n])):
        fn = float(np.searchsorted(m, t, "left")) / m.size
        fm = 1.0 - float(np.searchsorted(n, t, "left")) / n.size
        if abs(fn - fm) < best[0]:
            best = (abs(fn - fm), (fn + fm) / 2)
    return best[1]


def threshold_at(non_mated: Sequence[float], fmr: float) -> float:
    """The lowest threshold whose FMR (share of non-mated scores at or above it) is at most
    ``fmr``."""
    n = np.sort(np.asarray(non_mated, float))
    if not n.size:
        return float("nan")
    allowed = int(np.floor(fmr * n.size))  # non-mated scores allowed at or above the threshold
    return float(np.nextafter(n[n.size - allowed - 1], np.inf)) if allowed < n.size else float(n[0])


def fnmr(mated: Sequence[float], threshold: float) -> float:
    m = np.asarray(mated, float)
    return float(np.mean(m < threshold)) if m.size else float("nan")


def crop_of(frame: np.ndarray) -> tuple[np.ndarray | None, float, tuple[str, ...]]:
    """The flood crop the scanner would seal of one frame, its quality score and reasons; no crop
    where no palm is found."""
    verdict = analyse_frame(frame)
    if verdict.hand is None:
        return None, 0.0, tuple(verdict.quality.reasons)
    return verdict.hand.crop(frame), float(verdict.quality.score), tuple(verdict.quality.reasons)


def read_grey(path: Path) -> np.ndarray:
    """An 8-bit greyscale image a person handed over; UtilityError naming it if it is not one."""
    try:
        return inputs.read_image(path, what="palm image", flags=cv2.IMREAD_GRAYSCALE)
    except inputs.InputError as exc:
        raise UtilityError(str(exc)) from None


def measure_folder(folder: Path, session: int = 3) -> Utility:
    """Utility figures of the scanner's crops of a folder of labelled palm images."""
    if not folder.is_dir():
        raise UtilityError(f"{folder} is not a folder of palm images (SUBJECT_HAND_N.png)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    named = [(p, _NAME.match(p.stem)) for p in files]
    badly = [p.name for p, m in named if m is None]
    if badly:
        raise UtilityError(
            f"{folder}: {len(badly)} image(s) not named SUBJECT_HAND_N (as 001_l_940_04.jpg), "
            f"for example {badly[0]}: the names say which images are of one palm"
        )
    if len(files) < 2:
        raise UtilityError(f"{folder} holds {len(files)} palm image(s): at least two are needed")
    samples, unusable = [], []
    for path, m in named:
        assert m is not None
        crop, quality, reasons = crop_of(read_grey(path))
        if crop is None:
            unusable.append(f"{path.name} ({', '.join(reasons) or 'no palm found'})")
            continue
        identity = f"{m['subject']}_{m['hand']}"
        samples.append(Sample(path, identity, int(m["shot"]), quality, reasons, matcher.template(crop)))
    return score_all(samples, unusable, session)


def score_all(samples: list[Sample], unusable: list[str], session: int) -> Utility:
    out = Utility(samples, unusable, session)
    for i, j in itertools.combinations(range(len(samples)), 2):
        if samples[i].identity == samples[j].identity:
            a = matcher.align(samples[i].template, samples[j].template)
            out.mated.append((i, j, a.score))
            out.alignments.append(a)
        else:
            out.non_mated.append(matcher.score(samples[i].template, samples[j].template))
    if not out.mated or not out.non_mated:
        raise UtilityError("the images need two or more shots of one palm and more than one palm")
    return out


#: presentation seeds of identity I are IDENTITY_SEEDS + I * 1000 + j (away from every other
#: tool's seeds, so that a presentation of a person is never a scene some test already drew)
IDENTITY_SEEDS = 50_000_000


def _present_identity(args: tuple[Any, Any, int, int]) -> Any:
    from device.evaluation import present
    from device.sim.scene import make_scene

    config, flat, identity, j = args
    scene = make_scene("genuine", IDENTITY_SEEDS + identity * 1000 + j, identity=identity)
    return present(config, scene, flat, None, crop=True)


def measure_simulated(
    config: Config, identities: int, presentations: int, first: int = 1, jobs: int = 1
) -> Utility:
    """Utility figures of ``identities`` simulated palms (identities ``first``.. on), each presented
    ``presentations`` times (one session: the simulator's palms do not age)."""
    import multiprocessing

    from device.evaluation import sim_flat_field

    if identities < 2 or presentations < 2:
        raise UtilityError("utility needs at least 2 identities and 2 presentations of each")
    flat = sim_flat_field(config)
    work = [(config, flat, first + i, j) for i in range(identities) for j in range(presentations)]
    if jobs <= 1:
        done = [_present_identity(w) for w in work]
    else:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            done = list(pool.imap(_present_identity, work, chunksize=4))
    samples, unusable = [], []
    for (_, _, identity, j), p in zip(work, done, strict=True):
        if p.crop is None:
            unusable.append(
                f"identity {identity} presentation {j + 1} ({', '.join(p.verdict.quality.reasons)})"
            )
            continue
        q = p.verdict.quality
        samples.append(
            Sample(
                Path(f"sim-{identity}-{j + 1}"),
                str(identity),
                j + 1,
                q.score,
                tuple(q.reasons),
                matcher.template(p.crop),
            )
        )
    return score_all(samples, unusable, session=presentations)
