"""Command line: ``benchmark.py --grid G`` runs a grid; subcommands analyse results.

Each subcommand lives in the module that owns its concern and provides
``add_arguments(parser)`` and ``run(args) -> int``; this module only wires
them up and turns :class:`UserError` into a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from typing import TYPE_CHECKING, Dict, List, Optional

from bench.errors import UserError, os_error_text

if TYPE_CHECKING:
    from bench.run.shard import Shard

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "report": ("bench.analysis.reports", "Pareto plots and a Markdown report from result CSVs"),
    "compare": ("bench.analysis.regression", "compare a run against a stored baseline (exit 1 on regression)"),
    "baseline": ("bench.analysis.baselines", "store a run as a named baseline under results/baselines/"),
    "merge": ("bench.run.merge", "combine shard outputs into one CSV"),
    "describe": ("bench.describe", "per-stage architecture summary of a preset or a grid's variants"),
    "profile": ("bench.profile_cli", "where one model's time goes: per stage and operator class, with MACs and bytes"),
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
    p.add_argument("--dry-run", action="store_true",
                   help="list the expanded cells with params/MACs (and, for an existing --out, which are done) "
                        "and exit")
    p.add_argument("--predict", nargs="?", const="", default=None, metavar="RUN.csv",
                   help="with --dry-run: annotate each cell with latencies predicted from this machine's per-layer "
                        "table (--layer-table, else results/layer-latency/table.csv when it holds this machine's "
                        "rows) and, given RUN.csv, with a batch-1 latency from a model fitted on RUN.csv's timed "
                        "cells (refused unless RUN.csv was measured in this environment); see docs/layer-latency.md "
                        "and docs/design-spaces.md")
    p.add_argument("--layer-table", default=None, metavar="TABLE.csv",
                   help="with --dry-run: annotate each cell with latencies predicted from a per-layer table measured "
                        "on this machine (refused for another machine's); see docs/layer-latency.md")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write plots and report.md after the run")
    g = p.add_argument_group("running and resuming (see docs/runner.md)")
    g.add_argument("--no-estimate", action="store_true",
                   help="no run-time estimate before the first cell (it may train a small model for a few seconds "
                        "in a child process; see docs/runner.md)")
    g.add_argument("--retry-failed", action="store_true",
                   help="run again the cells the output holds with a failed status (by default only cells "
                        "missing from --out run)")
    g.add_argument("--isolate", action="store_true",
                   help="run each cell in a fresh process: clean CUDA context, per-cell peak memory, a crash or "
                        "hang costs one cell")
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="per-cell time limit; a cell over it is killed and recorded as status=timeout "
                        "(implies --isolate with the serial executor)")
    g.add_argument("--shard", default=None, metavar="K/N",
                   help="run only the K-th of N balanced slices of the grid (1 <= K <= N); "
                        "combine the outputs with 'benchmark.py merge'")
    g.add_argument("--executor", choices=EXECUTORS, default="serial",
                   help="serial: cells one by one on this machine; ray: cells as Ray tasks (pip install '.[ray]')")
    g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="Ray cluster to use, e.g. HEAD:6379 or auto (implies --executor ray; "
                        "default: start a local Ray instance)")
    return p


EXECUTORS = ("serial", "ray")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows a default only where there is one worth showing (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def default_out(grid_path: str, quick: bool, shard: Optional["Shard"] = None) -> str:
    stem = os.path.splitext(os.path.basename(grid_path))[0] + ("-quick" if quick else "")
    if shard is not None:  # shards must not share a file; merge them with 'merge'
        stem += f"-shard{shard.index}of{shard.count}"
    return os.path.join(DEFAULT_OUT_DIR, stem + ".csv")


def main(argv: Optional[List[str]] = None) -> int:
    argv = _attach_shard_value(list(sys.argv[1:] if argv is None else argv))
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
    except BrokenPipeError:  # e.g. `benchmark.py --dry-run | head`: the reader left, not an error of ours
        sys.stderr.close()
        return 0


def _attach_shard_value(argv: List[str]) -> List[str]:
    """``--shard -1/2`` as ``--shard=-1/2``: argparse takes a value starting with '-' for an option and
    would answer with its usage text, where a bad shard deserves the one-line error the others get."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--shard" and out[i + 1].startswith("-") and out[i + 1][1:2].isdigit():
            out[i:i + 2] = [f"--shard={out[i + 1]}"]
            break
    return out


