"""CPU allocator table: ``cpu_allocator: system`` vs ``tuned`` on quarter-width ResNeXt-29 at batch 128.

The three variants of issue 17 (``preset: resnext29_32x4d, width_multiplier:
0.25, stem_width: 16`` with C x d = 1x64, 4x24, 32x4, about 48 MMACs each) are
timed through the real cell path (``measure_cell``, inference only) at batch
128. The allocator is a property of a process, so every measurement runs in a
fresh Python process started with its setting's environment; the settings
alternate over ``--rounds`` rounds so a drifting machine hits both alike.
Prints a Markdown table (median of the rounds' medians, and the median system
share of the timed loop) for the README.

    python -m benchmarks.allocator_table [--threads 2] [--rounds 3] [--max-time 3] [--out results/allocator-cpu.md]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from bench.measure import allocator

VARIANTS: List[Tuple[int, int]] = [(1, 64), (4, 24), (32, 4)]
BATCH = 128
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cell_entry(cardinality: int, width: int, setting: str, threads: int, max_time_s: float) -> Dict[str, object]:
    return {"preset": "resnext29_32x4d", "width_multiplier": 0.25, "stem_width": 16, "cardinality": cardinality,
            "bottleneck_width": width, "device": "cpu", "batch_sizes": [BATCH], "threads": threads,
            "warmup": 3, "repeats": "auto", "max_time_s": max_time_s, "train_step": False,
            "cpu_allocator": setting}


def child(entry_json: str) -> int:
    """In a fresh process: measure one cell, print its median, system share, allocator and variant as JSON."""
    from bench.grid import expand_grid
    from bench.run.cell import measure_cell

    cell = expand_grid({"include": [json.loads(entry_json)]}, "allocator_table", cuda_available=False).cells[0]
    row = measure_cell(cell)[0]
    print(json.dumps({"ms": row["latency_ms_median"], "sys": row["latency_sys_share"], "malloc": row["cpu_malloc"],
                      "variant": row["variant"], "macs": row["macs"]}))
    return 0


def run_child(module: str, payload: object, setting: str) -> Dict[str, object]:
    """Run ``python -m module --child PAYLOAD`` in a fresh process set up for allocator ``setting``.

    The allocator is a property of the process, so each measurement needs its own; the child prints one JSON
    line, its result, last on stdout."""
    env = allocator.child_env(setting)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = subprocess.run([sys.executable, "-m", module, "--child", json.dumps(payload)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        name = module.rsplit(".", 1)[-1]
        raise SystemExit(f"{name}: child failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return json.loads(lines[-1])


def measure_in_fresh_process(entry: Dict[str, object]) -> Dict[str, object]:
    return run_child("benchmarks.allocator_table", entry, str(entry["cpu_allocator"]))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per variant and setting")
    p.add_argument("--max-time", type=float, default=3.0, help="time budget of each timed loop, s")
    p.add_argument("--out", default=None, help="also write the table to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child)

    lines = [f"batch {BATCH}, {args.threads} threads, {args.rounds} fresh processes per entry "
             f"(median of their medians; sys = system / (user + system) CPU time of the timed loop)", "",
             "| variant | C x d | MMACs | system ms | system sys | tuned ms | tuned sys | system / tuned |",
             "|---|---|---|---|---|---|---|---|"]
    for cardinality, width in VARIANTS:
        results: Dict[str, List[Dict[str, object]]] = {"system": [], "tuned": []}
        for round_ in range(args.rounds):
            order = ("system", "tuned") if round_ % 2 == 0 else ("tuned", "system")
            for setting in order:
                entry = cell_entry(cardinality, width, setting, args.threads, args.max_time)
                results[setting].append(measure_in_fresh_process(entry))
        ms = {s: statistics.median(float(r["ms"]) for r in rs) for s, rs in results.items()}
        sys_share = {s: statistics.median(float(r["sys"] or 0.0) for r in rs) for s, rs in results.items()}
        first = results["tuned"][0]
        lines.append(f"| {first['variant']} (tuned: {first['malloc']}) | {cardinality}x{width} | "
                     f"{float(first['macs']) / 1e6:.1f} | {ms['system']:.1f} | {sys_share['system']:.2f} | "
                     f"{ms['tuned']:.1f} | {sys_share['tuned']:.2f} | {ms['system'] / ms['tuned']:.2f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
