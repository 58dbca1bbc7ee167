"""The 3x3 convolution alone, at the CPU study's shapes: GFLOP/s against channels per group d.

Why: the study's C=32 network spends a quarter of its inference time in grouped
3x3 convolutions that hold 5% of its MACs. This script measures the convolution
by itself, so the explanation rests on a measurement, not on a story. Sweeps
(quarter-width ResNeXt-29, cifar layout, 32x32 input: the stride-1 3x3 convs of
C=32 see 32 channels at 32x32, 64 at 16x16 and 128 at 8x8):

- ``channels``: total channels fixed at a stage's width (groups x d = channels),
  so MACs grow with d;
- ``macs``: MACs fixed at those of the dense 64-channel 8x8 conv (groups x d^2 =
  64^2), so channels grow as d shrinks.

Each shape is timed through the harness's own timer (``bench.measure.timing.timed_loop``,
perf_counter, blocks of calls when one call is shorter than ``--min-block-ms``)
in interleaved rounds: every round times every shape once, in alternating order,
so a drifting machine hits all shapes alike. A shape's time (``ms_best``, from
which GFLOP/s and the roof share are computed) is its quickest sample over all
rounds, because on a shared machine interference only ever adds time (on a
loaded 2-core machine torch's two threads wait for each other: a 0.6 ms call
read 60 ms); the median of all samples is kept beside it (``ms_median``), with
the spread of the rounds' medians (IQR / median) and the noisy flag. The roof is probed
before every round and after the last, and the best probe is kept, for the same
reason. Bytes moved are the profiler's analytic count (weights + input +
output, ``bench.measure.profile.layer_cost``) and the roof is its matmul-peak /
copy-bandwidth probe, so the roofline position matches the profile report's.

    python -m benchmarks.grouped_conv [--threads 2] [--batch-sizes 1 32] [--rounds 7] [--repeats 5]
        [--out results/studies/cpu-cardinality/grouped_conv.csv] [--report-only]

Writes the CSV (its first lines, starting with ``#``, name the command, the
machine and the probe) and a text summary beside it (``.txt``), whose last
line is :func:`bench.analysis.grouped_conv.sentence` of the CSV.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from bench.analysis.grouped_conv import COLUMNS, sentence, summary_lines
from bench.measure.profile import layer_cost, probe_device
from bench.measure.stats import NOISY_IQR_RATIO, relative_iqr
from bench.measure.timing import PerfCounterTimer, timed_loop
from bench.results.files import write_bytes_atomic
from bench.run.environment import cpu_model

D_VALUES = (1, 2, 4, 8, 16, 32, 64)
# (sweep, stage label, channels, spatial): the stride-1 grouped 3x3 convs of resnext29_32x4d_w0.25
CHANNEL_STAGES = (("channels", "layer2", 64, 16), ("channels", "layer3", 128, 8))
FIXED_MACS_CHANNELS = 64  # the macs sweep keeps groups x d^2 = 64^2: the MACs of a dense 64-channel conv
FIXED_MACS_SPATIAL = 8


def shapes() -> List[Tuple[str, str, int, int, int]]:
    """(sweep, stage, channels, spatial, d) for every shape measured."""
    out = [(sweep, stage, ch, hw, d) for sweep, stage, ch, hw in CHANNEL_STAGES for d in D_VALUES if d <= ch]
    out += [("macs", "layer3", FIXED_MACS_CHANNELS ** 2 // d, FIXED_MACS_SPATIAL, d) for d in D_VALUES]
    return out


def vector_lanes() -> Tuple[int, str]:
    """fp32 lanes of the widest vector unit /proc/cpuinfo lists (16 AVX-512, 8 AVX2, 4 SSE) and its name."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    for flag, lanes in (("avx512f", 16), ("avx2", 8), ("sse4_1", 4)):
        if flag in flags:
            return lanes, flag
    return 4, "unknown"


def torch_capability() -> str:
    """The ISA torch's ATen kernels dispatch to (ATEN_CPU_CAPABILITY can lower it), e.g. AVX512."""
    getter = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return getter() if getter else "unknown"


def make_shape(channels: int, spatial: int, d: int, batch: int):
    """A bias-free 3x3 conv with ``channels // d`` groups, its input, and its analytic cost."""
    conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels // d, bias=False).eval()
    x = torch.randn(batch, channels, spatial, spatial)
    with torch.inference_mode():
        out = conv(x)
    cost = layer_cost(conv, "layer", "conv 3x3", x, out)

    def call() -> None:
        with torch.inference_mode():
            conv(x)
    return call, cost.macs, cost.bytes


Key = Tuple[str, str, int, int, int, int]  # sweep, stage, channels, spatial, d, batch


