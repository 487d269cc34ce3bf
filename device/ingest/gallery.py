"""Enrol and identify with the reference matcher, in the development ingest's memory: the whole path
from a hand over the scanner to a match answer at the till can be watched.

The ingest is told the subject label of each capture in the order captures arrive (the scanner
never sends one: who stands at the till is the cloud's business, and here the person running the
demonstration says it). The first capture of a label is enrolled; every later capture, and every
capture past the end of the labels, is identified against all enrolled templates (1:N): the best
score at or over the threshold for the chosen false-match rate is a match. Templates live only in
this object; nothing is written anywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from device.ingest import matcher
from device.protocol.archive import ArchiveSummary


class Gallery:
    def __init__(self, labels: Sequence[str], fmr: float = matcher.DEFAULT_FMR) -> None:
        if fmr not in matcher.THRESHOLDS:
            raise ValueError(f"no threshold for FMR {fmr}: one of {sorted(matcher.THRESHOLDS)}")
        self.labels = list(labels)
        self.fmr = fmr
        self.threshold = matcher.THRESHOLDS[fmr]
        self._templates: dict[str, matcher.Template] = {}
        self._answers: dict[str, dict[str, Any]] = {}  # capture id: its answer, for a concurrent twin
        self._lock = threading.Lock()

    def __call__(self, device_id: str, envelope: dict[str, Any], archive: ArchiveSummary) -> dict[str, Any]:
        if archive.kept is None:  # the ingest keeps the flood frame for a gallery: a bug if not
            raise RuntimeError("the ingest did not keep the flood frame")
        probe = matcher.template(archive.kept)
        archive.kept.fill(0)
        with self._lock:
            capture_id = envelope["capture_id"]
            if capture_id in self._answers:
                return self._answers[capture_id]
            n = len(self._answers)
            label = self.labels[n] if n < len(self.labels) else None
            answer = self._decide(label, probe)
            self._answers[capture_id] = answer
            return answer

    def _decide(self, label: str | None, probe: matcher.Template) -> dict[str, Any]:
        if label is not None and label not in self._templates:
            self._templates[label] = probe
            return {"decision": "enrolled", "subject": label, "enrolled": len(self._templates)}
        scores = {s: matcher.score(probe, t) for s, t in self._templates.items()}
        best = max(scores, key=scores.__getitem__) if scores else None
        score = scores[best] if best is not None else 0.0
        matched = best is not None and score >= self.threshold
        return {
            "decision": "match" if matched else "no_match",
            "subject": best if matched else None,
            "score": round(score, 4),
            "threshold": self.threshold,
            "fmr": self.fmr,
            "label": label,
        }
