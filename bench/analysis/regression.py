"""The ``compare`` subcommand: a run against a stored baseline, with verdicts a CI job can gate on.

Reads two result files (CSV + JSON sidecar) and nothing else: no model is
built or run here. Rows are paired by ``cell_id`` and configuration; each
metric of a pair gets a verdict from a pure function:

* exact metrics (params, MACs, FLOPs, activations) must not change at all;
* timings must move past a relative threshold *and* differ significantly
  (Mann-Whitney U over the raw samples) to count, and are compared only when
  the environment fingerprint of the two runs matches;
* accuracy must drop by more than ``max(floor, k x pooled std over seeds)``.

Exit code: 1 when anything gating regressed, changed or went missing, else 0;
bad input is a :class:`UserError` (exit 2). See docs/regression.md.
"""
from __future__ import annotations

import argparse
import math
import statistics
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from bench.results.fingerprint import fingerprint
from bench.errors import UserError
from bench.results.files import read_results, read_sidecar, sidecar_path
from bench.results.schema import STATUS_OK
from bench.results.samples import parse_samples

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
DEFAULT_ACC_K = 2.0
DEFAULT_ACC_FLOOR = 0.005  # 0.5 percentage points: below this, a drop is not worth a red build

# Columns that identify a row besides its batch size. cell_id already hashes
# the settings; the explicit columns guard against files whose ids collide
# after hand edits and make the pairing readable.
CONFIG_COLUMNS: Tuple[str, ...] = ("cell_id", "device", "precision", "memory_format", "compile")
REQUIRED_COLUMNS: Tuple[str, ...] = ("cell_id", "status", "device", "precision", "memory_format", "batch_size")

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
    ``~``: the change could be noise.
    """
    if not (baseline > 0 and current > 0):
        return Verdict(INCOMPARABLE, None, f"non-positive value (baseline {baseline:g}, current {current:g})")
    ratio = current / baseline
    worse = ratio if not higher_is_better else 1.0 / ratio  # > 1 means slower
    if 1.0 / (1.0 + threshold) <= worse <= 1.0 + threshold:
        return Verdict(OK, ratio, f"{worse - 1:+.1%} time, within {threshold:.0%}")
    direction = REGRESSED if worse > 1 else IMPROVED
    p = mann_whitney_p(list(baseline_samples), list(current_samples))
    change = f"{worse - 1:+.1%} time"
    if p is None:
        return Verdict(NOISE, ratio, f"{change}; too few raw samples to test significance")
    if p < alpha:
        return Verdict(direction, ratio, f"{change}, p={p:.2g}", p)
    return Verdict(NOISE, ratio, f"{change} but p={p:.2g} >= {alpha:g}: within noise", p)


def exact_verdict(baseline: float, current: float, allowed: bool = False) -> Verdict:
    """Exact metrics: equal, or changed (which fails unless the change is allowed)."""
    if baseline == current:
        return Verdict(OK, 1.0)
    ratio = current / baseline if baseline else None
    note = f"{current - baseline:+,.0f}" + (" (allowed by --allow-changed)" if allowed else "")
    return Verdict(ALLOWED if allowed else CHANGED, ratio, note)


@dataclass(frozen=True)
class AccuracyStats:
    mean: float
    std: float  # sample std over seeds; 0 for one seed
    n: int


def pooled_std(a: AccuracyStats, b: AccuracyStats) -> float:
    """Pooled sample std of two groups; 0 when neither has more than one seed."""
    dof = (a.n - 1) + (b.n - 1)
    if dof <= 0:
        return 0.0
    return math.sqrt(((a.n - 1) * a.std ** 2 + (b.n - 1) * b.std ** 2) / dof)


def accuracy_verdict(baseline: AccuracyStats, current: AccuracyStats, *, k: float = DEFAULT_ACC_K,
                     floor: float = DEFAULT_ACC_FLOOR) -> Verdict:
    """Regressed when the mean drops by more than ``max(floor, k * pooled std)``.

    With one seed on either side there is no spread to learn from on that
    side, so the margin leans on the floor and the note says the verdict is weak.
    """
    margin = max(floor, k * pooled_std(baseline, current))
    diff = current.mean - baseline.mean
    ratio = current.mean / baseline.mean if baseline.mean else None
    note = f"{diff * 100:+.2f} pp, margin {margin * 100:.2f} pp"
    if min(baseline.n, current.n) < 2:
        note += f"; weak: {min(baseline.n, current.n)} seed"
    else:
        note += f"; seeds {baseline.n} vs {current.n}"
    if diff < -margin:
        return Verdict(REGRESSED, ratio, note)
    if diff > margin:
        return Verdict(IMPROVED, ratio, note)
    return Verdict(OK, ratio, note)


def fingerprint_difference(baseline: Optional[Mapping[str, Any]], current: Optional[Mapping[str, Any]]) -> str:
    """'' when the fingerprints match, else a short reason naming what differs."""
    if baseline is None or current is None:
        return "environment unknown (no sidecar)"
    diffs = [f"{k} {baseline.get(k)!s} vs {current.get(k)!s}"
             for k in sorted(set(baseline) | set(current)) if baseline.get(k) != current.get(k)]
    return "; ".join(diffs)


# ------------------------------------------------------------------ the comparison
@dataclass(frozen=True)
class Line:
    """One line of the table."""

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
    lines: List[Line]

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
    """One side of a comparison: rows (NaN as None) and the sidecar, if any."""

    path: str
    rows: List[Dict[str, Any]]
    meta: Optional[Dict[str, Any]]

    def environment(self, run_id: Any) -> Optional[Dict[str, Any]]:
        """The environment of the run that wrote a row.

        A resumed or merged file holds rows of several runs; its sidecar keeps
        each run's environment under ``runs`` (matched by the row's run_id),
        and the top-level ``environment`` is the latest run's.
        """
        if not self.meta:
            return None
        for run in self.meta.get("runs") or []:
            if isinstance(run, dict) and run_id and run.get("run_id") == run_id:
                env = run.get("environment")
                return env if isinstance(env, dict) else None
        env = self.meta.get("environment")
        return env if isinstance(env, dict) else None

    def environment_fingerprint(self, row: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """What must match for this row's timings to be comparable with another run's."""
        env = self.environment(row.get("run_id"))
        if env is None:
            return None
        fp = fingerprint(env, str(row.get("device") or "cpu"))
        if row.get("device_name"):
            fp["device_name"] = row["device_name"]
        fp.update(threads=_int_text(row.get("threads")), precision=row.get("precision"),
                  memory_format=row.get("memory_format"))
        return fp


def compare(baseline: ResultFile, current: ResultFile, options: Options) -> Comparison:
    """All verdict lines for ``current`` against ``baseline``: a pure function of the two files."""
    base_groups = _group(baseline.rows)
    cur_groups = _group(current.rows)
    lines: List[Line] = []
    for key in list(base_groups) + [k for k in cur_groups if k not in base_groups]:
        b_rows, c_rows = base_groups.get(key, {}), cur_groups.get(key, {})
        label = _group_label(key, next(iter((b_rows or c_rows).values())))
        lines += _compare_cell(label, b_rows, c_rows, baseline, current, options)
    return Comparison(lines)


def _compare_cell(label: str, b_rows: Dict[str, Dict[str, Any]], c_rows: Dict[str, Dict[str, Any]],
                  baseline: ResultFile, current: ResultFile, options: Options) -> List[Line]:
    lines: List[Line] = []
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
                lines.append(Line(label, "row", batch, STATUS_OK, "-", MISSING, note="not in the current run"))
            else:
                lines.append(Line(label, "row", batch, b.get("status"), "-", INCOMPARABLE, gating=False,
                                  note="failed in the baseline; not in the current run"))
            continue
        matched.add(batch_used)
        lines += _compare_rows(label, batch, b, c, baseline, current, options)
    for batch, c in c_rows.items():
        if batch not in matched:
            lines.append(Line(label, "row", batch, "-", c.get("status"), NEW, gating=False,
                              note="not in the baseline"))
    return lines


def _cell_metrics(label: str, b: Mapping[str, Any], c: Mapping[str, Any], options: Options) -> List[Line]:
    lines = []
    for metric in EXACT_METRICS:
        bv, cv = b.get(metric), c.get(metric)
        line = _presence_line(label, metric, "-", bv, cv, gating=True)
        if line is None and bv is not None:
            v = exact_verdict(bv, cv, allowed=metric in options.allow_changed)
            line = Line(label, metric, "-", bv, cv, v.verdict, v.ratio, v.note)
        if line is not None:
            lines.append(line)
    bv, cv = b.get(ACCURACY_METRIC), c.get(ACCURACY_METRIC)
    line = _presence_line(label, ACCURACY_METRIC, "-", bv, cv, gating=True)
    if line is None and bv is not None:
        v = accuracy_verdict(_accuracy_stats(b), _accuracy_stats(c), k=options.acc_k, floor=options.acc_floor)
        line = Line(label, ACCURACY_METRIC, "-", bv, cv, v.verdict, v.ratio, v.note)
    if line is not None:
        lines.append(line)
    return lines


def _compare_rows(label: str, batch: str, b: Mapping[str, Any], c: Mapping[str, Any], baseline: ResultFile,
                  current: ResultFile, options: Options) -> List[Line]:
    b_status, c_status = b.get("status"), c.get("status")
    if b_status == STATUS_OK and c_status != STATUS_OK:
        return [Line(label, "status", batch, b_status, c_status, REGRESSED, note=_one_line(c.get("error")))]
    if b_status != STATUS_OK and c_status == STATUS_OK:
        return [Line(label, "status", batch, b_status, c_status, IMPROVED, gating=False,
                     note="failed in the baseline: nothing to compare")]
    if b_status != STATUS_OK:
        return [Line(label, "status", batch, b_status, c_status, INCOMPARABLE, gating=False,
                     note="failed in both: " + _one_line(c.get("error")))]
    env_reason = fingerprint_difference(baseline.environment_fingerprint(b), current.environment_fingerprint(c))
    lines = []
    for m in TIMING_METRICS:
        bv, cv = b.get(m.name), c.get(m.name)
        gating = options.gate_timings
        line = _presence_line(label, m.name, batch, bv, cv, gating=gating)
        if line is None and bv is not None:
            if env_reason:
                line = Line(label, m.name, batch, bv, cv, INCOMPARABLE, cv / bv if bv else None, env_reason, gating)
            else:
                v = timing_verdict(bv, cv, b["_samples"][m.samples_column], c["_samples"][m.samples_column],
                                   higher_is_better=m.higher_is_better, threshold=options.threshold(m.name),
                                   alpha=options.alpha)
                note = v.note if gating else v.note + "; report only"
                line = Line(label, m.name, batch, bv, cv, v.verdict, v.ratio, note, gating)
        if line is not None:
            lines.append(line)
    return lines


def _presence_line(label: str, metric: str, batch: str, bv: Any, cv: Any, gating: bool) -> Optional[Line]:
    """A missing/new line when only one side has the metric; None when both (or neither) do."""
    if bv is not None and cv is None:
        return Line(label, metric, batch, bv, "-", MISSING, note="empty in the current run", gating=gating)
    if bv is None and cv is not None:
        return Line(label, metric, batch, "-", cv, NEW, note="empty in the baseline", gating=False)
    return None


def _accuracy_stats(row: Mapping[str, Any]) -> AccuracyStats:
    seeds = row["_samples"].get("top1_acc_seeds") or []
    n = row.get("n_seeds")
    n = int(n) if n is not None else max(len(seeds), 1)
    std = row.get("top1_acc_std")
    if std is None:
        std = statistics.stdev(seeds) if len(seeds) > 1 else 0.0
    return AccuracyStats(float(row[ACCURACY_METRIC]), float(std), n)


def _group(rows: Iterable[Dict[str, Any]]) -> Dict[Tuple[str, ...], Dict[str, Dict[str, Any]]]:
    groups: Dict[Tuple[str, ...], Dict[str, Dict[str, Any]]] = {}
    for row in rows:
        key = tuple(_text(row.get(c)) for c in CONFIG_COLUMNS)
        groups.setdefault(key, {})[row["_batch"]] = row
    return groups


def _group_label(key: Tuple[str, ...], row: Mapping[str, Any]) -> str:
    cell_id, device, precision, memory_format, compiled = key
    extra = " compiled" if compiled == "true" else ""
    return f"{row.get('variant') or '?'}  [{cell_id} {device} {precision} {memory_format}{extra}]"


# ------------------------------------------------------------------ reading files
_NUMERIC = list(EXACT_METRICS) + [m.name for m in TIMING_METRICS] + [
    ACCURACY_METRIC, "top1_acc_std", "n_seeds", "batch_size", "requested_batch_size", "threads"]
_SAMPLE_COLUMNS = sorted({m.samples_column for m in TIMING_METRICS} | {"top1_acc_seeds"})


def load(path: str) -> ResultFile:
    """Read and validate a result CSV and its sidecar; UserError naming file, column and row."""
    import pandas as pd

    df = read_results(path, required=REQUIRED_COLUMNS)
    rows: List[Dict[str, Any]] = []
    seen: Dict[Tuple[str, ...], int] = {}
    for i, raw in enumerate(df.to_dict("records")):
        line_no = i + 2  # header is line 1
        row = {k: (None if _is_missing(v) else v) for k, v in raw.items()}
        for col in _NUMERIC:
            if col in row and row[col] is not None:
                value = pd.to_numeric(row[col], errors="coerce")
                if _is_missing(value) or not math.isfinite(float(value)):
                    raise UserError(f"{path}: line {line_no}, column {col}: expected a number, got {row[col]!r}")
                row[col] = float(value)
        if not row.get("cell_id"):
            raise UserError(f"{path}: line {line_no}, column cell_id: expected a cell id, got an empty cell")
        row["_samples"] = {}
        for col in _SAMPLE_COLUMNS:
            try:
                row["_samples"][col] = parse_samples(row.get(col))
            except ValueError:
                raise UserError(f"{path}: line {line_no}, column {col}: expected ';'-separated numbers, "
                                f"got {str(row.get(col))[:40]!r}") from None
        batch = row.get("requested_batch_size")
        row["_batch"] = _int_text(batch if batch is not None else row.get("batch_size"))
        key = tuple(_text(row.get(c)) for c in CONFIG_COLUMNS) + (row["_batch"],)
        if key in seen:
            raise UserError(f"{path}: lines {seen[key]} and {line_no} are the same configuration "
                            f"(cell_id {row['cell_id']}, batch {row['_batch'] or '-'}); compare one run at a time")
        seen[key] = line_no
        rows.append(row)
    return ResultFile(path, rows, read_sidecar(path))


def sidecar_thresholds(result: ResultFile) -> Dict[str, float]:
    """The baseline's own thresholds (``thresholds`` in its sidecar), validated."""
    if not result.meta or "thresholds" not in result.meta:
        return {}
    where = f"{sidecar_path(result.path)}: thresholds"
    raw = result.meta["thresholds"]
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping of timing metric to fraction, got {type(raw).__name__}")
    return {metric: check_threshold(metric, value, where) for metric, value in raw.items()}


