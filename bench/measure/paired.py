"""Two workloads timed side by side: interleaved blocks and the ratio of their medians, with its uncertainty.

Why: on a shared machine the speed drifts over minutes (the study's C=32
cell read 3.9 ms in the first quarter of its batch-1 loop and 6.3 ms in the
third). Two cells timed one after the other then differ by the drift as
well as by the models. Timing A and B in alternating short blocks puts both
under the same conditions, round by round; the per-round ratio B/A cancels
what the rounds share, and the spread of those ratios says how far the
comparison can be trusted. The order within a round alternates (AB, BA, AB,
...), so a drift inside a round favours neither side.

The confidence interval of the median ratio comes from order statistics
(a sign-test interval): it assumes nothing about the ratios' distribution,
only that rounds are independent draws.

The rounds themselves are the evidence: :func:`rounds_csv` writes them (one
row per round, A's and B's ms and their ratio) and :func:`read_rounds` reads
them back into the same :class:`PairedRatio`, so anyone can recompute the
ratio and its interval from the file.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from bench.errors import UserError
from bench.measure.timing import Timer

ROUND_COLUMNS = ["comparison", "started", "confidence", "round", "first", "a_ms", "b_ms", "ratio"]


@dataclass(frozen=True)
class PairedRatio:
    """Round-by-round times (ms per call) of A and B and the ratio B/A."""

    a_ms: List[float]  # per round: median of A's calls in that round
    b_ms: List[float]
    confidence: float

    @property
    def ratios(self) -> List[float]:
        return [b / a for a, b in zip(self.a_ms, self.b_ms)]

    @property
    def ratio(self) -> float:
        """Median over rounds of B/A: B takes this many times A's time."""
        return statistics.median(self.ratios)

    @property
    def interval(self) -> Optional[Tuple[float, float]]:
        """The ``confidence`` interval of the median ratio, or None with too few rounds for it."""
        return median_interval(self.ratios, self.confidence)

    @property
    def significant(self) -> bool:
        """True when the interval excludes 1: B and A differ beyond the round-to-round noise."""
        interval = self.interval
        return interval is not None and (interval[0] > 1 or interval[1] < 1)

    def describe(self, name_a: str = "A", name_b: str = "B") -> str:
        interval = self.interval
        spread = (f"{self.confidence:.0%} CI {interval[0]:.3f}-{interval[1]:.3f}" if interval
                  else f"too few rounds ({len(self.ratios)}) for a {self.confidence:.0%} interval")
        verdict = "differs" if self.significant else "within noise"
        return (f"{name_b} / {name_a} = {self.ratio:.3f} ({spread}, {len(self.ratios)} rounds; {verdict}); "
                f"medians {statistics.median(self.a_ms):.3f} vs {statistics.median(self.b_ms):.3f} ms")


def median_interval(values: List[float], confidence: float = 0.95) -> Optional[Tuple[float, float]]:
    """Distribution-free interval for the median: the k-th smallest and k-th largest of ``values``.

    k is the largest rank with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2,
    so the interval covers the true median with at least ``confidence``.
    None when n is too small for any such k (n < 6 at 95%); ValueError for a NaN among the values
    (it would sort anywhere and make the interval depend on their order).
    """
    if any(v != v for v in values):
        raise ValueError("median_interval of values containing NaN")
    n = len(values)
    alpha = (1 - confidence) / 2
    below = 0.0  # P(Binomial(n, 1/2) < k), for k = 1, 2, ...
    k = 0
    while k < n // 2:
        below += math.comb(n, k) / 2 ** n
        if below > alpha:
            break
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]


def time_interleaved(fn_a: Callable[[], object], fn_b: Callable[[], object], timer: Timer, rounds: int,
                     calls: int, warmup: int = 3, confidence: float = 0.95) -> PairedRatio:
    """``rounds`` rounds of ``calls`` timed calls of each, in alternating order; see the module doc."""
    if rounds < 1 or calls < 1:
        raise ValueError(f"rounds and calls must be >= 1, got {rounds} and {calls}")
    for _ in range(warmup):
        fn_a()
        fn_b()
    timer.synchronize()
    a_ms: List[float] = []
    b_ms: List[float] = []
    for index in range(rounds):
        order = ((fn_a, a_ms), (fn_b, b_ms)) if index % 2 == 0 else ((fn_b, b_ms), (fn_a, a_ms))
        for fn, out in order:
            out.append(statistics.median(timer.time_block(fn, 1) for _ in range(calls)))
    return PairedRatio(a_ms, b_ms, confidence)


def comparison_label(phase: str, batch: int, name_a: str, name_b: str) -> str:
    """How a comparison is named in the rounds CSV: 'inference bs1 B/A'."""
    return f"{phase} bs{batch} {name_b}/{name_a}"


def rounds_csv(paired: PairedRatio, comparison: str, started: str, header: bool) -> str:
    """CSV rows (and the header line, when asked) of every round: who went first, A's and B's ms, B/A."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(ROUND_COLUMNS)
    for index, (a, b) in enumerate(zip(paired.a_ms, paired.b_ms)):
        # repr keeps every digit, so the interval recomputed from the file is the one printed
        writer.writerow([comparison, started, paired.confidence, index, "a" if index % 2 == 0 else "b",
                         repr(a), repr(b), repr(b / a)])
    return buf.getvalue()


def read_rounds(path: str) -> Dict[Tuple[str, str], PairedRatio]:
    """Every comparison in a rounds CSV, (comparison, started) -> its rounds; a malformed file is a UserError."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read the paired rounds: {e}") from None
    out: Dict[Tuple[str, str], Tuple[List[float], List[float], float]] = {}
    for line, row in enumerate(rows, start=2):
        missing = [c for c in ROUND_COLUMNS if row.get(c) in (None, "")]
        if missing:
            raise UserError(f"{path}: line {line}: {missing[0]}: missing")
        try:
            a, b, confidence = float(row["a_ms"]), float(row["b_ms"]), float(row["confidence"])
        except ValueError:
            raise UserError(f"{path}: line {line}: a_ms, b_ms, confidence: expected numbers") from None
        if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b) and 0 < confidence < 1):
            raise UserError(f"{path}: line {line}: expected positive finite ms and a confidence in (0, 1)")
        a_ms, b_ms, _ = out.setdefault((row["comparison"], row["started"]), ([], [], confidence))
        a_ms.append(a)
        b_ms.append(b)
    return {key: PairedRatio(a, b, conf) for key, (a, b, conf) in out.items()}