def measure(batch_sizes: Sequence[int], rounds: int, repeats: int, min_block_ms: float, warmup: int,
            probes: List[Tuple[float, float]]) -> Dict[Key, Tuple[List[List[float]], int, int]]:
    """Samples per round (ms per call), MACs and bytes of every shape x batch, timed in interleaved rounds;
    a roof probe before each round is appended to ``probes``."""
    work = {}
    for sweep, stage, ch, hw, d in shapes():
        for batch in batch_sizes:
            work[(sweep, stage, ch, hw, d, batch)] = make_shape(ch, hw, d, batch)
    times: Dict[Key, List[List[float]]] = {key: [] for key in work}
    keys = list(work)
    timer = PerfCounterTimer()
    for index in range(rounds):
        probes.append(probe_device("cpu", "fp32"))
        for key in keys if index % 2 == 0 else reversed(keys):
            loop = timed_loop(work[key][0], timer, warmup=warmup, repeats=repeats, min_block_ms=min_block_ms)
            times[key].append(loop.samples)
        print(f"round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return {key: (times[key], work[key][1], work[key][2]) for key in keys}


def rows(measured: Dict[Key, Tuple[List[List[float]], int, int]], peak: float, bandwidth: float, lanes: int,
         isa: str, capability: str, threads: int) -> List[Dict[str, object]]:
    """One CSV row per shape x batch."""
    out = []
    for (sweep, stage, ch, hw, d, batch), (per_round, macs, nbytes) in measured.items():
        samples = [x for one in per_round for x in one]
        round_ms = [statistics.median(one) for one in per_round]
        ms, best = statistics.median(samples), min(samples)
        intensity = macs * batch / nbytes
        gflop_s = 2 * macs * batch / (best / 1e3) / 1e9
        roof = min(peak, 2 * intensity * bandwidth)
        out.append({"sweep": sweep, "stage": stage, "channels": ch, "spatial": hw, "groups": ch // d, "d": d,
                    "batch_size": batch, "threads": threads, "macs": macs, "bytes": nbytes,
                    "arithmetic_intensity": round(intensity, 4), "ms_best": round(best, 5), "ms_median": round(ms, 5),
                    "round_spread": round(relative_iqr(round_ms), 4),
                    "noisy": int(relative_iqr(round_ms) > NOISY_IQR_RATIO), "rounds": len(round_ms),
                    "gflop_s": round(gflop_s, 3), "peak_gflop_s": round(peak, 2),
                    "bandwidth_gb_s": round(bandwidth, 2), "ridge_macs_per_byte": round(peak / (2 * bandwidth), 4),
                    "roof_gflop_s": round(roof, 2), "roof_share": round(gflop_s / roof, 4),
                    "vector_lanes_fp32": lanes, "vector_isa": isa, "torch_cpu_capability": capability})
    return out


def to_csv(header: Sequence[str], table: List[Dict[str, object]]) -> str:
    buf = io.StringIO()
    for line in header:
        buf.write(f"# {line}\n")
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buf.getvalue()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (each times every shape once)")
    p.add_argument("--repeats", type=int, default=5, help="timed samples of a shape per round")
    p.add_argument("--min-block-ms", type=float, default=2.0, help="calls shorter than this are timed in blocks")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="results/studies/cpu-cardinality/grouped_conv.csv")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the .txt from an existing --out CSV; time nothing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.grouped_conv " + " ".join(argv if argv is not None else sys.argv[1:])
    lanes, isa = vector_lanes()
    capability = torch_capability()
    if args.report_only:
        return write_summary(args.out, read_header(args.out))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    probes: List[Tuple[float, float]] = []
    measured = measure(args.batch_sizes, args.rounds, args.repeats, args.min_block_ms, args.warmup, probes)
    probes.append(probe_device("cpu", "fp32"))
    # the roof is the best the machine showed: a probe slowed by a busy moment would flatter every shape
    peak, bandwidth = max(p[0] for p in probes), max(p[1] for p in probes)
    table = rows(measured, peak, bandwidth, lanes, isa, capability, args.threads)
    header = [f"command: {command.strip()}",
              f"{started}; {cpu_model()}; torch {torch.__version__}; fp32, {args.threads} thread(s); "
              f"widest vector unit {isa} ({lanes} fp32 lanes); torch CPU capability {capability}; "
              f"roof: {peak:.1f} GFLOP/s matmul peak, {bandwidth:.1f} GB/s copy (bench.measure.profile.probe_device, "
              f"best of {len(probes)} probes, one before each round and one after)"]
    write_bytes_atomic(args.out, to_csv(header, table).encode())
    return write_summary(args.out, header)


def read_header(path: str) -> List[str]:
    """The ``# `` lines a CSV of this script starts with."""
    with open(path) as f:
        return [line[2:].rstrip("\n") for line in f if line.startswith("# ")]


def write_summary(path: str, header: List[str]) -> int:
    """The text summary beside the CSV: its header lines, the tables and the sentence, all from the CSV."""
    summary = "\n".join(header + [""] + summary_lines(path) + ["", sentence(path)]) + "\n"
    write_bytes_atomic(os.path.splitext(path)[0] + ".txt", summary.encode())
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
