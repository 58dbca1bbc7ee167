"""Summary statistics over raw timing samples: pure functions, no torch.

Timings are summarised by robust statistics (median, percentiles, IQR) as
torch.utils.benchmark does: a few slow outliers (a page fault, another
process) should move the reported number as little as possible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Sequence

NOISY_IQR_RATIO = 0.10  # a measurement is "noisy" when IQR / median exceeds this


def _no_nan(samples: Sequence[float], what: str) -> None:
    """A NaN sorts anywhere (every comparison with it is false), so a statistic over it would depend on the
    samples' order: refuse it. A timing is never NaN; one that is was not measured."""
    if any(x != x for x in samples):
        raise ValueError(f"{what} of samples containing NaN")


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between order statistics (numpy's default).

    ValueError for no samples or a NaN among them (numpy would return NaN)."""
    if not samples:
        raise ValueError("percentile of no samples")
    _no_nan(samples, "percentile")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def iqr(samples: Sequence[float]) -> float:
    return percentile(samples, 75) - percentile(samples, 25)


def mean(samples: Sequence[float]) -> float:
    if not samples:
        raise ValueError("mean of no samples")
    _no_nan(samples, "mean")
    return math.fsum(samples) / len(samples)


def std(samples: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for a single sample."""
    if len(samples) < 2:
        return 0.0
    m = mean(samples)
    return math.sqrt(math.fsum((x - m) ** 2 for x in samples) / (len(samples) - 1))


def cv(samples: Sequence[float]) -> float:
    """Coefficient of variation: std / mean."""
    m = mean(samples)
    return std(samples) / m if m else float("nan")


def relative_iqr(samples: Sequence[float]) -> float:
    m = median(samples)
    return iqr(samples) / m if m else float("inf")


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p90: float
    iqr: float
    cv: float
    noisy: bool

    def as_columns(self, prefix: str, unit: str = "ms") -> Dict[str, object]:
        """Columns like ``latency_ms_median`` for ``prefix='latency'``."""
        return {
            f"{prefix}_{unit}_median": self.median,
            f"{prefix}_{unit}_p90": self.p90,
            f"{prefix}_{unit}_iqr": self.iqr,
            f"{prefix}_cv": self.cv,
            f"{prefix}_noisy": self.noisy,
            f"{prefix}_n": self.n,
        }


def summarize(samples: Sequence[float]) -> Summary:
    """Median, p90, IQR, CV and the noisy flag of a list of samples."""
    if not samples:
        raise ValueError("summarize: no samples")
    return Summary(
        n=len(samples),
        median=median(samples),
        p90=percentile(samples, 90),
        iqr=iqr(samples),
        cv=cv(samples),
        noisy=relative_iqr(samples) > NOISY_IQR_RATIO,
    )
