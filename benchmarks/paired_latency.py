"""Two variants of a grid timed side by side: the ratio of their times with a confidence interval.

A cell's latency is timed on its own, and cells run one after another, so on
a machine whose speed drifts two rows differ by the drift as well as by the
models. This script builds two variants of a grid in one process and times
them in alternating short blocks (``bench.measure.paired``); the ratio B/A
per round cancels the drift, and the sign-test interval of its median says
whether B differs from A.

    python -m benchmarks.paired_latency --grid grids/study-cpu-speed.yaml \\
        --a resnet29_w0.25 --b resnext29_32x4d_w0.25 --batch-size 1 [--phase inference|train_step]
        [--rounds 30] [--calls 10] [--threads 2] [--rounds-csv results/studies/cpu-cardinality/paired_rounds.csv]

``--rounds-csv`` appends every round (A's and B's ms, the ratio, who went
first) to a CSV, so the printed ratio and interval can be recomputed from the
file (``bench.measure.paired.read_rounds``); nothing already in it is changed.

Each variant runs with its cell's device, precision, memory format and
``cpu_allocator`` (both must agree on the allocator: it is one per process).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, List, Optional

import torch

from bench.errors import UserError
from bench.grid import Cell, load_grid
from bench.measure import allocator
from bench.measure.numerics import autocast, numeric_settings
from bench.measure.paired import PairedRatio, comparison_label, rounds_csv, time_interleaved
from bench.measure.profile import inference_fn, train_step_fn
from bench.measure.timing import make_timer
from bench.run.cell import build_for_cell, memory_format_of


def find_cell(cells: List[Cell], variant: str, grid: str) -> Cell:
    """The first cell of ``variant``; a one-line error listing the grid's variants otherwise."""
    for cell in cells:
        if cell.variant == variant:
            return cell
    names = ", ".join(sorted({c.variant for c in cells}))
    raise UserError(f"{grid}: no variant {variant!r}; the grid has: {names}")


def workload(cell: Cell, batch: int, phase: str) -> Callable[[], None]:
    """One call of the cell's inference or training step at ``batch``, as the harness times it."""
    settings = cell.settings
    device = settings["device"]
    memory_format = memory_format_of(settings)
    model = build_for_cell(cell).to(device=device, memory_format=memory_format)
    size = cell.model.input_size
    x = torch.randn(batch, cell.model.in_channels, size, size, device=device).contiguous(memory_format=memory_format)

    def cast():
        return autocast(device, settings["precision"])
    if phase == "inference":
        model.eval()
        return inference_fn(model, x, cast)
    model.train()
    labels = torch.randint(0, cell.model.num_classes, (batch,), device=device)
    return train_step_fn(model, x, labels, cast)


def compare(grid: str, name_a: str, name_b: str, batch: int, phase: str, rounds: int, calls: int,
            threads: Optional[int]) -> PairedRatio:
    cells = load_grid(grid).cells
    a, b = find_cell(cells, name_a, grid), find_cell(cells, name_b, grid)
    if a.settings["device"] != b.settings["device"]:
        raise UserError(f"{grid}: {name_a} runs on {a.settings['device']}, {name_b} on {b.settings['device']}; "
                         f"a side-by-side ratio needs one device")
    device = a.settings["device"]
    if device == "cpu":
        allocator.ensure(a.settings.get("cpu_allocator", allocator.DEFAULT_ALLOCATOR))
        allocator.ensure(b.settings.get("cpu_allocator", allocator.DEFAULT_ALLOCATOR))
    with numeric_settings(device, threads=threads if threads is not None else a.settings.get("threads"),
                          tf32=a.settings["tf32"]):
        fn_a, fn_b = workload(a, batch, phase), workload(b, batch, phase)
        return time_interleaved(fn_a, fn_b, make_timer(device), rounds=rounds, calls=calls)


def append_rounds(path: str, paired: PairedRatio, comparison: str, started: str) -> None:
    """Append the rounds to ``path`` (with the header when the file is new); follows no symlink."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "a") as f:
        f.write(rounds_csv(paired, comparison, started, header=os.fstat(f.fileno()).st_size == 0))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", required=True)
    parser.add_argument("--a", required=True, help="variant name of the reference (the denominator)")
    parser.add_argument("--b", required=True, help="variant name compared with it")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--phase", choices=("inference", "train_step"), default="inference")
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds (>= 6 for a 95%% interval)")
    parser.add_argument("--calls", type=int, default=10, help="timed calls of each variant per round")
    parser.add_argument("--threads", type=int, default=None, help="default: the cells' own setting")
    parser.add_argument("--rounds-csv", default=None, metavar="PATH", help="append every round to this CSV")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        paired = compare(args.grid, args.a, args.b, args.batch_size, args.phase, args.rounds, args.calls,
                         args.threads)
        if args.rounds_csv:
            append_rounds(args.rounds_csv, paired, comparison_label(args.phase, args.batch_size, args.a, args.b),
                          started)
    except (UserError, allocator.AllocatorConflict, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {args.rounds_csv}: cannot append the rounds: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"{args.phase} at batch {args.batch_size}: {paired.describe(args.a, args.b)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
