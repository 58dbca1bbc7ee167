"""Check the harness's latency against an independent timer, torch.utils.benchmark.

For resnet18 and resnext50_32x4d at batch 8, 32x32 and 224x224 input, and a
quarter-width ResNeXt-29 (32x4d) at batch 128, whose activations reach 32 MiB
(glibc's largest dynamic mmap threshold), on the same thread count, the
harness's median forward latency (through the real cell-measurement path)
must agree with ``Timer.blocked_autorange()``'s median within 5%. Each pair is
measured in alternating rounds and the medians are compared, so slow drift of
the machine's speed does not masquerade as disagreement.

Agreement alone proves little where both timers share an artifact: under
glibc's default allocator both spend much of a batch-128 loop re-faulting
mmapped buffers. So the system-time share of both timers' loops is printed
too (``harness sys``, ``timer sys``), and the allocator in effect is named
(``--cpu-allocator``, default tuned, as in a grid run).

    python -m benchmarks.selfcheck [--threads 2] [--tolerance 0.05] [--cpu-allocator tuned|system]
        [--out results/selfcheck-cpu.txt]

Exit code 0 when every pair agrees, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import List, Tuple

import torch
from torch.utils import benchmark as tbench

from bench.measure import allocator
from bench.run.environment import cpu_model
from bench.grid import expand_grid
from bench.run.cell import build_for_cell, measure_batch
from bench.run.rows import cell_columns

BATCH = 8
QUARTER_RESNEXT29 = {"preset": "resnext29_32x4d", "width_multiplier": 0.25, "stem_width": 16}
# (label, model fields, input size, batch)
CASES = [("resnet18", {"preset": "resnet18"}, 32, BATCH), ("resnet18", {"preset": "resnet18"}, 224, BATCH),
         ("resnext50_32x4d", {"preset": "resnext50_32x4d"}, 32, BATCH),
         ("resnext50_32x4d", {"preset": "resnext50_32x4d"}, 224, BATCH),
         ("resnext29_32x4d_w0.25", QUARTER_RESNEXT29, 32, 128)]


def harness_median(model, cell, batch: int) -> Tuple[float, float]:
    """The harness's median forward time (ms) and its loop's system-time share."""
    base = dict(cell_columns(cell), flops=0, input_size=cell.model.input_size)
    row = measure_batch(model, cell.settings, base, batch, torch.contiguous_format)
    return row["latency_ms_median"], row["latency_sys_share"] or 0.0


def timer_median(model, cell, threads: int, min_run_time: float, batch: int) -> Tuple[float, float]:
    """torch.utils.benchmark's median (ms), and the system share of the process over its loop."""
    x = torch.randn(batch, 3, cell.model.input_size, cell.model.input_size)
    timer = tbench.Timer(stmt="with torch.inference_mode(): model(x)", globals={"model": model, "x": x, "torch": torch},
                         num_threads=threads)
    before = os.times()
    median = timer.blocked_autorange(min_run_time=min_run_time).median * 1e3
    after = os.times()
    user, system = after.user - before.user, after.system - before.system
    return median, system / (user + system) if user + system > 0 else 0.0


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--max-time", type=float, default=1.5, help="time budget of each loop of each round, s")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per case")
    p.add_argument("--cpu-allocator", choices=allocator.ALLOCATORS, default=allocator.DEFAULT_ALLOCATOR,
                   help="heap allocator of this process (see README: the CPU allocator)")
    p.add_argument("--case", default=None, metavar="TEXT", help="only the cases whose model label contains TEXT")
    p.add_argument("--out", default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = allocator.ensure(args.cpu_allocator)

    lines = [f"selfcheck: harness vs torch.utils.benchmark, {args.threads} thread(s), {cpu_model()}, "
             f"torch {torch.__version__}, allocator {malloc}",
             f"{'model':22s} {'input':>5s} {'batch':>5s} {'harness ms':>11s} {'timer ms':>10s} {'ratio':>7s} "
             f"{'timer spread':>8s} {'harness sys':>11s} {'timer sys':>9s}  verdict"]
    failed = False
    for name, fields, size, batch in CASES:
        if args.case and args.case not in name:
            continue
        cell = expand_grid({"include": [{**fields, "input_size": size, "device": "cpu", "batch_sizes": [batch],
                                         "warmup": 3, "repeats": "auto", "max_time_s": args.max_time,
                                         "threads": args.threads, "train_step": False}]},
                           "selfcheck", cuda_available=False).cells[0]
        model = build_for_cell(cell).eval()
        hs, ts = [], []
        for round_ in range(args.rounds):
            if round_ % 2:
                ts.append(timer_median(model, cell, args.threads, args.max_time, batch))
                hs.append(harness_median(model, cell, batch))
            else:
                hs.append(harness_median(model, cell, batch))
                ts.append(timer_median(model, cell, args.threads, args.max_time, batch))
        harness, timer = statistics.median(h for h, _ in hs), statistics.median(t for t, _ in ts)
        harness_sys, timer_sys = statistics.median(s for _, s in hs), statistics.median(s for _, s in ts)
        ratio = harness / timer
        drift = (max(t for t, _ in ts) - min(t for t, _ in ts)) / timer
        ok = abs(ratio - 1) <= args.tolerance
        failed |= not ok
        lines.append(f"{name:22s} {size:5d} {batch:5d} {harness:11.3f} {timer:10.3f} {ratio:7.3f} {drift:8.1%} "
                     f"{harness_sys:11.2f} {timer_sys:9.2f}  {'ok' if ok else 'DISAGREE'}")
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
