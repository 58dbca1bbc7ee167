"""Pure regression verdicts: values (or two loaded result files) in, verdicts out. No I/O.

* exact metrics (params, MACs, FLOPs, activations) must not change at all;
* timings must move past a relative threshold *and* differ significantly
  (Mann-Whitney U over the raw samples) to count, and are compared only when
  the environment fingerprint of the two runs matches;
* accuracy regresses only when its drop is statistically significant, with
  the test-set sampling error counted, *and* larger than a practical floor.

:mod:`bench.analysis.regression` loads files, formats the table and runs
the CLI on top of these. See docs/regression.md for the rules and a worked
example.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from bench.errors import one_line
from bench.results.fingerprint import fingerprint
from bench.results.samples import parse_samples
from bench.results.schema import STATUS_OK
from bench.results.sidecar import Sidecar

# ------------------------------------------------------------------ metrics
# Per image and exact: any change means the model changed.
EXACT_METRICS: Tuple[str, ...] = ("params", "macs", "flops", "activations")


@dataclass(frozen=True)
class TimingMetric:
    name: str
    samples_column: str  # raw samples the significance test runs on
    higher_is_better: bool


# Throughput is batch / latency, so it shares the latency samples: a rank
# test is unchanged by that monotone transform, only the direction flips.
TIMING_METRICS: Tuple[TimingMetric, ...] = (
    TimingMetric("latency_ms_median", "latency_samples_ms", False),
    TimingMetric("throughput_img_s", "latency_samples_ms", True),
    TimingMetric("train_step_ms_median", "train_step_samples_ms", False),
    TimingMetric("train_throughput_img_s", "train_step_samples_ms", True),
)
TIMING_BY_NAME: Dict[str, TimingMetric] = {m.name: m for m in TIMING_METRICS}
ACCURACY_METRIC = "top1_acc"

DEFAULT_THRESHOLD = 0.10
DEFAULT_ALPHA = 0.05
DEFAULT_ACC_K = 2.0  # only for files that cannot be tested (no test_images, one seed): the old margin rule
DEFAULT_ACC_FLOOR = 0.005  # 0.5 percentage points: below this, a drop is not worth a red build
# Accuracies are fractions of whole images: differences below this are float rounding, not data
# (0.800 - 0.795 is -0.0050000000000000044, which must not count as "more than" a 0.005 floor).
ACC_TOLERANCE = 1e-9
# A failed cell's error in a verdict note is cut here: the note is one cell of the comparison table.
ERROR_NOTE_CHARS = 120

# Columns that identify a row besides its batch size. cell_id already hashes
# the settings; the explicit columns guard against files whose ids collide
# after hand edits and make the pairing readable.
CONFIG_COLUMNS: Tuple[str, ...] = ("cell_id", "device", "precision", "memory_format", "compile")

# ------------------------------------------------------------------ verdicts
OK, IMPROVED, REGRESSED, NOISE = "ok", "improved", "regressed", "~"
NEW, MISSING, INCOMPARABLE = "new", "missing", "incomparable"
CHANGED, ALLOWED = "changed", "allowed"  # exact metrics: changed (fails) or changed but allowed
VERDICTS = (OK, IMPROVED, REGRESSED, NOISE, NEW, MISSING, INCOMPARABLE, CHANGED, ALLOWED)
FAILING_VERDICTS = (REGRESSED, CHANGED, MISSING)


@dataclass(frozen=True)
class Verdict:
    verdict: str
    ratio: Optional[float] = None
    note: str = ""
    p_value: Optional[float] = None


# ------------------------------------------------------------------ timings
def smallest_mann_whitney_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p an exact Mann-Whitney U test can give for these sample sizes.

    Complete separation is one of C(n_a + n_b, n_a) equally likely orderings
    in each direction: at 3 vs 3 that is 2/20 = 0.1, so no outcome is
    significant at 0.05, however large the change.
    """
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided Mann-Whitney U p-value, or None when either side has fewer than 2 samples."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import mannwhitneyu

    if len(set(a) | set(b)) == 1:  # all samples equal: no evidence of any difference
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def timing_verdict(baseline: float, current: float, baseline_samples: Sequence[float],
                   current_samples: Sequence[float], *, higher_is_better: bool,
                   threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """Verdict for one timing or throughput value.

    The threshold is symmetric in log space: with ``t = 0.10`` a value is past
    it when ``current / baseline`` leaves ``[1/1.1, 1.1]``. That keeps latency
    and throughput (its reciprocal) in agreement. Past the threshold, the
    samples must also differ significantly (p < alpha), else the verdict is
    ``~``: the change could be noise, or (said in the note) there are too few
    samples for any test to reach alpha.
    """
    if not (baseline > 0 and current > 0):
        return Verdict(INCOMPARABLE, None, f"non-positive value (baseline {baseline:g}, current {current:g})")
    ratio = current / baseline
    worse = ratio if not higher_is_better else 1.0 / ratio  # > 1 means slower
    if 1.0 / (1.0 + threshold) <= worse <= 1.0 + threshold:
        return Verdict(OK, ratio, f"{worse - 1:+.1%} time, within {threshold:.0%}")
    direction = REGRESSED if worse > 1 else IMPROVED
    change = f"{worse - 1:+.1%} time"
    n_a, n_b = len(baseline_samples), len(current_samples)
    if n_a < 2 or n_b < 2 or smallest_mann_whitney_p(n_a, n_b) >= alpha:
        floor = f"; the smallest possible p is {smallest_mann_whitney_p(n_a, n_b):.2g}" if n_a and n_b else ""
        return Verdict(NOISE, ratio, f"{change}; too few samples to test ({n_a} vs {n_b}{floor}, alpha {alpha:g})")
    p = mann_whitney_p(list(baseline_samples), list(current_samples))
    if p is not None and p < alpha:
        return Verdict(direction, ratio, f"{change}, p={p:.2g}", p)
    return Verdict(NOISE, ratio, f"{change} but p={p:.2g} >= {alpha:g}: within noise", p)


def exact_verdict(baseline: float, current: float, allowed: bool = False) -> Verdict:
    """Exact metrics: equal, or changed (which fails unless the change is allowed)."""
    if baseline == current:
        return Verdict(OK, 1.0)
    ratio = current / baseline if baseline else None
    note = f"{current - baseline:+,.0f}" + (" (allowed by --allow-changed)" if allowed else "")
    return Verdict(ALLOWED if allowed else CHANGED, ratio, note)


# ------------------------------------------------------------------ accuracy
@dataclass(frozen=True)
class AccuracySample:
    """One side's accuracy: per-seed accuracies and, where recorded, the test-set size and correct counts.

    Every seed is a number in 0..1: a NaN or out-of-range seed is a ValueError here, not a wrong p later."""

    seeds: Tuple[float, ...]  # per-seed top-1, fractions
    test_images: Optional[int] = None  # images behind each seed's accuracy; None in files that predate it
    correct: Tuple[int, ...] = ()  # per-seed correct counts, when recorded

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("an accuracy needs at least one seed, got none")
        bad = [x for x in self.seeds if not (isinstance(x, (int, float)) and 0.0 <= x <= 1.0)]
        if bad:  # NaN fails both comparisons
            raise ValueError(f"per-seed accuracy {bad[0]!r} is not a fraction in 0..1")

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def mean(self) -> float:
        return math.fsum(self.seeds) / len(self.seeds)

    @property
    def std(self) -> float:
        """Sample std over seeds; 0 for one seed."""
        return statistics.stdev(self.seeds) if len(self.seeds) > 1 else 0.0

    def with_test_images(self, test_images: Optional[int]) -> "AccuracySample":
        return AccuracySample(self.seeds, test_images, self.correct)

    def counts(self) -> Tuple[int, int]:
        """(correct, tested) over all seeds; needs test_images."""
        assert self.test_images is not None
        correct = self.correct if len(self.correct) == self.n else tuple(round(a * self.test_images)
                                                                         for a in self.seeds)
        return sum(correct), self.n * self.test_images

    @property
    def test_set_variance(self) -> float:
        """p(1-p)/test_images: the test set's sampling error of the mean, shared by every seed (0 when unknown)."""
        return self.mean * (1 - self.mean) / self.test_images if self.test_images else 0.0


@dataclass(frozen=True)
class AccuracyTest:
    """A significance test of current - baseline: its p-value and the smallest significant difference."""

    name: str
    p_value: float
    critical: float  # |difference| at which p reaches alpha
    detail: str  # what the test saw, besides the seed counts
    seeds: Optional[Tuple[int, int]] = None  # (baseline, current) seed counts, for a test on seed means

    def describe(self, baseline: str = "", current: str = "") -> str:
        """The detail with each side's seed count, labelled by name where names are given (a table that
        prints the pair's leader first must not let the counts be read reversed)."""
        if self.seeds is None:
            return self.detail
        b, c = self.seeds
        counts = f"seeds {b} ({baseline}) vs {c} ({current})" if baseline else f"seeds {b} vs {c}"
        return f"{counts}, {self.detail}"


def two_proportion_test(base: AccuracySample, cur: AccuracySample, alpha: float) -> AccuracyTest:
    """Two-sided two-proportion z test of the mean accuracies, each out of test_images (pooled under 'no difference').

    For a single seed per side. A side with several seeds counts its mean correct count out of the
    test_images (not seeds x test_images: every seed is scored on the same images)."""
    from scipy.stats import norm

    assert base.test_images and cur.test_images
    x_b, x_c = (side.counts()[0] / side.n for side in (base, cur))
    n_b, n_c = base.test_images, cur.test_images
    pooled = (x_b + x_c) / (n_b + n_c)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_b + 1 / n_c))
    diff = x_c / n_c - x_b / n_b
    p = (1.0 if abs(diff) <= ACC_TOLERANCE else 0.0) if se == 0 else float(2 * norm.sf(abs(diff) / se))
    critical = float(norm.isf(alpha / 2)) * se
    return AccuracyTest("two-proportion z", p, critical, f"{x_b:g}/{n_b} vs {x_c:g}/{n_c} correct")


