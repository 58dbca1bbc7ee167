"""Command line: ``benchmark.py --grid G`` runs a grid; subcommands analyse results.

Each subcommand lives in the module that owns its concern and provides
``add_arguments(parser)`` and ``run(args) -> int``; this module only wires
them up and turns :class:`UserError` into a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from .errors import UserError

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "report": ("bench.reports", "Pareto plots and a Markdown report from result CSVs"),
    "compare": ("bench.regression", "compare a run against a stored baseline (exit 1 on regression)"),
    "baseline": ("bench.baselines", "store a run as a named baseline under results/baselines/"),
    "merge": ("bench.merge", "combine shard outputs into one CSV"),
    "describe": ("bench.describe", "per-stage architecture summary of a preset or a grid's variants"),
    "presets": ("bench.cli", "list the named model presets"),
}

DEFAULT_OUT_DIR = os.path.join("results", "runs")


def build_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description="Benchmark ResNet/ResNeXt variants over a YAML grid: exact params/MACs/activations, "
                    "latency and throughput, peak memory and short-schedule CIFAR-10 accuracy.",
        epilog="subcommands (run 'benchmark.py SUBCOMMAND --help'):\n" + "\n".join(
            f"  {name:10s} {help_}" for name, (_, help_) in SUBCOMMANDS.items()),
        formatter_class=_Formatter,
    )
    p.add_argument("--grid", required=True, help="YAML grid file, e.g. grids/cardinality.yaml")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device for every cell (auto: the grid's setting; cuda if available)")
    p.add_argument("--out", default=None,
                   help=f"result CSV (sidecar NAME.json beside it); default {DEFAULT_OUT_DIR}/GRID[-quick].csv")
    p.add_argument("--quick", action="store_true",
                   help="shrink the grid to a CPU-sized run: batches <= 8, 10 repeats, tiny training subset")
    p.add_argument("--data-root", default=None,
                   help="folder holding cifar-10-batches-py/ (default: each cell's train.data_root, 'data')")
    p.add_argument("--dry-run", action="store_true", help="list the expanded cells with params/MACs and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write plots and report.md after the run")
    return p


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def default_out(grid_path: str, quick: bool) -> str:
    stem = os.path.splitext(os.path.basename(grid_path))[0]
    return os.path.join(DEFAULT_OUT_DIR, stem + ("-quick" if quick else "") + ".csv")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _run_subcommand(argv[0], argv[1:])
        return run_command(build_run_parser().parse_args(argv), argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run_subcommand(name: str, argv: List[str]) -> int:
    module_name, help_ = SUBCOMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"benchmark.py {name}", description=help_, formatter_class=_Formatter)
    if name == "presets":
        parser.parse_args(argv)
        return list_presets_command()
    module = importlib.import_module(module_name)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


def list_presets_command() -> int:
    from models import get_preset, list_presets, model_complexity

    print(f"{'preset':20s} {'block':10s} {'stem':8s} {'params':>12s} {'GMACs':>8s}  input")
    for name in list_presets():
        cfg = get_preset(name)
        c = model_complexity(cfg)
        print(f"{name:20s} {cfg.block:10s} {cfg.stem:8s} {c.params:12,d} {c.macs / 1e9:8.3f}  {cfg.input_size}px")
    return 0


def run_command(args: argparse.Namespace, argv: List[str]) -> int:
    from .grid import load_grid

    grid = load_grid(args.grid, quick=args.quick, device=args.device, data_root=args.data_root)
    if args.dry_run:
        print_dry_run(grid)
        return 0
    out = args.out or default_out(args.grid, args.quick)
    _check_out_path(out)

    from .runner import run_grid
    from .summary import format_summary

    summary = run_grid(grid, out, progress=not args.no_progress, command=["benchmark.py", *argv], quick=args.quick)
    print(format_summary(summary.rows))
    print(f"\nwrote {len(summary.rows)} rows to {summary.csv_path}")
    print(f"wrote run metadata (grid, environment) to {summary.sidecar_path}")
    if not args.no_report:
        _write_report(out)
    if summary.failed_cells:
        print(f"{summary.failed_cells} cell(s) failed: see the status and error columns", file=sys.stderr)
    return 0 if summary.ok else 1


def report_dir_for(csv_path: str) -> str:
    """plots/NAME/ for results/.../NAME.csv."""
    return os.path.join("plots", os.path.splitext(os.path.basename(csv_path))[0])


def _write_report(csv_path: str) -> None:
    from .reports import write_report

    out_dir = report_dir_for(csv_path)
    try:
        report = write_report([csv_path], out_dir)
    except UserError as e:  # the results are safe on disk; a report problem must not hide them
        print(f"warning: no report written: {e}", file=sys.stderr)
        return
    print(f"wrote plots and report to {report}")


def _check_out_path(out: str) -> None:
    if not out.endswith(".csv"):
        raise UserError(f"--out {out}: expected a path ending in .csv")
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UserError(f"--out {out}: {parent} is not a folder")


def print_dry_run(grid) -> None:
    from models import model_complexity

    print(f"grid {grid.name}: {len(grid.cells)} cell(s)" +
          (f" ({grid.duplicates} duplicate(s) dropped)" if grid.duplicates else ""))
    for cell in grid.cells:
        c = model_complexity(cell.model)
        s = cell.settings
        train = "train" if s.get("train") is not None else "no-train"
        print(f"  {cell.cell_id}  {cell.variant:28s} params={c.params:>12,d}  MACs={c.macs / 1e9:8.3f}G  "
              f"{s['device']} {s['precision']} bs={','.join(map(str, s['batch_sizes']))} {train}  [{cell.origin}]")
