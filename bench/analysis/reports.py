"""The ``report`` subcommand: Pareto plots and a one-page Markdown comparison of result CSVs.

Reads result files only (never builds or runs a model). The steps:

1. load and validate each CSV (:func:`load_results`), keeping the file it came from;
2. reduce the ``status == ok`` rows to one *point* per measured cell and
   split them by (device, device name, precision) (:mod:`bench.analysis.report_points`,
   pure pandas: points, frontiers, joins);
3. per group and pair of axes, draw the Pareto frontier
   (:mod:`bench.analysis.report_figures`) and table it (:mod:`bench.analysis.report_markdown`);
4. write ``report.md`` beside the figures, and ``report.html``: the same text and points as one
   self-contained page with interactive plots and sortable tables (:mod:`bench.analysis.report_html`).

This module only loads, composes and writes; computing and rendering live in
the three modules above.

A cell measured in two files (or two runs appended to one file) stays two
points, each labelled with its file or run, so nothing is silently averaged.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.analysis import space_report
from bench.analysis import report_figures as figures
from bench.analysis import report_html
from bench.analysis import report_markdown as md
# Re-exported: tests and callers know the metric table and pairs from here.
from bench.analysis.report_points import (  # noqa: F401
    ACCURACY_PAIRS, METRICS, POINT_KEY, SPEED_PAIRS, Frontier, Group, Metric, Pair, Source, assign_groups,
    Family, accuracy_tests, cardinality_sets, cell_points, drop_copies, frontier, headline_comparisons, pairs_for,
    points_and_joins)
from bench.analysis.paired_images import load_images
from bench.results.compare_spec import merge as merge_families
from bench.results.compare_spec import parse_compare, parse_compare_arg
from bench.results.files import sidecar_path
from bench.results.sidecar import Sidecar
from bench.results.validate import read_table
from bench.results.schema import REGISTRY, STATUS_OK

# Columns a file must have for a report; everything else is optional (filled empty).
REQUIRED = ("cell_id", "variant", "status", "device", "precision", "batch_size", "params", "macs")
# The column types come from the registry: number columns are floats (NaN when empty), the rest objects.
# A column an older file lacks is added empty, except the share columns (see _read_rows).
SYS_SHARE_COLUMNS = ("latency_sys_share", "train_step_sys_share")
NUMERIC = tuple(c.name for c in REGISTRY if c.rule.numeric and c.name not in SYS_SHARE_COLUMNS)
TEXT = tuple(c.name for c in REGISTRY if not c.rule.numeric)


# --------------------------------------------------------------------------- loading


def _source_names(paths: Sequence[str]) -> List[str]:
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names = []
    for p, stem in zip(paths, stems):
        if stems.count(stem) > 1:
            parent = os.path.basename(os.path.dirname(os.path.abspath(p)))
            stem = f"{parent}/{stem}"
        names.append(stem)
    return names


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def load_results(paths: Sequence[str]) -> Tuple[pd.DataFrame, List[Source]]:
    """All rows of all files, with a ``source`` column; :class:`UserError` for unusable files."""
    if not paths:
        raise UserError("report: no result CSV given")
    ordered = _each_file_once(paths)
    sources, frames = [], []
    for path, name in zip(ordered, _source_names(ordered)):
        df = _read_rows(path)
        df["source"] = name
        sources.append(_source(path, name, df["run_id"]))
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True)
    if not (rows["status"] == STATUS_OK).any():
        counts = rows["status"].value_counts()
        what = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no rows at all"
        raise UserError(f"{', '.join(ordered)}: no rows with status ok ({what}); nothing to report")
    return rows, sources


def _each_file_once(paths: Sequence[str]) -> List[str]:
    """The paths in the order given, a file given twice (by any spelling) kept at its first place, as first spelt."""
    unique = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    given = {os.path.abspath(p): p for p in reversed(paths)}
    return [given[a] for a in unique]


def _read_rows(path: str) -> pd.DataFrame:
    """One file's rows, validated, with every report column present and normalised."""
    table = read_table(path, required=REQUIRED)  # every column checked by the one shared rule set
    for note in table.notes:
        print(f"warning: {note}", file=sys.stderr)
    df = table.frame
    for col in TEXT:
        if col not in df.columns:
            df[col] = None
    for col in NUMERIC:
        if col not in df.columns:
            df[col] = np.nan
    df = df.astype({c: object for c in TEXT})
    for col in SYS_SHARE_COLUMNS:  # newer runners only: kept absent when absent, so the report can tell
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df["status"] = df["status"].astype(str).str.strip().str.lower()
    df["run_id"] = df["run_id"].where(df["run_id"].notna(), "")
    # family is written by the runner (models.ModelConfig.family, its one definition); a hand-made file
    # without it leaves it empty, drawn in the neutral colour
    df["latency_noisy"] = df["latency_noisy"].map(_truthy)
    df["train_step_noisy"] = df["train_step_noisy"].map(_truthy)
    df["device_name"] = df["device_name"].where(df["device_name"].notna(), df["device"])
    return df.copy()  # consolidated: the column swaps above leave one block each (pandas warns past 100)