def welch_dof(var_mean_b: float, n_b: int, var_mean_c: float, n_c: int) -> float:
    """Welch-Satterthwaite degrees of freedom from two sample variances of the mean (s^2 / n)."""
    return satterthwaite_dof([(var_mean_b, n_b), (var_mean_c, n_c)])


def satterthwaite_dof(terms: Sequence[Tuple[float, int]]) -> float:
    """Satterthwaite degrees of freedom of a sum of independent variance terms, each (variance, n) estimated
    from n samples with n - 1 degrees of freedom.

    All zero (every seed equal everywhere): the formula is 0/0, so the smallest value it can take,
    min(n) - 1, is used."""
    denom = sum(v ** 2 / (n - 1) for v, n in terms)
    if denom == 0:
        return float(min(n for _, n in terms) - 1)
    return sum(v for v, _ in terms) ** 2 / denom


def seed_mean_test(base: AccuracySample, cur: AccuracySample, alpha: float) -> AccuracyTest:
    """Welch t test on the seed means, the test set's sampling error added to each side's variance.

    A side's mean has variance s^2/n (seed to seed) + p(1-p)/test_images (the test set's sampling error;
    every seed is scored on the same images, so averaging seeds does not shrink it). The degrees of
    freedom are Welch-Satterthwaite's from the two seed variances alone: the test-set term is known, not
    estimated, so it widens the interval but never raises df. Hence p is never below that of
    ``scipy.stats.ttest_ind(equal_var=False)`` on the seeds, and equals it without test_images.
    Needs 2 or more seeds per side (ValueError otherwise: one seed has no spread to estimate).
    """
    from scipy.stats import t as student_t

    if base.n < 2 or cur.n < 2:
        raise ValueError(f"Welch t on seed means needs 2 or more seeds per side, got {base.n} vs {cur.n}")
    seed_b, seed_c = base.std ** 2 / base.n, cur.std ** 2 / cur.n
    shared = base.test_set_variance + cur.test_set_variance
    se = math.sqrt(seed_b + seed_c + shared)
    diff = cur.mean - base.mean
    dof = welch_dof(seed_b, base.n, seed_c, cur.n)
    if se == 0:
        p = 1.0 if abs(diff) <= ACC_TOLERANCE else 0.0
    else:
        p = float(2 * student_t.sf(abs(diff) / se, dof))
    critical = float(student_t.isf(alpha / 2, dof)) * se
    floor = "test-set error added" if base.test_images and cur.test_images else \
        "seed spread only: test_images unknown"
    return AccuracyTest("Welch t on seed means", p, critical, f"df {dof:.1f}, {floor}", (base.n, cur.n))


