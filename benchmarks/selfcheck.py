"""Check the harness's latency against an independent timer, torch.utils.benchmark.

For resnet18 and resnext50_32x4d at batch 8, 32x32 and 224x224 input, and a
quarter-width ResNeXt-29 (32x4d) at batch 128, whose activations reach 32 MiB
(glibc's largest dynamic mmap threshold), on the same thread count, the
harness's forward latency (through the real cell-measurement path) must agree
with ``Timer.blocked_autorange()``'s.

Like with like: ``blocked_autorange`` times blocks of k calls (k a power of
ten it picks) and reports each block's mean; the harness times single calls.
On a skewed distribution (a loaded machine) the median of block means and the
median of single calls part, so the harness's samples are grouped into
consecutive blocks of the same k and both sides give the *median of k-call
means* (k = 1: the median per-call time). The two timers run in alternating
rounds (the order flips each round); the per-round ratio harness / timer
cancels what the rounds share, and its median carries a sign-test interval
(``bench.measure.paired.median_interval``). A pair agrees when the median
ratio is within ``--tolerance`` (5%) of 1, plus an allowance for the measured
spread: the interval's half-width, capped at ``--max-allowance`` (3%) so that
a real 10% disagreement always fails. ``--inject-slowdown 0.10`` makes the
harness's model sleep 10% of each forward pass: the check must then fail.

Agreement alone proves little where both timers share an artifact: under
glibc's default allocator both spend much of a batch-128 loop re-faulting
mmapped buffers. So the system-time share of both timers' loops is printed
too (``harness sys``, ``timer sys``), and the allocator in effect is named
(``--cpu-allocator``, default tuned, as in a grid run).

    python -m benchmarks.selfcheck [--threads 2] [--tolerance 0.05] [--max-allowance 0.03] [--rounds 6]
        [--cpu-allocator tuned|system] [--inject-slowdown 0.10] [--case TEXT] [--input-size 32|224]
        [--out results/selfcheck-cpu.txt]

Exit code 0 when every pair agrees, 1 otherwise; a pair whose ratio interval is
wider than +-25% (a machine too loaded to tell) reads INCONCLUSIVE.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils import benchmark as tbench

from bench.grid import expand_grid
from bench.measure import allocator
from bench.measure.paired import median_interval
from bench.results.samples import parse_samples
from bench.run.cell import build_for_cell, measure_batch
from bench.run.environment import cpu_model
from bench.run.rows import cell_columns

BATCH = 8
QUARTER_RESNEXT29 = {"preset": "resnext29_32x4d", "width_multiplier": 0.25, "stem_width": 16}
# (label, model fields, input size, batch)
CASES = [("resnet18", {"preset": "resnet18"}, 32, BATCH), ("resnet18", {"preset": "resnet18"}, 224, BATCH),
         ("resnext50_32x4d", {"preset": "resnext50_32x4d"}, 32, BATCH),
         ("resnext50_32x4d", {"preset": "resnext50_32x4d"}, 224, BATCH),
         ("resnext29_32x4d_w0.25", QUARTER_RESNEXT29, 32, 128)]
CONFIDENCE = 0.95
# A ratio whose interval is wider than +-25% was measured on a machine too loaded to tell agreement from
# disagreement (two threads on two busy cores: a 12 ms forward pass read 0.3-1.1 s): inconclusive, not a verdict.
INCONCLUSIVE_HALF_WIDTH = 0.25


# ------------------------------------------------------------------ the comparison (pure, unit-tested)
def block_means(samples: Sequence[float], k: int) -> List[float]:
    """Means of consecutive blocks of ``k`` samples (a last, partial block is dropped; fewer than k samples:
    their mean); k = 1: the samples."""
    if k < 1:
        raise ValueError(f"block size must be >= 1, got {k}")
    means = [statistics.fmean(samples[i:i + k]) for i in range(0, len(samples) - k + 1, k)]
    return means or [statistics.fmean(samples)]


@dataclass(frozen=True)
class Verdict:
    ratio: float  # median over rounds of harness / timer
    interval: Optional[Tuple[float, float]]  # sign-test interval of that median
    allowance: float  # the spread allowed on top of the tolerance
    ok: bool
    conclusive: bool = True  # False: the rounds spread too widely to tell (the machine was too loaded)

    @property
    def label(self) -> str:
        return "ok" if self.ok else ("DISAGREE" if self.conclusive else "INCONCLUSIVE (spread; re-run quieter)")


def compare(harness: Sequence[float], timer: Sequence[float], tolerance: float, max_allowance: float,
            confidence: float = CONFIDENCE) -> Verdict:
    """Per-round statistics of the two timers (the same statistic) -> agree within tolerance + allowance?

    The allowance is the half-width of the ratio's interval, capped at ``max_allowance``; with too few
    rounds for an interval it is ``max_allowance``. An interval wider than +-25% is inconclusive (not ok,
    but not a disagreement either).
    """
    ratios = [h / t for h, t in zip(harness, timer)]
    ratio = statistics.median(ratios)
    interval = median_interval(ratios, confidence)
    half = None if interval is None else (interval[1] - interval[0]) / 2
    allowance = max_allowance if half is None else min(max_allowance, half)
    conclusive = half is None or half <= INCONCLUSIVE_HALF_WIDTH
    return Verdict(ratio, interval, allowance, conclusive and abs(ratio - 1) <= tolerance + allowance, conclusive)


# ------------------------------------------------------------------ the two timers
class Slowed(nn.Module):
    """A model whose forward pass sleeps ``fraction`` of its own duration after it: an injected slowdown."""

    def __init__(self, inner: nn.Module, fraction: float) -> None:
        super().__init__()
        self.inner, self.fraction = inner, fraction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.inner(x)
        time.sleep((time.perf_counter() - start) * self.fraction)
        return out


def harness_samples(model, cell, batch: int) -> Tuple[List[float], float]:
    """The harness's per-call forward times (ms) through the real cell path, and its loop's system share."""
    base = dict(cell_columns(cell), flops=0, input_size=cell.model.input_size)
    row = measure_batch(model, cell.settings, base, batch, torch.contiguous_format)
    return parse_samples(row["latency_samples_ms"]), row["latency_sys_share"] or 0.0


def timer_samples(model, cell, threads: int, min_run_time: float, batch: int) -> Tuple[List[float], int, float]:
    """torch.utils.benchmark's block means (ms per call), its block size, and the process's system share."""
    x = torch.randn(batch, 3, cell.model.input_size, cell.model.input_size)
    timer = tbench.Timer(stmt="with torch.inference_mode(): model(x)", globals={"model": model, "x": x, "torch": torch},
                         num_threads=threads)
    before = os.times()
    m = timer.blocked_autorange(min_run_time=min_run_time)
    after = os.times()
    user, system = after.user - before.user, after.system - before.system
    return [t * 1e3 for t in m.times], int(m.number_per_run), system / (user + system) if user + system > 0 else 0.0


def alternate(timed: nn.Module, model: nn.Module, cell, batch: int, threads: int, max_time: float, rounds: int):
    """Both timers in alternating rounds (harness first on even rounds): per round the harness's samples and
    system share, the timer's median block mean, block size and system share."""
    hs, h_sys, ts, ks, t_sys = [], [], [], [], []
    for round_ in range(rounds):
        for side in (("timer", "harness") if round_ % 2 else ("harness", "timer")):
            if side == "harness":
                samples, share = harness_samples(timed, cell, batch)
                hs.append(samples)
                h_sys.append(share)
            else:
                samples, k, share = timer_samples(model, cell, threads, max_time, batch)
                ts.append(statistics.median(samples))
                ks.append(k)
                t_sys.append(share)
    return hs, h_sys, ts, ks, t_sys


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--max-allowance", type=float, default=0.03, help="cap of the spread allowance on top")
    p.add_argument("--max-time", type=float, default=1.5, help="time budget of each loop of each round, s")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds per case (>= 6 for a 95%% interval)")
    p.add_argument("--inject-slowdown", type=float, default=0.0, metavar="FRACTION",
                   help="make the harness's model sleep this fraction of each forward pass (the check must fail)")
    p.add_argument("--cpu-allocator", choices=allocator.ALLOCATORS, default=allocator.DEFAULT_ALLOCATOR,
                   help="heap allocator of this process (see README: the CPU allocator)")
    p.add_argument("--case", default=None, metavar="TEXT", help="only the cases whose model label contains TEXT")
    p.add_argument("--input-size", type=int, default=None, help="only the cases at this input size (32 or 224)")
    p.add_argument("--out", default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = allocator.ensure(args.cpu_allocator)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"selfcheck: harness vs torch.utils.benchmark, median of k-call means on both sides, {args.threads} "
             f"thread(s), {cpu_model()}, torch {torch.__version__}, allocator {malloc}, load average {load:.1f} at "
             f"start" + (f", INJECTED harness slowdown {args.inject_slowdown:.0%}" if args.inject_slowdown else ""),
             f"{'model':22s} {'input':>5s} {'batch':>5s} {'k':>3s} {'harness ms':>11s} {'timer ms':>10s} "
             f"{'ratio':>6s} {'95% CI':>13s} {'allowed':>7s} {'timer spread':>12s} {'harness sys':>11s} "
             f"{'timer sys':>9s}  verdict"]
    print("\n".join(lines), flush=True)
    failed = False
    for name, fields, size, batch in CASES:
        if (args.case and args.case not in name) or (args.input_size and args.input_size != size):
            continue
        cell = expand_grid({"include": [{**fields, "input_size": size, "device": "cpu", "batch_sizes": [batch],
                                         "warmup": 3, "repeats": "auto", "max_time_s": args.max_time,
                                         "threads": args.threads, "train_step": False}]},
                           "selfcheck", cuda_available=False).cells[0]
        model = build_for_cell(cell).eval()
        timed = Slowed(model, args.inject_slowdown).eval() if args.inject_slowdown else model
        hs, h_sys, ts, ks, t_sys = alternate(timed, model, cell, batch, args.threads, args.max_time, args.rounds)
        # each round's harness samples grouped into the block size the timer chose that round
        h_stat = [statistics.median(block_means(samples, k)) for samples, k in zip(hs, ks)]
        verdict = compare(h_stat, ts, args.tolerance, args.max_allowance)
        failed |= not verdict.ok
        ci = f"{verdict.interval[0]:.3f}-{verdict.interval[1]:.3f}" if verdict.interval else "too few"
        k_text = str(ks[0]) if len(set(ks)) == 1 else "mix"
        spread = (max(ts) - min(ts)) / statistics.median(ts)
        lines.append(f"{name:22s} {size:5d} {batch:5d} {k_text:>3s} {statistics.median(h_stat):11.3f} "
                     f"{statistics.median(ts):10.3f} {verdict.ratio:6.3f} {ci:>13s} {verdict.allowance:7.1%} "
                     f"{spread:12.1%} {statistics.median(h_sys):11.2f} {statistics.median(t_sys):9.2f}  "
                     f"{verdict.label}")
        print(lines[-1], flush=True)
    lines.append(f"all agree within {args.tolerance:.0%} + the spread allowance" if not failed
                 else "some pairs disagree or could not be told apart from noise")
    print(lines[-1])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