def _source(path: str, name: str, run_ids: pd.Series) -> Source:
    """The file and its sidecar, when the sidecar is there and describes these rows' runs."""
    src = Source(path, name)
    try:
        sidecar = Sidecar.read(path)
        src.sidecar = sidecar.data if sidecar else None
        if sidecar is None:
            src.sidecar_note = f"no sidecar ({os.path.basename(sidecar_path(path))}) beside the CSV"
        elif sidecar.mismatch(path, run_ids):  # another run's environment would be a false claim
            src.sidecar_note = sidecar.mismatch(path, run_ids)
            if sidecar.foreign(run_ids):
                src.sidecar, src.sidecar_note = None, src.sidecar_note + ": ignored"
            print(f"warning: {src.sidecar_note}", file=sys.stderr)
    except UserError as e:  # the CSV alone still makes a report; say what is missing
        src.sidecar_note = str(e)
    return src


# --------------------------------------------------------------------------- the report

_HOW_TO_READ = ("## How to read this report", "",
               "- A point is on a Pareto frontier when no other point of the same section is at least as good on "
               "both axes and better on one. Exact ties are all kept; points whose accuracy is within noise of a "
               "point dominating them (seed spread plus the test set's sampling error) are listed as tied.",
               "- Latency is the median forward time at batch 1; throughput and memory come from the largest batch "
               "each cell measured (shown as @bsN).",
               "- Colour: family (ResNet / ResNeXt); marker: cardinality; marker size: parameters.",
               "- Details: `docs/reports.md`.", "")


def build_report(rows: pd.DataFrame, sources: List[Source], out_dir: str, compare: Optional[List[Any]] = None,
                 limitations: Sequence[str] = ()) -> Tuple[str, Dict[str, Any]]:
    """Write the figures for loaded results into ``out_dir``; return (Markdown text, facts for tests).

    ``compare``: the contrasts given as ``--compare`` (else the family the files' grids declare, else
    all-pairs); ``limitations``: sentences the findings carry (``--limitation``)."""
    family = comparison_family(sources, compare)
    images = load_image_records(rows, sources)
    as_read = rows  # the environment table counts each file's rows as they are on disk
    rows, copies = drop_copies(rows)
    groups = assign_groups(rows)
    ok = rows[rows["status"] == STATUS_OK]
    points, join_notes = points_and_joins(ok)
    lines = _opening_lines(sources, points, join_notes, copies, as_read)
    facts: Dict[str, Any] = {"groups": {}, "figures": []}
    for group in groups:
        group.points = points[points["group"] == group.slug].reset_index(drop=True)
        group.rows = ok[ok["group"] == group.slug]
        if group.points.empty:
            lines += _empty_section_lines(group, ok)
            continue
        lines += _section_lines(group, out_dir, facts, family, images, limitations)
    lines += space_report.section(rows, [s.sidecar for s in sources], out_dir)  # sampled cells only
    lines += md.failed_lines(rows)
    from bench.analysis.profile_report import profile_lines  # RUN.profile.csv beside RUN.csv, if any
    lines += profile_lines([s.path for s in sources], out_dir)
    lines += _HOW_TO_READ
    return "\n".join(lines), facts