def difference_test(baseline: AccuracySample, current: AccuracySample,
                    alpha: float = DEFAULT_ALPHA) -> Optional[AccuracyTest]:
    """The test :func:`accuracy_verdict` runs on current - baseline, or None when nothing can be tested.

    One seed on either side: two-proportion z on the correct counts; otherwise Welch t on the seed means
    with the test set's sampling error added. A side without test_images borrows the other's; None when neither knows it
    and a side has one seed (no spread to test against)."""
    baseline, current, _ = _share_test_images(baseline, current)
    if baseline.test_images is None and min(baseline.n, current.n) < 2:
        return None
    return _test_for(baseline, current)(baseline, current, alpha)


def _test_for(baseline: AccuracySample, current: AccuracySample):
    return two_proportion_test if min(baseline.n, current.n) < 2 else seed_mean_test


@dataclass(frozen=True)
class ChanceCheck:
    """Whether an accuracy is within noise of guessing (1 / number of classes), and how that was decided."""

    within: bool
    chance: float
    p_value: Optional[float]
    detail: str


def chance_check(side: AccuracySample, num_classes: int, alpha: float = DEFAULT_ALPHA) -> ChanceCheck:
    """Is the accuracy distinguishable from guessing among ``num_classes``?

    With test_images: a one-sided exact binomial test of the correct counts of all seeds against
    p = 1/num_classes. Under that null every prediction is an independent guess, so pooling seeds is
    exact. Without test_images (older files): the 2-sigma rule on the seed spread, mean - chance <= 2
    std/sqrt(seeds); a single seed then counts as chance only at or below it.
    """
    chance = 1.0 / num_classes
    if side.test_images:
        from scipy.stats import binomtest

        correct, tested = side.counts()
        p = float(binomtest(correct, tested, chance, alternative="greater").pvalue)
        return ChanceCheck(p >= alpha, chance, p, f"binomial test against {chance:.1%}: {correct}/{tested} correct, "
                                                  f"p={p:.2g}")
    margin = 2 * side.std / math.sqrt(side.n)
    return ChanceCheck(side.mean - chance <= margin + ACC_TOLERANCE, chance, None,
                       f"2-sigma rule (test_images unknown): {(side.mean - chance) * 100:+.2f} pp above "
                       f"{chance:.1%}, 2 sigma {margin * 100:.2f} pp")