def check_threshold(metric: str, value: Any, where: str) -> float:
    if metric not in TIMING_BY_NAME:
        raise UserError(f"{where}: {metric!r} is not a timing metric; expected one of {', '.join(TIMING_BY_NAME)}")
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if isinstance(value, bool) or not (0 < fraction < 10):
        raise UserError(f"{where}: {metric}: expected a fraction > 0 such as 0.05, got {value!r}")
    return fraction


def parse_threshold_args(items: Sequence[str], where: str = "--threshold") -> Dict[str, float]:
    """``["latency_ms_median=0.05", ...]`` -> ``{"latency_ms_median": 0.05}``."""
    out = {}
    for item in items:
        metric, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"{where} {item}: expected METRIC=FRACTION, e.g. latency_ms_median=0.05")
        out[metric.strip()] = check_threshold(metric.strip(), value.strip(), f"{where} {item}")
    return out


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _text(value: Any) -> str:
    """A key cell as text; pandas may give a bool, numpy.bool_ or 'true' for the same flag."""
    if value is None:
        return ""
    text = str(value).strip()
    return text.lower() if text.lower() in ("true", "false") else text


def _int_text(value: Any) -> str:
    if value is None:
        return ""
    try:
        f = float(value)
        return str(int(f)) if f == int(f) else str(f)
    except (TypeError, ValueError):
        return str(value)


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split())[:120]