def _opening_lines(sources: List[Source], points: pd.DataFrame, join_notes: List[str], copies: int,
                   as_read: pd.DataFrame) -> List[str]:
    """Title, what was read, what was set aside, and the environment of each file."""
    title = ", ".join(s.name for s in sources)
    lines = [f"# Benchmark report: {title}", "",
             "Generated by `benchmark.py report` from " + ", ".join(f"`{s.path}`" for s in sources) + ". "
             "Only rows with status ok are plotted; each point is one measured cell. Timings from different "
             "devices or precisions are kept in separate sections and never mixed on one frontier.", ""]
    lines += md.dataset_warning(points)
    lines += md.join_lines(points.iloc[:0], join_notes)  # the variants that could not be joined, once
    if copies:
        lines += [f"{copies} row(s) repeated another file's row exactly (same run and values) and were counted "
                  "once.", ""]
    lines += md.environment_lines(sources, as_read)
    return lines


def _empty_section_lines(group: Group, ok: pd.DataFrame) -> List[str]:
    joined = "" if not (ok["group"] == group.slug).any() else \
        " Its training-only rows were joined on variant_id with speed rows of another section."
    return [f"## {group.title}", "", "No point for this device and precision." + joined, ""]


def _section_lines(group: Group, out_dir: str, facts: Dict[str, Any], family: Family,
                   images: Dict[Any, Any], limitations: Sequence[str]) -> List[str]:
    """One device/precision section: its points, frontiers and figures; the figures and frontiers go in ``facts``."""
    pairs = pairs_for(group.points)
    acc_note = "" if pairs is ACCURACY_PAIRS else \
        " No accuracy was measured here (a speed-only run), so the plots set speed and memory against complexity." \
        if pairs is SPEED_PAIRS else \
        " Only some points have an accuracy, so speed and memory are also set against complexity."
    lines = [f"## {group.title}", "",
             f"{len(group.points)} point(s) from " + ", ".join(f"`{s}`" for s in group.points["source"].unique())
             + f"; figures prefixed `{group.slug}-`.{acc_note}", ""]
    lines += md.join_lines(group.points)
    lines += md.noisy_lines(group.points)
    lines += md.headline_lines(group.points)
    tests = accuracy_tests(group.points, family, images)
    lines += md.findings_lines(group.points, tests, limitations=limitations) + md.comparison_lines(tests)
    fronts = {}
    for pair in pairs:
        fr = frontier(group.points, pair)
        fronts[pair.name] = fr
        figure = figures.figures_for(group, fr, out_dir)
        if figure:
            facts["figures"].append(figure)
        lines += md.pair_lines(group, fr, figure)
    lines += _curve_lines(group, out_dir, facts)
    lines += md.ranked_lines(group.points)
    lines += md.cardinality_lines(group.points)
    facts["groups"][group.slug] = {"title": group.title, "points": group.points, "frontiers": fronts,
                                   "accuracy_tests": tests}
    return lines


def _curve_lines(group: Group, out_dir: str, facts: Dict[str, Any]) -> List[str]:
    curves = figures.curve_figures(group, out_dir)
    if not curves:
        return []
    lines = ["### Batch-size curves", ""]
    for name, what in curves:
        facts["figures"].append(name)
        lines += [f"![{what}, {group.title}]({name}.png)", "",
                  f"Figure: [`{name}.png`]({name}.png), [`{name}.svg`]({name}.svg)", ""]
    return lines


def comparison_family(sources: Sequence[Source], compare: Optional[List[Any]]) -> Family:
    """The family to test: ``--compare``'s, else the union of what the files' grids declare, else all-pairs.

    A grid's ``compare:`` is read from the sidecar's copy of the grid source and checked again here (the
    sidecar is data, not trusted); a value that does not parse is a UserError naming the sidecar."""
    if compare:
        return Family(tuple(compare), "given as `report --compare`")
    declared, where = [], []
    for src in sources:
        source = ((src.sidecar or {}).get("grid") or {}).get("source")
        if isinstance(source, dict) and "compare" in source:
            try:
                declared.append(parse_compare(source["compare"]))
            except ValueError as e:
                raise UserError(f"{sidecar_path(src.path)}: grid.source.compare: {e}") from None
            where.append(os.path.basename(sidecar_path(src.path)))
    if not declared:
        return Family()
    return Family(tuple(merge_families(declared)), f"declared in the grid: `compare:` in {', '.join(where)}")