def _run_subcommand(name: str, argv: List[str]) -> int:
    module_name, help_ = SUBCOMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"benchmark.py {name}", description=help_, formatter_class=_Formatter)
    if name == "presets":
        parser.parse_args(argv)
        return list_presets_command()
    module = importlib.import_module(module_name)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    if name not in WRITERS:
        return int(module.run(args) or 0)
    try:
        return int(module.run(args) or 0)
    except OSError as e:  # a full disk mid-write: the writers replace files atomically, so nothing is lost
        where = e.filename or getattr(args, "out", None) or "the output"
        raise UserError(f"{name}: cannot write {where}: {os_error_text(e)}; files already there are unchanged") \
            from None


# Subcommands that write result or report files; an OSError while writing is a one-line error (exit 2).
WRITERS = ("report", "merge")


def list_presets_command() -> int:
    from models import get_preset, list_presets, model_complexity

    print(f"{'preset':20s} {'block':10s} {'stem':8s} {'params':>12s} {'GMACs':>8s}  input")
    for name in list_presets():
        cfg = get_preset(name)
        c = model_complexity(cfg)
        print(f"{name:20s} {cfg.block:10s} {cfg.stem:8s} {c.params:12,d} {c.macs / 1e9:8.3f}  {cfg.input_size}px")
    return 0


def run_command(args: argparse.Namespace, argv: List[str]) -> int:
    from bench.grid import load_grid
    from bench.run.shard import parse_shard

    shard = parse_shard(args.shard) if args.shard is not None else None
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout {args.timeout:g}: expected a positive number of seconds")
    if args.ray_address is not None:
        args.executor = "ray"
    if args.executor == "ray" and not args.dry_run:
        from bench.run.executors import import_ray

        import_ray()  # fail before any work when the extra is missing
    for flag, value in (("--predict", args.predict), ("--layer-table", args.layer_table)):
        if value is not None and not args.dry_run:
            raise UserError(f"{flag} {value}".rstrip() + ": only used with --dry-run")
    grid = load_grid(args.grid, quick=args.quick, device=args.device, data_root=args.data_root)
    out = args.out or default_out(args.grid, args.quick, shard)
    _check_out_path(out)
    if args.dry_run:
        predict = latency_predictions(grid, args.predict) if args.predict else None
        table_path = args.layer_table
        if table_path is None and args.predict is not None:
            from bench.analysis.layer_predict import DEFAULT_TABLE
            table_path = DEFAULT_TABLE
        if table_path is not None:
            table = layer_table_predictions(grid, table_path, required=args.layer_table is not None)
            if table:
                predict = {k: f"{predict[k]}; {v}" for k, v in table.items()} if predict else table
        print_dry_run(grid, out, shard, args.retry_failed, predict)
        return 0

    from bench.results.files import check_writable

    check_writable(out)  # a read-only folder, /proc, a full disk: one line before any work
    preflight_pretrained(grid)
    preflight_data(grid)

    from bench.run import estimate
    from bench.run.runner import RunInterrupted, run_grid
    from bench.run.console import format_summary

    estimate.set_enabled(not args.no_estimate)

    command = ["benchmark.py", *argv]
    try:
        summary = run_grid(grid, out, executor=build_executor(args), progress=not args.no_progress,
                           command=command, quick=args.quick, retry_failed=args.retry_failed, shard=shard)
    except RunInterrupted as e:
        s = e.summary
        print(f"interrupted: {s.cells_run} cell(s) finished this run and are saved in {out}; "
              f"{s.remaining} still to run. Resume with the same command:\n  "
              + " ".join(shlex.quote(a) for a in ["python", *command]), file=sys.stderr)
        return e.exit_code
    if not summary.cells_run:
        if summary.plan is not None and not summary.plan.cells:  # more shards than cells
            print(f"shard {shard} holds no cell: the grid has {summary.plan.grid_cells} cell(s) for "
                  f"{shard.count if shard else 1} shard(s); nothing was run and no result file was written")
            return 0
        print(f"every cell is already in {out} (see above); nothing was run")
        return 0
    print(format_summary(summary.rows))
    print(f"\nwrote {len(summary.rows)} rows ({summary.cells_run} cell(s)) to {summary.csv_path}")
    print(f"wrote run metadata (grid, environment, runs) to {summary.sidecar_path}")
    if not args.no_report:
        _write_report(out)
    if summary.failed_cells:
        print(f"{summary.failed_cells} cell(s) failed: see the status and error columns "
              f"(--retry-failed runs them again)", file=sys.stderr)
    return 0 if summary.ok else 1