# ------------------------------------------------------------------ the table
def format_value(metric: str, value: Any) -> str:
    if value is None or isinstance(value, str):
        return "-" if value in (None, "") else value
    if metric in EXACT_METRICS:
        return f"{value:,.0f}"
    if metric == ACCURACY_METRIC:
        return f"{value:.4f}"
    return f"{value:.4g}"


def format_table(comparison: Comparison, show_all: bool = False) -> str:
    """The comparison as one table grouped by row; ok lines only with ``show_all``."""
    shown = [ln for ln in comparison.lines if show_all or ln.verdict != OK]
    header = f"  {'metric':24s} {'bs':>4s} {'baseline':>13s} {'current':>13s} {'ratio':>7s}  {'verdict':12s} note"
    out = [header, "  " + "-" * (len(header) - 2)]
    group = None
    for ln in shown:
        if ln.group != group:
            group = ln.group
            out.append(group)
        ratio = f"{ln.ratio:.3f}" if ln.ratio is not None else "-"
        out.append(f"  {ln.metric:24s} {ln.batch or '-':>4s} {format_value(ln.metric, ln.baseline):>13s} "
                   f"{format_value(ln.metric, ln.current):>13s} {ratio:>7s}  {ln.verdict:12s} {ln.note}".rstrip())
    if not shown:
        out.append("  (every line is ok)" if comparison.lines else "  (nothing to compare)")
    return "\n".join(out)


