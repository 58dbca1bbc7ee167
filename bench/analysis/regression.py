"""The ``compare`` subcommand: a run against a stored baseline, with verdicts a CI job can gate on.

Reads two result files (CSV + JSON sidecar) and nothing else: no model is
built or run here. This module loads and checks the files, formats the table
and runs the CLI; the verdicts themselves are pure functions in
:mod:`bench.analysis.verdicts` (re-exported here).

Exit code: 1 when anything gating regressed, changed or went missing, else 0;
bad input is a :class:`UserError` (exit 2). See docs/regression.md.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Dict, List, Sequence, Tuple

from bench.analysis.verdicts import (  # noqa: F401 - re-exported: the verdict API callers know from here
    ACCURACY_METRIC, ALLOWED, CHANGED, CONFIG_COLUMNS, DEFAULT_ACC_FLOOR, DEFAULT_ACC_K, DEFAULT_ALPHA,
    DEFAULT_THRESHOLD, EXACT_METRICS, FAILING_VERDICTS, IMPROVED, INCOMPARABLE, MISSING, NEW, NOISE, OK, REGRESSED,
    TIMING_BY_NAME, TIMING_METRICS, VERDICTS, AccuracySample, Comparison, VerdictLine, Options, ResultFile, Verdict,
    accuracy_sample, accuracy_verdict, compare, config_key, exact_verdict, fingerprint_difference, int_text,
    mann_whitney_p, pooled_std, seed_mean_test, timing_verdict, two_proportion_test)
from bench.checks import shown
from bench.errors import UserError
from bench.results.files import sidecar_path
from bench.results.samples import parse_samples
from bench.results.schema import STATUS_OK
from bench.results.sidecar import Sidecar
from bench.results.validate import read_table

# Where named baselines live: `baseline` stores them here, `compare --baseline NAME` looks here.
BASELINES_DIR = os.path.join("results", "baselines")
REQUIRED_COLUMNS: Tuple[str, ...] = ("cell_id", "status", "device", "precision", "memory_format", "batch_size")
_SAMPLE_COLUMNS = sorted({m.samples_column for m in TIMING_METRICS} | {"top1_acc_seeds", "top1_correct_seeds"})


# ------------------------------------------------------------------ reading files
def load(path: str) -> ResultFile:
    """Read and check a result CSV and its sidecar; UserError naming file, line and column.

    Every value is checked against the one rule set of
    :mod:`bench.results.validate`. A sidecar that belongs to another run is
    left out with a note (its environment would be the wrong one).
    """
    table = read_table(path, required=REQUIRED_COLUMNS)
    rows: List[Dict[str, Any]] = []
    seen: Dict[Tuple[str, ...], int] = {}
    for line_no, raw in zip(table.line_numbers, table.frame.to_dict("records")):
        row = {k: (None if _is_missing(v) else v) for k, v in raw.items()}
        if not row.get("cell_id"):
            raise UserError(f"{path}: line {line_no}, column cell_id: expected a cell id, got an empty cell")
        row["_samples"] = {col: parse_samples(row.get(col)) for col in _SAMPLE_COLUMNS}
        batch = row.get("requested_batch_size")
        row["_batch"] = int_text(batch if batch is not None else row.get("batch_size"))
        key = config_key(row) + (row["_batch"],)
        if key in seen:
            raise UserError(f"{path}: lines {seen[key]} and {line_no} are the same configuration "
                            f"(cell_id {row['cell_id']}, batch {row['_batch'] or '-'}); compare one run at a time")
        seen[key] = line_no
        rows.append(row)
    sidecar = Sidecar.read(path)
    notes = list(table.notes)
    if sidecar is not None:
        run_ids = [r.get("run_id") for r in rows]
        mismatch = sidecar.mismatch(path, run_ids)
        if sidecar.foreign(run_ids):
            notes.append(mismatch + ": ignored, so its timings are incomparable")
            sidecar = None
        elif mismatch:
            notes.append(mismatch + ": those rows' timings are incomparable")
    return ResultFile(path, rows, sidecar, notes)


def require_comparable(baseline: ResultFile) -> None:
    """A baseline must hold something a run can fail against: at least one row with status ok."""
    if not baseline.rows:
        raise UserError(f"{baseline.path}: no rows (only a header); a baseline needs measured rows")
    if not any(r.get("status") == STATUS_OK for r in baseline.rows):
        statuses = sorted({str(r.get("status")) for r in baseline.rows})
        raise UserError(f"{baseline.path}: no row with status ok (only {', '.join(statuses)}); "
                        f"nothing in it can catch a regression")


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
        raise UserError(f"{where}: {shown(metric)} is not a timing metric; expected one of {', '.join(TIMING_BY_NAME)}")
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if isinstance(value, bool) or not (0 < fraction < 10):
        raise UserError(f"{where}: {metric}: expected a fraction > 0 such as 0.05, got {shown(value)}")
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


# ------------------------------------------------------------------ the table
def format_metric_value(metric: str, value: Any) -> str:
    if value is None or isinstance(value, str):
        return "-" if value in (None, "") else value
    if metric in EXACT_METRICS:
        return f"{value:,.0f}"
    if metric == ACCURACY_METRIC:
        return f"{value:.4f}"
    return f"{value:.4g}"


def format_table(comparison: Comparison, show_all: bool = False) -> str:
    """The comparison as one table grouped by row; ok lines only with ``show_all``."""
    visible = [ln for ln in comparison.lines if show_all or ln.verdict != OK]
    header = f"  {'metric':24s} {'bs':>4s} {'baseline':>13s} {'current':>13s} {'ratio':>7s}  {'verdict':12s} note"
    out = [header, "  " + "-" * (len(header) - 2)]
    group = None
    for ln in visible:
        if ln.group != group:
            group = ln.group
            out.append(group)
        ratio = f"{ln.ratio:.3f}" if ln.ratio is not None else "-"
        baseline, current = format_metric_value(ln.metric, ln.baseline), format_metric_value(ln.metric, ln.current)
        out.append(f"  {ln.metric:24s} {ln.batch or '-':>4s} {baseline:>13s} {current:>13s} {ratio:>7s}  "
                   f"{ln.verdict:12s} {ln.note}".rstrip())
    if not visible:
        out.append("  (every line is ok)" if comparison.lines else "  (nothing to compare)")
    return "\n".join(out)


def format_outcome(comparison: Comparison, show_all: bool = False) -> str:
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
    parser.add_argument("--dir", default=BASELINES_DIR,
                        help="folder of named baselines, for --baseline NAME")
    parser.add_argument("--all", action="store_true", help="also show the ok lines")
    parser.add_argument("--timings", choices=("report", "gate"), default="report",
                        help="report: timings are compared and shown but never fail; gate: a significant "
                             "timing regression fails (use on a dedicated machine whose fingerprint matches)")
    parser.add_argument("--threshold", action="append", default=[], metavar="METRIC=FRACTION",
                        help=f"relative threshold of a timing metric (default {DEFAULT_THRESHOLD:g}, or the "
                             f"baseline sidecar's 'thresholds'); repeatable. Metrics: {', '.join(TIMING_BY_NAME)}")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help="significance level of the tests: Mann-Whitney U on raw timing samples, and the "
                             "accuracy tests (two-proportion z on correct counts, Welch t on seed means)")
    parser.add_argument("--allow-changed", action="append", default=[], metavar="METRIC",
                        help=f"an exact metric allowed to change (repeatable): {', '.join(EXACT_METRICS)}")
    parser.add_argument("--acc-k", type=float, default=DEFAULT_ACC_K,
                        help="only for files that cannot be tested (no test_images and one seed): accuracy "
                             "regresses when it drops by more than max(floor, k x pooled std over seeds)")
    parser.add_argument("--acc-floor", type=float, default=DEFAULT_ACC_FLOOR,
                        help="smallest accuracy drop (fraction, 0.005 = 0.5 pp) that counts as a regression, "
                             "even when significant")


def resolve_baseline(value: str, folder: str) -> str:
    """A path as given, or NAME -> FOLDER/NAME.csv."""
    if value.endswith(".csv") or os.sep in value:
        return value
    return os.path.join(folder, value + ".csv")


def options_from_args(args: argparse.Namespace, baseline: ResultFile) -> Options:
    for metric in args.allow_changed:
        if metric not in EXACT_METRICS:
            raise UserError(f"--allow-changed {metric}: not an exact metric; "
                            f"expected one of {', '.join(EXACT_METRICS)}")
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
    require_comparable(baseline)
    options = options_from_args(args, baseline)
    current = load(args.run)
    comparison = compare(baseline, current, options)
    mode = "gate" if options.gate_timings else "report only (not gating)"
    print(f"compare {args.run}\n   vs baseline {baseline_path}\ntimings: {mode}")
    for side in (baseline, current):
        for note in side.notes:
            print(f"warning: {note}", file=sys.stderr)
        if side.meta is None and not os.path.exists(sidecar_path(side.path)):
            print(f"note: {sidecar_path(side.path)} not found: timings are incomparable", file=sys.stderr)
    print(format_table(comparison, show_all=args.all))
    print(format_outcome(comparison, show_all=args.all))
    return 1 if comparison.failed else 0
