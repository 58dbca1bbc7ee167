"""``benchmark.py profile PRESET|FIELDS...``: where one model's time goes.

The model is a one-cell grid built from the command line (a preset and/or
fields, ``key=value`` or ``key value``), measured by the same code as a grid
cell with ``profile: true``: the timed loop first, then extra untimed,
profiled iterations. Prints the per-class and per-stage tables with the
agreement check and writes the profile CSV (``--out``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Sequence

from bench.checks import shown
from bench.errors import GridError, UserError

SOURCE = "<command line>"
DEFAULT_DIR = os.path.join("results", "profiles")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="+", metavar="PRESET|FIELD",
                        help="a preset and/or grid fields, as key=value or key value "
                             "(e.g. resnext29_32x4d width_multiplier 0.25 stem_width 16)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8], metavar="N",
                        help="batch size(s) to time and profile")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="autocast precision")
    parser.add_argument("--memory-format", choices=("contiguous", "channels_last"), default="contiguous")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    parser.add_argument("--no-train-step", action="store_true", help="profile inference only")
    parser.add_argument("--out", default=None, metavar="PATH.csv",
                        help=f"profile CSV (default: {DEFAULT_DIR}/VARIANT-DEVICE-PRECISION.profile.csv)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")


def parse_model(tokens: Sequence[str]) -> Dict[str, Any]:
    """Grid fields from ``PRESET key=value key value ...``; values read as YAML (numbers, lists)."""
    from bench.grid import SETTINGS, parse_yaml

    fields: Dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if "=" in token:
            key, text = token.split("=", 1)
            i += 1
        elif token in SETTINGS:
            if i + 1 >= len(tokens):
                raise UserError(f"{SOURCE}: {token}: expected a value after it")
            key, text = token, tokens[i + 1]
            i += 2
        elif "preset" not in fields:
            key, text = "preset", token
            i += 1
        else:
            raise UserError(f"{SOURCE}: {token}: expected a setting name (key=value or key value); "
                            f"the preset is already {shown(fields['preset'])}")
        try:  # the grid's YAML reader: no key twice in a {...} value, aliases bounded
            fields[key] = parse_yaml(text, SOURCE) if key != "preset" else text
        except GridError as e:
            raise UserError(f"{SOURCE}: {key}: cannot read the value {shown(text)} ({e.detail})") from None
    return fields


def build_cell(args: argparse.Namespace):
    """The one cell the command line describes (validated as a grid cell: same messages)."""
    from bench.grid import MEASURE_SETTINGS, expand_grid

    fields = parse_model(args.model)
    measure = [k for k in fields if k in MEASURE_SETTINGS]
    if measure:
        raise UserError(f"{SOURCE}: {measure[0]}: a measurement setting; use the command's flags "
                        f"(benchmark.py profile --help)")
    defaults = dict(fields, batch_sizes=list(args.batch_size), precision=args.precision,
                    memory_format=args.memory_format, threads=args.threads, profile=True, train=None,
                    train_step=not args.no_train_step)
    grid = expand_grid({"name": "profile", "include": [defaults]}, SOURCE, device=args.device)
    return grid.cells[0]


def default_out(cell) -> str:
    s = cell.settings
    return os.path.join(DEFAULT_DIR, f"{cell.variant}-{s['device']}-{s['precision']}.profile.csv")


def _check_out(out: str, force: bool) -> None:
    if not out.endswith(".csv"):
        raise UserError(f"--out {out}: expected a path ending in .csv")
    if os.path.exists(out) and not force:
        raise UserError(f"--out {out}: exists; choose another path or pass --force to overwrite it")
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UserError(f"--out {out}: {parent} is not a folder")
    from bench.results.files import check_writable

    check_writable(out)  # /proc, a read-only folder, a full disk: refused now, not after the measurement


def write_profile_csv(out: str, rows: List[Dict[str, Any]]) -> None:
    from bench.results.files import rows_to_csv_text, write_bytes_atomic
    from bench.results.profile_schema import PROFILE_COLUMNS

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_bytes_atomic(out, rows_to_csv_text(rows, PROFILE_COLUMNS, header=True).encode("utf-8"))


def print_profile(out: str) -> None:
    """The per-class and per-stage tables, agreement line and largest gap of each batch and phase group."""
    from bench.analysis.profile_report import (agreement_line, class_table, format_class_table, groups,
                                               largest_gap, load_profiles, stage_table)

    for key, group, rows in groups(load_profiles([out])):
        _, variant, device, precision, batch = key
        table = class_table(rows)
        print(f"\n{variant}, batch {int(batch)}, {device} {precision}, {group}")
        print("\n".join(format_class_table(table)))
        stages = stage_table(rows)
        print("by stage: " + ", ".join(f"{s} {r['time_share']:.0%} of time / {r['mac_share']:.0%} of MACs"
                                       for s, r in stages.iterrows()))
        print(agreement_line(rows))
        gap = largest_gap(table)
        if gap:
            print(f"largest gap: {gap}")


def run(args: argparse.Namespace) -> int:
    if any(b < 1 for b in args.batch_size):
        raise UserError(f"--batch-size: expected positive integers, got {args.batch_size}")
    cell = build_cell(args)
    out = args.out or default_out(cell)
    _check_out(out, args.force)  # before any work
    if cell.settings["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device (use --device cpu)")

    from bench.results.profile_schema import pop_profile_rows
    from bench.run.executors import run_cell_safely

    rows = run_cell_safely(cell)
    profile_rows = pop_profile_rows(rows)
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        print(f"{cell.variant}: {failed[0].get('status')}: {failed[0].get('error')}", file=sys.stderr)
    if not profile_rows:
        return 1
    write_profile_csv(out, profile_rows)
    print_profile(out)
    print(f"\nwrote {len(profile_rows)} profile rows to {out}")
    return 1 if failed else 0
