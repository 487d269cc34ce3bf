"""Error rates with their counts and exact confidence intervals, as ISO/IEC 30107-3 asks them
reported: APCER per attack kind and BPCER, each over the presentations it counts, with a 95 %
Clopper-Pearson interval (the binomial's exact interval; it never claims more certainty than
the counts give, so 0 errors in 20 reads "0 %, up to 16.8 %")."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


def _binomial_tail(k: int, n: int, p: float, *, upper: bool) -> float:
    """P(X >= k) if ``upper`` else P(X <= k), X ~ Binomial(n, p): summed in logs, exact for any n."""
    if p <= 0.0:
        return 1.0 if (k <= 0 if upper else True) else 0.0
    if p >= 1.0:
        return 1.0 if (upper or k >= n) else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = range(k, n + 1) if upper else range(0, k + 1)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in terms
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial proportion of ``k`` in ``n``: the lower
    end is the p at which P(X >= k) is alpha/2, the upper the p at which P(X <= k) is alpha/2
    (by bisection on the binomial's tails)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"{k} errors in {n} presentations: k must lie in 0..n")
    a = (1 - confidence) / 2

    def solve(f_increasing: Callable[[float], float], target: float) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(100):
            mid = (lo + hi) / 2
            if f_increasing(mid) < target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(lambda p: _binomial_tail(k, n, p, upper=True), a)
    upper = 1.0 if k == n else solve(lambda p: 1 - _binomial_tail(k, n, p, upper=False), 1 - a)
    return lower, upper


@dataclass(frozen=True)
class Rate:
    """``errors`` in ``n`` presentations, with the 95 % Clopper-Pearson interval."""

    errors: int
    n: int

    @property
    def value(self) -> float:
        return self.errors / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return clopper_pearson(self.errors, self.n)

    def text(self) -> str:
        if not self.n:
            return "- (none counted)"
        lo, hi = self.interval
        return f"{self.value * 100:.2f} % ({self.errors}/{self.n}; 95 % CI {lo * 100:.2f}-{hi * 100:.2f} %)"

    def as_json(self) -> dict[str, object]:
        lo, hi = self.interval
        return {"rate": self.value, "errors": self.errors, "n": self.n, "ci95": [round(lo, 6), round(hi, 6)]}
