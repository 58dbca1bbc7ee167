"""The profile CSV's columns: where the time of one cell goes, by stage and operator class.

A second file format beside the result CSV (``RUN.profile.csv`` next to
``RUN.csv``, or the ``--out`` of ``benchmark.py profile``). Tidy long format:
one row per cell x batch size x phase x stage x operator class. The README's
profile column table is generated from :data:`PROFILE_COLUMNS`
(``python -m bench.results.profile_schema``).

Convention as in the result CSV: one multiply-add = 1 MAC; GFLOP/s count
2 FLOPs per MAC.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

PROFILE_SCHEMA_VERSION = 1

# Operator classes, in report order. Every profiled op lands in exactly one.
OP_CLASSES: Tuple[str, ...] = ("conv 1x1", "dense conv 3x3", "grouped conv 3x3", "conv 7x7 stem", "batch norm",
                               "ReLU", "residual add", "pooling", "linear", "other")
# Phases: inference (eval, no grad) and the three parts of one training step.
PHASES: Tuple[str, ...] = ("inference", "train_forward", "train_backward", "train_optimizer")
# Stages: torchvision's module names; "other" holds what runs outside every
# stage (input cast, loss, gradient accumulation, optimizer).
STAGES: Tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4", "head", "other")

_PROFILE_COLUMN_DOCS: List[Tuple[str, str]] = [
    # identity
    ("run_id", "id of the run that wrote the row (empty for `benchmark.py profile`)"),
    ("cell_id", "the cell's id, as in the result CSV"),
    ("variant_id", "the architecture's id, as in the result CSV"),
    ("variant", "readable model name"),
    ("cardinality", "groups of the 3x3 conv"),
    ("device", "cpu or cuda"),
    ("device_name", "CPU model or GPU name"),
    ("precision", "fp32, bf16 or fp16 (autocast)"),
    ("memory_format", "contiguous or channels_last"),
    ("threads", "torch intra-op threads (CPU)"),
    ("batch_size", "images per pass"),
    # what the row covers
    ("phase", "inference, train_forward, train_backward or train_optimizer (zero_grad + SGD step)"),
    ("stage", "stem, layer1..layer4, head, or other (outside every stage: loss, gradient accumulation, optimizer)"),
    ("op_class", "conv 1x1, dense conv 3x3, grouped conv 3x3, conv 7x7 stem, batch norm, ReLU, residual add, "
     "pooling, linear, other"),
    ("time_source", "cpu_op (self CPU time of operators) or cuda_kernel (CUDA kernel time)"),
    # time
    ("ms", "time per iteration in this phase x stage x class, ms (median over the profiled iterations)"),
    ("share", "ms / the phase's profiled total (all stages and classes), fraction 0-1"),
    ("calls", "operator calls per iteration attributed to the row (median over the profiled iterations)"),
    # work
    ("macs", "multiply-accumulates per image (analytic, same convention as the result CSV's macs); "
     "train_backward: forward MACs x gradients computed (input and/or weight)"),
    ("mac_share", "macs / the phase's total macs, fraction 0-1"),
    ("bytes", "bytes moved per batch (analytic: weights + input + output activations at the dtypes the layers "
     "saw; backward: gradients and saved tensors read and written)"),
    ("arithmetic_intensity", "macs x batch_size / bytes, MACs per byte"),
    ("achieved_gflop_s", "2 x macs x batch_size / ms, GFLOP/s (empty where macs = 0)"),
    # honesty
    ("profiled_ms_total", "the phase group's profiled total per iteration (sum of its rows' ms): inference, or the "
     "three train phases together, ms"),
    ("measured_ms_median", "the harness's timed median at this batch size (latency_ms_median or "
     "train_step_ms_median), ms"),
    ("unprofiled_ms_median", "wall time of the same iteration unprofiled, timed just before and after the profile "
     "(tells a machine that changed speed since the timed loop from time the profile misses), ms"),
    ("agreement", "profiled_ms_total / measured_ms_median"),
    ("agreement_note", "empty when agreement is within 15%; else by how much and the likely reason"),
    ("profiler_overhead", "wall time of a profiled iteration / an unprofiled one - 1 (measured side by side)"),
    ("profiled_iterations", "iterations profiled (after the timed loop, never inside it)"),
    ("peak_gflop_s", "device peak from a short matmul probe at this precision, GFLOP/s"),
    ("bandwidth_gb_s", "device memory bandwidth from a short copy probe (bytes read + written), GB/s"),
]

PROFILE_COLUMNS: List[str] = [name for name, _ in _PROFILE_COLUMN_DOCS]
PROFILE_COLUMN_DOCS: Dict[str, str] = dict(_PROFILE_COLUMN_DOCS)
# Profiled and measured totals may differ by this fraction before a row says why.
AGREEMENT_TOLERANCE = 0.15
# The key under which a result row carries its profile rows from the cell to the runner.
PROFILE_ROWS_KEY = "_profile_rows"


def profile_path(csv_path: str) -> str:
    """``RUN.profile.csv`` beside ``RUN.csv``."""
    root = csv_path[:-4] if csv_path.endswith(".csv") else csv_path
    return root + ".profile.csv"


def pop_profile_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Take the profile rows off a cell's result rows (they go to their own file)."""
    return [p for row in rows for p in (row.pop(PROFILE_ROWS_KEY, None) or [])]


def markdown_table() -> str:
    lines = ["| column | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {doc} |" for name, doc in _PROFILE_COLUMN_DOCS]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(markdown_table())