def preflight_pretrained(grid) -> None:
    """Cells that require pretrained weights fail now, not one by one hours into the run."""
    required = sorted({c.preset for c in grid.cells if c.pretrained is True})
    if not required:
        return
    from models.pretrained import PretrainedWeightsMismatch, PretrainedWeightsUnavailable, load_checkpoint, weights_for

    for preset in required:
        try:
            load_checkpoint(weights_for(preset))
        except PretrainedWeightsMismatch as e:
            raise UserError(f"{grid.path}: pretrained: {e}") from None
        except PretrainedWeightsUnavailable as e:
            raise UserError(f"{grid.path}: pretrained: {e} (or use pretrained: if_available to train from "
                            f"scratch without them)") from None


def preflight_data(grid) -> None:
    """A missing, offline or too small CIFAR-10 folder fails now, before any cell, as weights do."""
    from bench.train.data import preflight
    from bench.train.recipe import resolve

    configs, seen = [], set()
    for cell in grid.cells:
        train = cell.settings.get("train")
        if train is None:
            continue
        try:
            config = resolve(train)
        except ValueError:
            continue  # the grid loader has checked it; a cell reports anything left
        key = (config.dataset, config.data_root, config.download, config.train_subset, config.test_subset)
        if key not in seen:
            seen.add(key)
            configs.append(config)
    if configs:
        preflight(configs, f"{grid.path}: train")


def build_executor(args: argparse.Namespace):
    """The executor the run flags ask for."""
    from bench.run.executors import IsolatedExecutor, RayExecutor, SerialExecutor

    if args.executor == "ray":
        return RayExecutor(address=args.ray_address, isolate=args.isolate, timeout=args.timeout)
    if args.isolate or args.timeout is not None:
        return IsolatedExecutor(timeout=args.timeout)
    return SerialExecutor()


def _write_report(csv_path: str) -> None:
    try:
        from bench.analysis.reports import default_out_dir, write_report
    except ImportError as e:  # the results are safe on disk; a missing report module must not hide them
        print(f"warning: no report written: {e}", file=sys.stderr)
        return

    out_dir = default_out_dir([csv_path])  # plots/NAME/, as `benchmark.py report` picks
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


def latency_predictions(grid, run_csv: str) -> Dict[str, str]:
    """cell_id -> 'timed X ms' or 'predicted X ms [lo-hi]', from a latency model fitted on ``run_csv``.

    Refused (UserError) when ``run_csv`` was measured in another environment than this one."""
    from models import model_complexity

    from bench.analysis.latency_model import load_predictor
    from bench.results.fingerprint import fingerprint
    from bench.results.validate import read_table
    from bench.run import environment

    read_table(run_csv)  # the rule set every reader applies: a tampered -5 ms is refused, not printed as timed
    predictor = load_predictor(run_csv)
    env = {"software": environment.software(), "cpu": environment.cpu_info(),
           "gpus": environment.gpu_info() if any(c.settings["device"] == "cuda" for c in grid.cells) else []}
    notes = {}
    for cell in grid.cells:
        s = cell.settings
        timed = predictor.timed.get((cell.variant_id, s["device"], s["precision"]))
        if timed is not None:
            notes[cell.cell_id] = f"timed {timed:.3g} ms"
            continue
        model = predictor.model_for(s["device"], s["precision"], s.get("threads"))
        model.check_fingerprint(fingerprint(env, s["device"]), run_csv)
        c = model_complexity(cell.model)
        value = getattr(cell.model, predictor.group_by, None)
        if value is None:
            value = s.get(predictor.group_by)
        ms, lo, hi = model.predict(c.macs, c.acts, c.params, predictor.level(model, value))
        notes[cell.cell_id] = (f"predicted {ms:.3g} ms [{lo:.3g}-{hi:.3g}]" if ms == ms else
                               f"no prediction ({predictor.group_by} {value} was not timed)")
    return notes