def format_summary(comparison: Comparison, show_all: bool = False) -> str:
    counts = comparison.counts()
    parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    lines = [f"{len(comparison.lines)} comparisons: {parts or 'none'}"]
    if counts[OK] and not show_all:
        lines[0] += f" ({counts[OK]} ok lines hidden; --all shows them)"
    reported = [ln for ln in comparison.lines if not ln.gating and ln.verdict in FAILING_VERDICTS]
    if reported:
        lines.append(f"{len(reported)} timing line(s) {'/'.join(sorted({ln.verdict for ln in reported}))} "
                     f"but not gating (--timings report; use --timings gate on a dedicated machine)")
    failing = [ln for ln in comparison.lines if ln.fails]
    if failing:
        kinds = {}
        for ln in failing:
            kinds[ln.verdict] = kinds.get(ln.verdict, 0) + 1
        lines.append("result: FAIL (" + ", ".join(f"{n} {v}" for v, n in kinds.items()) + ")")
    else:
        lines.append("result: PASS")
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="result CSV of the run to check")
    parser.add_argument("--baseline", required=True,
                        help="baseline CSV, or a NAME stored by 'benchmark.py baseline' (looked up in --dir)")
    parser.add_argument("--dir", default=os.path.join("results", "baselines"),
                        help="folder of named baselines, for --baseline NAME")
    parser.add_argument("--all", action="store_true", help="also show the ok lines")
    parser.add_argument("--timings", choices=("report", "gate"), default="report",
                        help="report: timings are compared and shown but never fail; gate: a significant "
                             "timing regression fails (use on a dedicated machine whose fingerprint matches)")
    parser.add_argument("--threshold", action="append", default=[], metavar="METRIC=FRACTION",
                        help=f"relative threshold of a timing metric (default {DEFAULT_THRESHOLD:g}, or the "
                             f"baseline sidecar's 'thresholds'); repeatable. Metrics: {', '.join(TIMING_BY_NAME)}")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help="significance level of the Mann-Whitney U test on raw timing samples")
    parser.add_argument("--allow-changed", action="append", default=[], metavar="METRIC",
                        help=f"an exact metric allowed to change (repeatable): {', '.join(EXACT_METRICS)}")
    parser.add_argument("--acc-k", type=float, default=DEFAULT_ACC_K,
                        help="accuracy regresses when it drops by more than max(floor, k x pooled std over seeds)")
    parser.add_argument("--acc-floor", type=float, default=DEFAULT_ACC_FLOOR,
                        help="smallest accuracy drop (fraction, 0.005 = 0.5 pp) that counts as a regression")