def accuracy_verdict(baseline: AccuracySample, current: AccuracySample, *, alpha: float = DEFAULT_ALPHA,
                     floor: float = DEFAULT_ACC_FLOOR, k: float = DEFAULT_ACC_K) -> Verdict:
    """Regressed only when the drop is significant (p < alpha) *and* larger than ``floor``.

    One seed on either side: a two-proportion test on the correct counts.
    Two or more on both: a Welch t test on the seed means, the test set's
    sampling error added to the seed spread (:func:`seed_mean_test`). A side without ``test_images`` (an
    older file) borrows the other side's: rows are paired by cell id, which
    hashes the training recipe and so the test subset. When neither side
    knows it and one has a single seed, nothing can be tested: the old rule
    applies (a drop beyond ``max(floor, k x pooled std)``) and the note says so.
    """
    baseline, current, borrowed = _share_test_images(baseline, current)
    diff = current.mean - baseline.mean
    ratio = current.mean / baseline.mean if baseline.mean else None
    beyond_floor = abs(diff) > floor + ACC_TOLERANCE
    if baseline.test_images is None and min(baseline.n, current.n) < 2:
        return _untestable_accuracy(baseline, current, diff, ratio, floor, k)
    test = _test_for(baseline, current)(baseline, current, alpha)
    margin = max(floor, test.critical)
    note = (f"{diff * 100:+.2f} pp, p={test.p_value:.2g} ({test.name}; {test.describe()}), "
            f"margin {margin * 100:.2f} pp (floor {floor * 100:.2f} pp, alpha {alpha:g}){borrowed}")
    if test.p_value < alpha and beyond_floor:
        return Verdict(REGRESSED if diff < 0 else IMPROVED, ratio, note, test.p_value)
    return Verdict(OK, ratio, note, test.p_value)


def _share_test_images(b: AccuracySample, c: AccuracySample) -> Tuple[AccuracySample, AccuracySample, str]:
    if b.test_images is None and c.test_images is not None:
        return b.with_test_images(c.test_images), c, "; baseline test_images taken from the run (older file)"
    if c.test_images is None and b.test_images is not None:
        return b, c.with_test_images(b.test_images), "; run test_images taken from the baseline (older file)"
    return b, c, ""


