"""One rule set for every column of a result CSV, shared by every reader.

``report``, ``compare``, ``baseline`` and ``merge`` all read result files
through :func:`read_table` or :func:`check_lines`, so a value is accepted or
refused the same way everywhere: ``top1_acc`` 7.0, ``params`` -5, ``abc`` in a
number column, a literal ``nan`` or ``inf`` (the writer leaves a missing value
empty, never ``nan``), or two rows of one configuration are each a one-line
:class:`UserError` naming the file, the line and the column. The rules sit
beside the column docs in :mod:`bench.results.schema`; a test checks that
every column has one.

A last line without its newline is a write cut short (or a hand edit): it is
left out and the reader gets a note saying so, as ``merge`` and the runner's
resume do.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench.errors import UserError
from bench.results.files import CsvLines, Line, read_lines
from bench.results.schema import FAILED_STATUSES, STATUS_OK


@dataclass(frozen=True)
class Rule:
    """What one column may hold. Empty is always allowed (a metric that does not apply)."""

    kind: str  # number, int, bool, samples (';'-separated numbers), ints (';'-separated ints), choice, text
    lo: Optional[float] = None
    hi: Optional[float] = None
    above: bool = False  # lo itself is excluded (> lo rather than >= lo)
    choices: Tuple[str, ...] = ()

    def expected(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        what = {"number": "a finite number", "int": "a whole number", "samples": "';'-separated finite numbers",
                "ints": "';'-separated whole numbers"}.get(self.kind, "text")
        bounds = []
        if self.lo is not None:
            bounds.append(f"{'>' if self.above else '>='} {self.lo:g}")
        if self.hi is not None:
            bounds.append(f"<= {self.hi:g}")
        return what + (" " + " and ".join(bounds) if bounds else "")

    def check(self, text: str) -> None:
        """Raise ValueError when ``text`` (not empty) breaks the rule."""
        if self.kind == "text":
            return
        if self.kind == "choice":
            if text.strip().lower() not in self.choices:
                raise ValueError
            return
        if self.kind == "bool":
            if text.strip().lower() not in ("true", "false"):
                raise ValueError
            return
        parts = text.split(";") if self.kind in ("samples", "ints") else [text]
        for part in parts:
            self._check_number(part.strip())

    def _check_number(self, text: str) -> None:
        value = float(text)  # ValueError for 'abc' and ''
        if not math.isfinite(value):
            raise ValueError
        if self.kind in ("int", "ints") and value != int(value):
            raise ValueError
        if self.lo is not None and (value <= self.lo if self.above else value < self.lo):
            raise ValueError
        if self.hi is not None and value > self.hi:
            raise ValueError


_TEXT = Rule("text")
_BOOL = Rule("bool")
_COUNT = Rule("int", 1)  # a count of things that exist: at least one
_POSITIVE = Rule("number", 0, above=True)
_NON_NEGATIVE = Rule("number", 0)
_FRACTION = Rule("number", 0, 1)
_TIMES = Rule("samples", 0, above=True)

RULES: Dict[str, Rule] = {
    # identity, model and settings
    "run_id": _TEXT, "cell_id": _TEXT, "variant_id": _TEXT, "variant": _TEXT, "preset": _TEXT, "family": _TEXT,
    "block": Rule("choice", choices=("basic", "bottleneck")), "depth": _COUNT, "blocks": _TEXT,
    "cardinality": _COUNT, "bottleneck_width": _COUNT, "width_multiplier": _POSITIVE, "stem": _TEXT,
    "layout": _TEXT, "num_classes": _COUNT, "input_size": _COUNT, "pretrained": _TEXT,
    "device": Rule("choice", choices=("cpu", "cuda")), "device_name": _TEXT,
    "precision": Rule("choice", choices=("fp32", "bf16", "fp16")), "tf32": _BOOL,
    "memory_format": Rule("choice", choices=("contiguous", "channels_last")), "compile": _BOOL,
    "threads": _COUNT, "cpu_malloc": _TEXT, "batch_size": _COUNT, "requested_batch_size": _COUNT,
    "status": Rule("choice", choices=(STATUS_OK,) + tuple(FAILED_STATUSES)), "error": _TEXT,
    # complexity and architecture
    "params": _COUNT, "macs": _COUNT, "flops": _COUNT, "activations": _COUNT,
    "counters": Rule("choice", choices=("analytic+fvcore", "analytic+flop_counter")),
    "stage_channels": _TEXT, "stage_strides": _TEXT, "feature_dim": _COUNT, "groups": _COUNT,
    # inference and training-step speed
    "latency_ms_median": _POSITIVE, "latency_ms_p90": _POSITIVE, "latency_ms_iqr": _NON_NEGATIVE,
    "latency_cv": _NON_NEGATIVE, "latency_noisy": _BOOL, "latency_n": _COUNT, "latency_samples_ms": _TIMES,
    "latency_sys_share": _FRACTION, "latency_others_share": _FRACTION,
    "latency_ms_per_image": _POSITIVE, "throughput_img_s": _POSITIVE, "achieved_gflop_s": _POSITIVE,
    "compile_time_s": _NON_NEGATIVE,
    "train_step_ms_median": _POSITIVE, "train_step_ms_p90": _POSITIVE, "train_step_ms_iqr": _NON_NEGATIVE,
    "train_step_cv": _NON_NEGATIVE, "train_step_noisy": _BOOL, "train_step_n": _COUNT,
    "train_step_samples_ms": _TIMES, "train_step_sys_share": _FRACTION, "train_step_others_share": _FRACTION,
    "train_throughput_img_s": _POSITIVE, "train_achieved_gflop_s": _POSITIVE,
    # memory (CPU figures are growths of the resident set, so 0 is possible)
    "peak_mem_mb": _NON_NEGATIVE, "gpu_peak_alloc_mb": _NON_NEGATIVE, "gpu_peak_reserved_mb": _NON_NEGATIVE,
    "gpu_nvml_used_mb": _NON_NEGATIVE, "train_peak_mem_mb": _NON_NEGATIVE,
    "train_gpu_peak_alloc_mb": _NON_NEGATIVE, "train_gpu_peak_reserved_mb": _NON_NEGATIVE,
    "train_gpu_nvml_used_mb": _NON_NEGATIVE, "cpu_peak_rss_mb": _NON_NEGATIVE,
    # accuracy
    "dataset": _TEXT, "epochs": _COUNT, "optimizer": _TEXT, "lr": _POSITIVE, "train_batch_size": _COUNT,
    "train_precision": Rule("choice", choices=("fp32", "bf16", "fp16")),
    "resize": _COUNT, "n_seeds": _COUNT, "seeds": Rule("ints", 0), "top1_acc": _FRACTION,
    "top1_acc_std": _FRACTION, "top1_acc_seeds": Rule("samples", 0, 1), "test_images": _COUNT,
    "top1_correct_seeds": Rule("ints", 0), "val_acc": _FRACTION, "train_time_s": _NON_NEGATIVE,
    "train_img_s": _POSITIVE, "target_acc": _FRACTION, "time_to_target_s": _NON_NEGATIVE,
}
NUMBER_KINDS = ("number", "int")


def rule(column: str) -> Rule:
    """The column's rule; a column this version does not know (a newer file's) is read as text."""
    return RULES.get(column, _TEXT)


@dataclass
class Table:
    """A result CSV read and checked: a pandas frame (numbers as floats, NaN when empty) and notes."""

    path: str
    frame: Any  # pandas.DataFrame; typed loosely so this module imports pandas only when reading
    line_numbers: List[int] = field(default_factory=list)  # each frame row's line in the file (header = 1)
    notes: List[str] = field(default_factory=list)  # things a reader should say (a cut last line)


def check_lines(path: str, header: Sequence[str], lines: Sequence[Line]) -> None:
    """Every value of ``lines`` against its column's rule, then no configuration twice; :class:`UserError`."""
    rules = [rule(name) for name in header]
    for line in lines:
        for name, r, text in zip(header, rules, line.fields):
            if text == "":
                continue
            try:
                r.check(text)
            except ValueError:
                raise UserError(f"{path}: line {line.number}, column {name}: expected {r.expected()}, "
                                f"got {text[:40]!r}") from None
    _check_no_duplicates(path, header, lines)


