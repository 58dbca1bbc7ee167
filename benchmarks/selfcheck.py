"""Check the harness's latency against an independent timer, torch.utils.benchmark.

For resnet18 and resnext50_32x4d at batch 8, 32x32 and 224x224 input, on the
same thread count, the harness's median forward latency (through the real
cell-measurement path) must agree with ``Timer.blocked_autorange()``'s median
within 5%. Each pair is measured twice in alternating order (harness, timer,
timer, harness) and the medians of both are compared, so slow drift of the
machine's speed does not masquerade as disagreement.

    python -m benchmarks.selfcheck [--threads 2] [--tolerance 0.05] [--out results/selfcheck-cpu.txt]

Exit code 0 when every pair agrees, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import List

import torch
from torch.utils import benchmark as tbench

from bench.run.environment import cpu_model
from bench.grid import expand_grid
from bench.run.cell import build_for_cell, measure_batch
from bench.run.rows import cell_columns

CASES = [("resnet18", 32), ("resnet18", 224), ("resnext50_32x4d", 32), ("resnext50_32x4d", 224)]
BATCH = 8


def harness_median(model, cell, max_time_s: float) -> float:
    base = dict(cell_columns(cell), flops=0, input_size=cell.model.input_size)
    row = measure_batch(model, cell.settings, base, BATCH, torch.contiguous_format)
    return row["latency_ms_median"]


def timer_median(model, cell, threads: int, min_run_time: float) -> float:
    x = torch.randn(BATCH, 3, cell.model.input_size, cell.model.input_size)
    timer = tbench.Timer(stmt="with torch.inference_mode(): model(x)", globals={"model": model, "x": x, "torch": torch},
                         num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--max-time", type=float, default=1.5, help="time budget of each loop of each round, s")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per case")
    p.add_argument("--out", default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    lines = [f"selfcheck: harness vs torch.utils.benchmark, batch {BATCH}, {args.threads} thread(s), {cpu_model()}, "
             f"torch {torch.__version__}",
             f"{'model':18s} {'input':>5s} {'harness ms':>11s} {'timer ms':>10s} {'ratio':>7s} "
             f"{'timer spread':>8s}  verdict"]
    failed = False
    for name, size in CASES:
        cell = expand_grid({"include": [{"preset": name, "input_size": size, "device": "cpu", "batch_sizes": [BATCH],
                                         "warmup": 3, "repeats": "auto", "max_time_s": args.max_time,
                                         "threads": args.threads, "train_step": False}]},
                           "selfcheck", cuda_available=False).cells[0]
        model = build_for_cell(cell).eval()
        hs, ts = [], []
        for round_ in range(args.rounds):
            if round_ % 2:
                ts.append(timer_median(model, cell, args.threads, args.max_time))
                hs.append(harness_median(model, cell, args.max_time))
            else:
                hs.append(harness_median(model, cell, args.max_time))
                ts.append(timer_median(model, cell, args.threads, args.max_time))
        harness, timer = statistics.median(hs), statistics.median(ts)
        ratio = harness / timer
        drift = (max(ts) - min(ts)) / timer
        ok = abs(ratio - 1) <= args.tolerance
        failed |= not ok
        lines.append(f"{name:18s} {size:5d} {harness:11.3f} {timer:10.3f} {ratio:7.3f} {drift:8.1%}  "
                     f"{'ok' if ok else 'DISAGREE'}")
        print(lines[-1] if len(lines) > 3 else "\n".join(lines), flush=True)
    lines.append("all agree within {:.0%}".format(args.tolerance) if not failed else "some pairs disagree")
    print(lines[-1])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
