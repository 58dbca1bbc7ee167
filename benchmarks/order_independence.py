"""Order independence: one cell timed alone, and after other cells in the same process.

Issue 17 saw the quarter-width ResNeXt-29 C=4 read 239 ms right after the
C=1 cell and 678-761 ms on its own: with glibc's defaults, what ran before
moves the mmap threshold, and the timed loop then page-faults more or less.
This script times the ``--target`` variant in a fresh process alone, and in
another fresh process after the other variants (each with its training-step
timing, which updates weights), and prints the ratio of the two medians next
to their relative IQRs. Under ``cpu_allocator: tuned`` the ratio should stay
within the noise (about 1 +- 0.1 on a quiet machine); ``--cpu-allocator
system`` shows the effect the setting removes.

    python -m benchmarks.order_independence [--target 4x24] [--threads 2] [--rounds 2] [--max-time 3]
        [--cpu-allocator tuned|system]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Dict, List, Optional

from bench.measure import allocator

from benchmarks.allocator_table import VARIANTS, cell_entry, run_child


def child(entries_json: str) -> int:
    """In a fresh process: measure every cell in order; print the last one's median and relative IQR."""
    from bench.grid import expand_grid
    from bench.run.cell import measure_cell

    cells = expand_grid({"include": json.loads(entries_json)}, "order_independence", cuda_available=False).cells
    row: Dict[str, object] = {}
    for cell in cells:
        row = measure_cell(cell)[0]
    print(json.dumps({"ms": row["latency_ms_median"], "iqr": row["latency_ms_iqr"], "sys": row["latency_sys_share"],
                      "variant": row["variant"], "malloc": row["cpu_malloc"]}))
    return 0


def run_fresh(entries: List[Dict[str, object]], setting: str) -> Dict[str, object]:
    return run_child("benchmarks.order_independence", entries, setting)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="4x24", choices=[f"{c}x{d}" for c, d in VARIANTS])
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per order")
    p.add_argument("--max-time", type=float, default=3.0, help="time budget of each timed loop, s")
    p.add_argument("--cpu-allocator", choices=allocator.ALLOCATORS, default=allocator.DEFAULT_ALLOCATOR)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child)

    def entry(c: int, d: int, train_step: bool) -> Dict[str, object]:
        return {**cell_entry(c, d, args.cpu_allocator, args.threads, args.max_time), "train_step": train_step}

    target = tuple(int(v) for v in args.target.split("x"))
    others = [entry(c, d, True) for c, d in VARIANTS if (c, d) != target]
    orders = {"alone": [entry(*target, False)], "after others": others + [entry(*target, False)]}
    results: Dict[str, List[Dict[str, object]]] = {name: [] for name in orders}
    for round_ in range(args.rounds):
        for name in (list(orders) if round_ % 2 == 0 else list(orders)[::-1]):  # alternate against drift
            results[name].append(run_fresh(orders[name], args.cpu_allocator))
    print(f"target {results['alone'][0]['variant']} at batch 128, {args.threads} threads, "
          f"allocator {results['alone'][0]['malloc']}, {args.rounds} fresh processes per order")
    medians = {}
    for name, rs in results.items():
        medians[name] = statistics.median(float(r["ms"]) for r in rs)
        rel_iqr = statistics.median(float(r["iqr"]) / float(r["ms"]) for r in rs)
        sys_share = statistics.median(float(r["sys"] or 0.0) for r in rs)
        rounds = ", ".join("%.1f" % float(r["ms"]) for r in rs)
        print(f"  {name:13s} median {medians[name]:9.1f} ms  IQR/median {rel_iqr:5.1%}  sys share {sys_share:.2f}  "
              f"(rounds: {rounds})")
    print(f"  ratio after/alone: {medians['after others'] / medians['alone']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