def load_image_records(rows: pd.DataFrame, sources: Sequence[Source]) -> Dict[Any, Any]:
    """Per-image records (``RUN.images.csv`` beside each CSV) of the trained ok rows, keyed by
    (file name, run_id, cell_id) as the points' ``acc_file``, ``acc_run_id``, ``acc_cell_id``."""
    out: Dict[Any, Any] = {}
    trained = rows[(rows["status"] == STATUS_OK) & rows["top1_acc"].notna()]
    for src in sources:
        mine = trained[trained["source"] == src.name]
        cells = list(dict.fromkeys(zip(mine["run_id"].astype(str), mine["cell_id"].astype(str))))
        for (run_id, cell_id), record in load_images(src.path, cells).items():
            out[(src.name, run_id, cell_id)] = record
    return out


def _write_text_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _prepare_out_dir(out_dir: str) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir}: exists and is not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out_dir}: cannot create the folder: {e.strerror}") from None


def write_report(csv_paths: List[str], out_dir: str, compare: Optional[List[Any]] = None,
                 limitations: Sequence[str] = ()) -> str:
    """Figures, ``report.md`` and ``report.html`` for the result CSVs in ``out_dir``; returns the report.md path.

    Raises :class:`UserError` for unusable input (missing file or columns, no ok rows)."""
    if not csv_paths:
        raise UserError("report: no result CSV given")
    rows, sources = load_results(csv_paths)  # every input validated before the output folder is touched
    _prepare_out_dir(out_dir)
    text, facts = build_report(rows, sources, out_dir, compare, limitations)
    return write_pages(text, facts, sources, out_dir)


def write_pages(text: str, facts: Dict[str, Any], sources: List[Source], out_dir: str) -> str:
    """``report.md`` and, from the same text and points, ``report.html`` (one self-contained page:
    inline SVG plots, sortable tables); returns the report.md path."""
    path = os.path.join(out_dir, "report.md")
    _write_text_atomic(path, text)
    page = report_html.render(text, facts, out_dir, "Benchmark report: " + ", ".join(s.name for s in sources))
    _write_text_atomic(os.path.join(out_dir, "report.html"), page)
    return path


# --------------------------------------------------------------------------- CLI


def default_out_dir(csv_paths: Sequence[str]) -> str:
    return os.path.join("plots", os.path.splitext(os.path.basename(csv_paths[0]))[0])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", nargs="+", help="result CSV(s); several are combined, kept apart by device/precision")
    # SUPPRESS: the default depends on the CSV, so the help says it rather than "(default: None)"
    parser.add_argument("--out", default=argparse.SUPPRESS,
                        help="output folder (default: plots/<stem of the first CSV>/)")
    parser.add_argument("--compare", action="append", default=None, metavar="CONTRAST",
                        help="the accuracy comparison family, declared before looking: all-pairs, SETTING=V1,V2,... "
                             "(every pair of those values; 3 or more also a trend test) or VARIANT_A:VARIANT_B; "
                             "repeatable (default: the grid's compare: key, else all-pairs)")
    parser.add_argument("--limitation", action="append", default=[], metavar="TEXT",
                        help="a sentence the findings must carry, e.g. that the recipe was tuned on the test set")


def _compare_arg(text: str) -> List[Any]:
    try:
        return parse_compare_arg(text)
    except ValueError as e:
        raise UserError(f"report --compare {text!r}: {e}") from None


def run(args: argparse.Namespace) -> int:
    out_dir = getattr(args, "out", None) or default_out_dir(args.csv)
    compare = None
    if args.compare:
        compare = merge_families([_compare_arg(text) for text in args.compare])
    path = write_report(list(args.csv), out_dir, compare, args.limitation)
    print(f"wrote plots and report to {path}")
    return 0