def pooled_std(a: AccuracySample, b: AccuracySample) -> float:
    """Pooled sample std of two groups of seeds; 0 when neither has more than one seed."""
    dof = (a.n - 1) + (b.n - 1)
    if dof <= 0:
        return 0.0
    return math.sqrt(((a.n - 1) * a.std ** 2 + (b.n - 1) * b.std ** 2) / dof)


def _untestable_accuracy(b: AccuracySample, c: AccuracySample, diff: float, ratio: Optional[float],
                         floor: float, k: float) -> Verdict:
    margin = max(floor, k * pooled_std(b, c))
    note = (f"{diff * 100:+.2f} pp, margin {margin * 100:.2f} pp; not tested for significance: neither file "
            f"records test_images and {'a side has' if max(b.n, c.n) > 1 else 'each side has'} 1 seed")
    if abs(diff) > margin + ACC_TOLERANCE:
        return Verdict(REGRESSED if diff < 0 else IMPROVED, ratio, note)
    return Verdict(OK, ratio, note)


# ------------------------------------------------------------------ environments
def fingerprint_difference(baseline: Optional[Mapping[str, Any]], current: Optional[Mapping[str, Any]]) -> str:
    """'' when the fingerprints match, else a short reason naming what differs."""
    if baseline is None or current is None:
        return "environment unknown (no sidecar, or not the run that wrote the row)"
    diffs = [f"{k} {baseline.get(k)!s} vs {current.get(k)!s}"
             for k in sorted(set(baseline) | set(current)) if baseline.get(k) != current.get(k)]
    return "; ".join(diffs)


# ------------------------------------------------------------------ the comparison
@dataclass(frozen=True)
class VerdictLine:
    """One line of the comparison table."""

    group: str  # the row/variant heading the line sits under
    metric: str
    batch: str
    baseline: Any
    current: Any
    verdict: str
    ratio: Optional[float] = None
    note: str = ""
    gating: bool = True  # False: shown, but never fails the comparison (timings in report mode)

    @property
    def fails(self) -> bool:
        return self.gating and self.verdict in FAILING_VERDICTS


@dataclass
class Options:
    thresholds: Dict[str, float] = field(default_factory=dict)
    allow_changed: Tuple[str, ...] = ()
    alpha: float = DEFAULT_ALPHA
    acc_k: float = DEFAULT_ACC_K
    acc_floor: float = DEFAULT_ACC_FLOOR
    gate_timings: bool = False

    def threshold(self, metric: str) -> float:
        return self.thresholds.get(metric, DEFAULT_THRESHOLD)


@dataclass
class Comparison:
    lines: List[VerdictLine]

    @property
    def failed(self) -> bool:
        return any(line.fails for line in self.lines)

    def counts(self) -> Dict[str, int]:
        out = {v: 0 for v in VERDICTS}
        for line in self.lines:
            out[line.verdict] += 1
        return out