def resolve_baseline(value: str, folder: str) -> str:
    """A path as given, or NAME -> FOLDER/NAME.csv."""
    if value.endswith(".csv") or os.sep in value:
        return value
    return os.path.join(folder, value + ".csv")


def options_from_args(args: argparse.Namespace, baseline: ResultFile) -> Options:
    for metric in args.allow_changed:
        if metric not in EXACT_METRICS:
            raise UserError(f"--allow-changed {metric}: not an exact metric; expected one of {', '.join(EXACT_METRICS)}")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha {args.alpha:g}: expected a probability between 0 and 1")
    if args.acc_k < 0 or not math.isfinite(args.acc_k):
        raise UserError(f"--acc-k {args.acc_k:g}: expected a number >= 0")
    if not 0 <= args.acc_floor < 1:
        raise UserError(f"--acc-floor {args.acc_floor:g}: expected a fraction in [0, 1), e.g. 0.005")
    thresholds = sidecar_thresholds(baseline)
    thresholds.update(parse_threshold_args(args.threshold))  # the command line wins
    return Options(thresholds=thresholds, allow_changed=tuple(args.allow_changed), alpha=args.alpha,
                   acc_k=args.acc_k, acc_floor=args.acc_floor, gate_timings=args.timings == "gate")


def run(args: argparse.Namespace) -> int:
    baseline_path = resolve_baseline(args.baseline, args.dir)
    baseline = load(baseline_path)
    options = options_from_args(args, baseline)
    current = load(args.run)
    comparison = compare(baseline, current, options)
    mode = "gate" if options.gate_timings else "report only (not gating)"
    print(f"compare {args.run}\n   vs baseline {baseline_path}\ntimings: {mode}")
    for side in (baseline, current):
        if side.meta is None:
            print(f"note: {sidecar_path(side.path)} not found: timings are incomparable", file=sys.stderr)
    print(format_table(comparison, show_all=args.all))
    print(format_summary(comparison, show_all=args.all))
    return 1 if comparison.failed else 0