def _gmacs(macs: int) -> str:
    """GMACs for the listing; a count beyond a float's range (a width of 1e200) in powers of ten, not a crash."""
    try:
        return f"{macs / 1e9:8.3f}"
    except OverflowError:
        from decimal import Decimal

        return f"{Decimal(macs) / 10 ** 9:.3e}"


def layer_table_predictions(grid, table_csv: str, required: bool = True) -> Dict[str, str]:
    """cell_id -> 'table bs1 X ms [lo-hi], ...': each batch size's latency from the layer table, from the
    cell's layer inventory (no model built). A table of another machine is refused (UserError); where the
    table was not asked for by name (``required`` False) a missing or foreign one is a printed line and no
    predictions."""
    from models.layers import inventory

    from bench.analysis.layer_predict import ForeignTable, load_predictor
    from bench.results.fingerprint import fingerprint, fingerprint_id
    from bench.run import environment

    if not required and not os.path.isfile(table_csv):
        print(f"layer table: none at {table_csv}, so no per-layer prediction (build one for this machine: "
              "python -m benchmarks.layer_latency table)")
        return {}
    current = fingerprint({"software": environment.software(), "cpu": environment.cpu_info(), "gpus": []}, "cpu")
    try:
        predictor = load_predictor(table_csv, current, fingerprint_id(current))
    except ForeignTable:
        if required:
            raise
        print(f"layer table: {table_csv} holds no rows of this machine (fingerprint {fingerprint_id(current)}), "
              "so no per-layer prediction (--layer-table names what differs)")
        return {}
    notes = {}
    for cell in grid.cells:
        s = cell.settings
        if s["device"] != "cpu":
            notes[cell.cell_id] = "table: CPU tables only"
            continue
        blocks = [(group.id, group.keys) for group in inventory(cell.model).groups]
        parts = []
        for batch in s["batch_sizes"]:
            spec = (batch, s["precision"], s["memory_format"], s.get("threads") or 0)
            if spec not in predictor.table.entries:
                parts.append(f"bs{batch} not in the table")
                continue
            ms, lo, hi, total = predictor.predict(blocks, spec)
            parts.append(f"bs{batch} {ms:.3g} ms" + (f" [{lo:.3g}-{hi:.3g}]" if lo == lo else " [no band]")
                         + (f" ({total.interpolated} layers interpolated)" if total.interpolated else ""))
        notes[cell.cell_id] = "table " + ", ".join(parts)
    return notes


def print_dry_run(grid, out: Optional[str] = None, shard=None, retry_failed: bool = False,
                  predictions: Optional[Dict[str, str]] = None) -> None:
    """The cells a run would see; with an existing ``out``, which of them it would run; with
    ``predictions`` (cell_id -> note), a latency note per cell."""
    from models import model_complexity

    from bench.run.runner import plan_run

    print(f"grid {grid.name}: {len(grid.cells)} cell(s)" +
          (f" ({grid.duplicates} duplicate(s) dropped)" if grid.duplicates else ""))
    if grid.sampling is not None:
        print(f"design space: {grid.sampling.describe()}")
    plan = plan_run(grid, out, retry_failed=retry_failed, shard=shard) if out else None
    state: dict = {}
    if plan is not None:
        state.update({c.cell_id: "done" for c in plan.done})
        state.update({c.cell_id: "failed" for c in plan.skipped})
        state.update({c.cell_id: ("retry" if c.cell_id in plan.retry else "to-run") for c in plan.todo})
        print(f"against {out}: {plan.describe(grid.name)}")
    cells = plan.cells if plan is not None else grid.cells
    for cell in cells:
        c = model_complexity(cell.model)
        s = cell.settings
        train = "train" if s.get("train") is not None else "no-train"
        mark = f"{state.get(cell.cell_id, ''):7s} " if state else ""
        note = f"  latency: {predictions[cell.cell_id]}" if predictions else ""
        print(f"  {mark}{cell.cell_id}  {cell.variant:28s} params={c.params:>12,d}  MACs={_gmacs(c.macs)}G  "
              f"{s['device']} {s['precision']} bs={','.join(map(str, s['batch_sizes']))} {train}  [{cell.origin}]"
              f"{note}")