@dataclass
class ResultFile:
    """One side of a comparison, already loaded: rows (missing values as None) and the sidecar, if any.

    Each row carries ``_batch`` (the batch it stands for, as text) and
    ``_samples`` (its ';'-separated columns parsed).
    """

    path: str
    rows: List[Dict[str, Any]]
    sidecar: Optional[Sidecar]
    notes: List[str] = field(default_factory=list)  # what loading had to say (a cut line, a foreign sidecar)

    @property
    def meta(self) -> Optional[Dict[str, Any]]:
        return self.sidecar.data if self.sidecar else None

    def environment_fingerprint(self, row: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """What must match for this row's timings to be comparable with another run's."""
        env = self.sidecar.environment(row.get("run_id")) if self.sidecar else None
        if env is None:
            return None
        fp = fingerprint(env, str(row.get("device") or "cpu"))
        if row.get("device_name"):
            fp["device_name"] = row["device_name"]
        fp.update(threads=int_text(row.get("threads")), precision=row.get("precision"),
                  memory_format=row.get("memory_format"))
        return fp


def compare(baseline: ResultFile, current: ResultFile, options: Options) -> Comparison:
    """All verdict lines for ``current`` against ``baseline``: a pure function of the two files."""
    base_groups = _group(baseline.rows)
    cur_groups = _group(current.rows)
    lines: List[VerdictLine] = []
    for key in list(base_groups) + [k for k in cur_groups if k not in base_groups]:
        b_rows, c_rows = base_groups.get(key, {}), cur_groups.get(key, {})
        label = _group_label(key, next(iter((b_rows or c_rows).values())))
        lines += _compare_cell(label, b_rows, c_rows, baseline, current, options)
    return Comparison(lines)


def _compare_cell(label: str, b_rows: Dict[str, Dict[str, Any]], c_rows: Dict[str, Dict[str, Any]],
                  baseline: ResultFile, current: ResultFile, options: Options) -> List[VerdictLine]:
    lines: List[VerdictLine] = []
    # A cell that failed as a whole has one row without a batch size: it stands in for every batch.
    cell_failure = c_rows.get("") if c_rows.get("", {}).get("status") != STATUS_OK else None
    b_ok = [r for r in b_rows.values() if r.get("status") == STATUS_OK]
    c_ok = [r for r in c_rows.values() if r.get("status") == STATUS_OK]
    if b_ok and c_ok:  # per-cell metrics: the same on every batch row, compared once
        lines += _cell_metrics(label, b_ok[0], c_ok[0], options)
    matched = set()
    for batch, b in b_rows.items():
        c = c_rows.get(batch)
        if c is None and cell_failure is not None:
            c, batch_used = cell_failure, ""
        else:
            batch_used = batch
        if c is None:
            if b.get("status") == STATUS_OK:
                lines.append(VerdictLine(label, "row", batch, STATUS_OK, "-", MISSING, note="not in the current run"))
            else:
                lines.append(VerdictLine(label, "row", batch, b.get("status"), "-", INCOMPARABLE, gating=False,
                                  note="failed in the baseline; not in the current run"))
            continue
        matched.add(batch_used)
        lines += _compare_rows(label, batch, b, c, baseline, current, options)
    for batch, c in c_rows.items():
        if batch not in matched:
            lines.append(VerdictLine(label, "row", batch, "-", c.get("status"), NEW, gating=False,
                              note="not in the baseline"))
    return lines


def _cell_metrics(label: str, b: Mapping[str, Any], c: Mapping[str, Any], options: Options) -> List[VerdictLine]:
    lines = []
    for metric in EXACT_METRICS:
        base_value, cur_value = b.get(metric), c.get(metric)
        line = _presence_line(label, metric, "-", base_value, cur_value, gating=True)
        if line is None and base_value is not None:
            v = exact_verdict(base_value, cur_value, allowed=metric in options.allow_changed)
            line = VerdictLine(label, metric, "-", base_value, cur_value, v.verdict, v.ratio, v.note)
        if line is not None:
            lines.append(line)
    base_value, cur_value = b.get(ACCURACY_METRIC), c.get(ACCURACY_METRIC)
    line = _presence_line(label, ACCURACY_METRIC, "-", base_value, cur_value, gating=True)
    if line is None and base_value is not None:
        v = accuracy_verdict(accuracy_sample(b), accuracy_sample(c), alpha=options.alpha,
                             floor=options.acc_floor, k=options.acc_k)
        line = VerdictLine(label, ACCURACY_METRIC, "-", base_value, cur_value, v.verdict, v.ratio, v.note)
    if line is not None:
        lines.append(line)
    return lines


def _compare_rows(label: str, batch: str, b: Mapping[str, Any], c: Mapping[str, Any], baseline: ResultFile,
                  current: ResultFile, options: Options) -> List[VerdictLine]:
    b_status, c_status = b.get("status"), c.get("status")
    if b_status == STATUS_OK and c_status != STATUS_OK:
        return [VerdictLine(label, "status", batch, b_status, c_status, REGRESSED, note=_error_note(c))]
    if b_status != STATUS_OK and c_status == STATUS_OK:
        return [VerdictLine(label, "status", batch, b_status, c_status, IMPROVED, gating=False,
                     note="failed in the baseline: nothing to compare")]
    if b_status != STATUS_OK:
        return [VerdictLine(label, "status", batch, b_status, c_status, INCOMPARABLE, gating=False,
                     note="failed in both: " + _error_note(c))]
    env_reason = fingerprint_difference(baseline.environment_fingerprint(b), current.environment_fingerprint(c))
    lines = []
    for m in TIMING_METRICS:
        base_value, cur_value = b.get(m.name), c.get(m.name)
        gating = options.gate_timings
        line = _presence_line(label, m.name, batch, base_value, cur_value, gating=gating)
        if line is None and base_value is not None:
            if env_reason:
                ratio = cur_value / base_value if base_value else None
                line = VerdictLine(label, m.name, batch, base_value, cur_value, INCOMPARABLE, ratio, env_reason, gating)
            else:
                v = timing_verdict(base_value, cur_value, b["_samples"][m.samples_column],
                                   c["_samples"][m.samples_column], higher_is_better=m.higher_is_better,
                                   threshold=options.threshold(m.name), alpha=options.alpha)
                note = v.note if gating else v.note + "; report only"
                line = VerdictLine(label, m.name, batch, base_value, cur_value, v.verdict, v.ratio, note, gating)
        if line is not None:
            lines.append(line)
    return lines


def _presence_line(label: str, metric: str, batch: str, base_value: Any, cur_value: Any,
                   gating: bool) -> Optional[VerdictLine]:
    """A missing/new line when only one side has the metric; None when both (or neither) do."""
    if base_value is not None and cur_value is None:
        return VerdictLine(label, metric, batch, base_value, "-", MISSING, note="empty in the current run",
                           gating=gating)
    if base_value is None and cur_value is not None:
        return VerdictLine(label, metric, batch, "-", cur_value, NEW, note="empty in the baseline", gating=False)
    return None


def accuracy_sample(row: Mapping[str, Any]) -> Optional[AccuracySample]:
    """A row's (or a report point's) accuracy as per-seed values; None when it has no accuracy.

    The seed lists come from ``row["_samples"]`` where the loader parsed them, else from the row's own
    ';'-separated text. A row without them (hand-made) stands for n equal seeds with the recorded std."""
    mean = _number(row.get(ACCURACY_METRIC))
    if mean is None:
        return None
    parsed = row.get("_samples") or {}

    def samples(column: str) -> List[float]:
        return list(parsed[column]) if column in parsed else parse_samples(_text(row.get(column)))

    seeds = tuple(samples("top1_acc_seeds"))
    if not seeds:
        n = int(_number(row.get("n_seeds")) or 1)
        seeds = _seeds_with(mean, _number(row.get("top1_acc_std")) or 0.0, n)
    test_images = _number(row.get("test_images"))
    correct = tuple(int(x) for x in samples("top1_correct_seeds"))
    return AccuracySample(seeds, int(test_images) if test_images is not None else None, correct)


def _number(value: Any) -> Optional[float]:
    """A cell as a float; None when empty or NaN (pandas reads an empty cell as NaN)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    f = float(value)
    return None if math.isnan(f) else f


def _text(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _seeds_with(mean: float, std: float, n: int) -> Tuple[float, ...]:
    """n values with the given mean and sample std (for rows that record only those two)."""
    if n < 2 or std == 0:
        return (mean,) * max(n, 1)
    pairs = n // 2  # values mean +/- a in pairs, plus the mean itself when n is odd
    a = std * math.sqrt((n - 1) / (2 * pairs))  # sample variance 2 * pairs * a^2 / (n - 1) = std^2
    return tuple([mean + a, mean - a] * pairs + [mean] * (n % 2))


def _group(rows: Iterable[Dict[str, Any]]) -> Dict[Tuple[str, ...], Dict[str, Dict[str, Any]]]:
    groups: Dict[Tuple[str, ...], Dict[str, Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(config_key(row), {})[row["_batch"]] = row
    return groups


def config_key(row: Mapping[str, Any]) -> Tuple[str, ...]:
    """The configuration a row measured, without its batch size."""
    return tuple(key_text(row.get(c)) for c in CONFIG_COLUMNS)


def _group_label(key: Tuple[str, ...], row: Mapping[str, Any]) -> str:
    cell_id, device, precision, memory_format, compiled = key
    extra = " compiled" if compiled == "true" else ""
    return f"{row.get('variant') or '?'}  [{cell_id} {device} {precision} {memory_format}{extra}]"


def key_text(value: Any) -> str:
    """A key cell as text; pandas may give a bool, numpy.bool_ or 'true' for the same flag."""
    if value is None:
        return ""
    text = str(value).strip()
    return text.lower() if text.lower() in ("true", "false") else text


def int_text(value: Any) -> str:
    if value is None:
        return ""
    try:
        f = float(value)
        return str(int(f)) if f == int(f) else str(f)
    except (TypeError, ValueError):
        return str(value)


def _error_note(row: Mapping[str, Any]) -> str:
    """A failed row's error for a verdict's note: one line, short enough for a table cell (none: empty)."""
    return one_line(row.get("error") or "", ERROR_NOTE_CHARS)