def _check_no_duplicates(path: str, header: Sequence[str], lines: Sequence[Line]) -> None:
    """One run measures a configuration once: the same run, cell and batch twice is a copied row."""
    cols = {name: i for i, name in enumerate(header)}
    seen: Dict[Tuple[str, ...], int] = {}
    for line in lines:
        batch = line.get(cols, "requested_batch_size") or line.get(cols, "batch_size")
        key = (line.get(cols, "run_id"), line.get(cols, "cell_id"), _number_text(batch))
        if key in seen:
            raise UserError(f"{path}: lines {seen[key]} and {line.number} are the same row (run {key[0] or '-'}, "
                            f"cell {key[1]}, batch {key[2] or '-'}); remove the copy")
        seen[key] = line.number


def _number_text(text: str) -> str:
    try:
        value = float(text)
        return str(int(value)) if value == int(value) else str(value)
    except ValueError:
        return text


def tail_note(parsed: CsvLines) -> str:
    """'' for a file ending in a newline, else what was left out and why."""
    tail = parsed.partial_tail
    if not tail:
        return ""
    fields = len(next(csv.reader([tail.decode("utf-8", errors="replace")]), []))
    if fields >= len(parsed.header):
        return ("the last line has no newline (a write cut short, or an edit): left out; "
                "add the newline if the line is whole")
    return (f"the last line is cut ({fields} of {len(parsed.header)} fields; a run was killed mid-write): "
            f"left out; resuming that run repairs the file")


def read_table(csv_path: str, required: Sequence[str] = ("cell_id", "status")) -> Table:
    """Read, check and type a result CSV; :class:`UserError` for a missing, malformed or out-of-range file."""
    import pandas as pd

    if os.path.isdir(csv_path):
        raise UserError(f"{csv_path}: is a directory; expected a result CSV")
    if not os.path.exists(csv_path):
        raise UserError(f"{csv_path}: no such results file")
    parsed = read_lines(csv_path, required=required)
    if parsed is None or not parsed.header:
        raise UserError(f"{csv_path}: empty results file")
    check_lines(csv_path, parsed.header, parsed.lines)
    records = [[text if text != "" else None for text in line.fields] for line in parsed.lines]
    frame = pd.DataFrame(records, columns=parsed.header, dtype=object)
    for name in parsed.header:
        if rule(name).kind in NUMBER_KINDS:
            frame[name] = pd.to_numeric(frame[name]).astype(float)
    note = tail_note(parsed)
    return Table(csv_path, frame, [line.number for line in parsed.lines], [f"{csv_path}: {note}"] if note else [])
