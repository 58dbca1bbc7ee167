"""How long ``--dry-run`` takes over a 10,000-sample design space (target: <= 10 s on 2 cores).

Writes a grid whose ``sample:`` section draws N CIFAR ResNeXt variants under a
MAC budget, then times ``benchmark.py --grid G --dry-run`` end to end in a fresh
process (interpreter start, imports, sampling with analytic counts, resolving
and printing every cell), ``--rounds`` times, and reports the median. One more
in-process pass counts ``nn.Module`` constructions to show that no model is
built, and splits the time into loading (sampling + resolving) and printing.

    python -m benchmarks.space_dry_run [--n 10000] [--rounds 3] [--limit 10] [--layer-table TABLE.csv]

With ``--layer-table`` each dry run also predicts every cell's latency from that per-layer table
(``benchmark.py --dry-run --layer-table``), which needs the machine's fingerprint (importing torch).

Exit code 0 when the median is within ``--limit`` seconds and no module was built, 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional, Tuple

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def space_grid(n: int, threads: int = 2) -> dict:
    """A CIFAR ResNeXt space with well over N distinct members in 20-60 MMACs."""
    return {
        "name": "space-dry-run",
        "defaults": {"preset": "resnext29_32x4d", "device": "cpu", "batch_sizes": [1, 32], "threads": threads,
                     "train": {"dataset": "cifar10", "epochs": 1}},
        "sample": {
            "seed": 0, "n": n,
            "settings": {
                "cardinality": {"choice": [1, 2, 4, 8, 16, 32]},
                "bottleneck_width": {"log_uniform": [2, 64]},
                "depth": {"choice": [11, 20, 29, 38]},
                "width_multiplier": {"choice": [0.125, 0.25, 0.375, 0.5]},
                "stem_width": {"int": [8, 64]},
            },
            "constraints": {"macs": [20e6, 60e6]},
        },
    }


def time_subprocess(grid_path: str, out_csv: str, layer_table: Optional[str] = None) -> Tuple[float, float]:
    """(wall seconds, CPU seconds) of one dry run. On a shared machine the CPU time is what the
    run would take on a core of its own; the wall time also counts waiting for one."""
    cmd = [sys.executable, os.path.join(ROOT, "benchmark.py"), "--grid", grid_path, "--dry-run",
           "--device", "cpu", "--out", out_csv] + (["--layer-table", layer_table] if layer_table else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"dry run failed ({done.returncode}): {done.stderr.strip()}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def in_process_breakdown(grid_path: str, out_csv: str, layer_table: Optional[str] = None) -> dict:
    """Load, predict and print times, the sampler's report, and how many nn.Modules were constructed."""
    import torch

    from bench.cli import layer_table_predictions, print_dry_run
    from bench.grid import load_grid

    built = []
    original = torch.nn.Module.__init__

    def counting_init(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    torch.nn.Module.__init__ = counting_init
    try:
        start = time.perf_counter()
        grid = load_grid(grid_path, device="cpu")
        loaded = time.perf_counter()
        notes = layer_table_predictions(grid, layer_table) if layer_table else None
        predicted = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            print_dry_run(grid, out_csv, predictions=notes)
        printed = time.perf_counter()
    finally:
        torch.nn.Module.__init__ = original
    return {"cells": len(grid.cells), "load_s": loaded - start, "predict_s": predicted - loaded,
            "print_s": printed - predicted,
            "modules_built": len(built), "sampling": grid.sampling.describe()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=float, default=10.0, help="seconds the median must not exceed")
    ap.add_argument("--threads", type=int, default=2, help="the space's threads (a layer table is per thread count)")
    ap.add_argument("--layer-table", default=None, metavar="TABLE.csv",
                    help="also predict each cell's latency from this per-layer table")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid_path = os.path.join(tmp, "space.yaml")
        with open(grid_path, "w") as f:
            yaml.safe_dump(space_grid(args.n, args.threads), f)
        out_csv = os.path.join(tmp, "none.csv")  # absent: the dry run lists every cell as to run
        load_before = os.getloadavg()[0]
        table = os.path.abspath(args.layer_table) if args.layer_table else None
        runs = [time_subprocess(grid_path, out_csv, table) for _ in range(args.rounds)]
        facts = in_process_breakdown(grid_path, out_csv, table)
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    median = statistics.median(walls)
    with_table = f", latency from {args.layer_table}" if args.layer_table else ""
    print(f"dry run of a {args.n}-sample space ({facts['cells']} cells; {facts['sampling']}{with_table})")
    print(f"  end to end, fresh process: median wall {median:.2f} s, median CPU {statistics.median(cpus):.2f} s "
          f"over {args.rounds} rounds (wall {', '.join(f'{t:.2f}' for t in walls)} s); limit {args.limit:g} s wall")
    print(f"  in process: load (sample + resolve) {facts['load_s']:.2f} s, layer-table predictions "
          f"{facts['predict_s']:.2f} s, print {facts['print_s']:.2f} s, "
          f"nn.Modules built: {facts['modules_built']}")
    print(f"  cpu: {os.cpu_count()} cores; 1-min load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (other processes compete for the cores when it exceeds the count)")
    ok = median <= args.limit and facts["modules_built"] == 0
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
